"""Unsloth smoke run, for a CUDA machine (benchmarks/gpu_check.sh runs it; Unsloth needs an accelerator).

What it checks, in this order, and writes to $OUT/unsloth_smoke.json:
  1. `import unsloth` works here (else: "skipped", with the reason; exit 0: a missing wheel is not a failure
     of qtuning, and the json says so);
  2. a model loaded by Unsloth's FastLanguageModel (SmolLM2-135M's shape, random weights: the device machine
     has no weights) with UNSLOTH_RETURN_LOGITS unset: qtuning either runs (Unsloth gave logits) or stops
     with qtuning's one-line ModelSpecError naming UNSLOTH_RETURN_LOGITS; any other exception is a failure;
  3. with UNSLOTH_RETURN_LOGITS=1: QTuningSFTTrainer (imported after unsloth) trains 4 steps of 16 Alpaca demo
     rows at 25% x 50% with Unsloth's LoRA; the plan log shows 4 of 16 kept at every step.

    python benchmarks/unsloth_smoke.py            # needs unsloth + unsloth_zoo installed, and a GPU

Not yet run: no GPU has been lent to this project's sessions when it was written (2026-12-06).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

OUT = Path(os.environ.get("OUT", "/tmp/gpu-check"))
STEPS, BATCH, SAMPLE_RATIO, TOKEN_RATIO = 4, 16, 0.25, 0.5


def write(result: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "unsloth_smoke.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def random_model_folder(tmp: Path) -> Path:
    """SmolLM2-135M's config and tokenizer (the qtuning cache), random weights, saved as an HF folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from qtuning.data.models import resolve_model

    source = resolve_model("smollm2-135m-instruct")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    folder = tmp / "smollm2-135m-random"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def trainer_for(folder: Path, out: Path):
    from unsloth import FastLanguageModel  # noqa: I001  (unsloth first: it rebinds trl's classes)

    from qtuning import QTuningSFTConfig, QTuningSFTTrainer
    from qtuning.data import load_records, split_records, to_dataset

    model, tokenizer = FastLanguageModel.from_pretrained(model_name=str(folder), max_seq_length=512, load_in_4bit=False)
    model = FastLanguageModel.get_peft_model(
        model, r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    records, _ = load_records("alpaca-demo")
    train, _ = split_records(records, 0.0, seed=0, max_train=STEPS * BATCH)
    args = QTuningSFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        max_length=512,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        sample_ratio=SAMPLE_RATIO,
        token_ratio=TOKEN_RATIO,
        bf16=True,
        seed=0,
    )
    return QTuningSFTTrainer(model=model, args=args, train_dataset=to_dataset(train), processing_class=tokenizer)


def main() -> int:
    result: dict = {"benchmark": "unsloth_smoke", "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        import unsloth  # noqa: F401

        result["unsloth"] = getattr(unsloth, "__version__", "?")
    except Exception as exc:  # not installed, or no accelerator: Unsloth refuses to import on a CPU
        result.update(status="skipped", reason=f"import unsloth: {type(exc).__name__}: {exc}"[:500])
        write(result)
        return 0
    from qtuning.errors import ModelSpecError

    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_model_folder(Path(tmp))
        os.environ.pop("UNSLOTH_RETURN_LOGITS", None)
        try:
            trainer_for(folder, Path(tmp) / "no-logits").train()
            result["without_return_logits"] = "trained (Unsloth returned usable logits)"
        except ModelSpecError as exc:
            result["without_return_logits"] = f"refused: {exc}"
            if "UNSLOTH_RETURN_LOGITS=1" not in str(exc):
                failures.append("the refusal does not name UNSLOTH_RETURN_LOGITS=1")
        except Exception:
            result["without_return_logits"] = "FAILED: " + traceback.format_exc()[-1500:]
            failures.append("without UNSLOTH_RETURN_LOGITS: an exception other than qtuning's one-line refusal")
        os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
        out = Path(tmp) / "with-logits"
        try:
            started = time.perf_counter()
            trainer_for(folder, out).train()
            result["train_seconds"] = round(time.perf_counter() - started, 1)
            plans = [json.loads(line) for line in (out / "qtuning_plans.jsonl").read_text().splitlines() if line]
            kept = [sum(1 for role in p["samples"]["role"] if role in (2, 4)) for p in plans]
            result.update(steps=len(plans), kept_per_step=kept)
            if len(plans) != STEPS or any(k != int(SAMPLE_RATIO * BATCH) for k in kept):
                failures.append(
                    f"plan log: {len(plans)} steps, kept {kept}, expected {STEPS} x {int(SAMPLE_RATIO * BATCH)}"
                )
        except Exception:
            result["with_return_logits"] = "FAILED: " + traceback.format_exc()[-1500:]
            failures.append("with UNSLOTH_RETURN_LOGITS=1: the run failed")
    result.update(status="failed" if failures else "passed", failures=failures)
    write(result)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
