"""The evaluation API: `evaluate` (a loaded model), `load_for_eval` and `evaluate_dir` (a folder or built-in
name), `format_table`."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from ..errors import EvalError
from .lm_eval_engine import _lm_eval_run
from .native import _native_run
from .records import parse_task_args, task_docs
from .tasks import TASKS, task_name


def evaluate(
    model,
    tokenizer,
    tasks: list[str] | str,
    limit: int | None = None,
    records: dict[str, list[dict]] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    engine: str = "lm_eval",
    samples: bool = False,
) -> dict:
    """Evaluate a loaded causal LM on benchmark tasks.

    tasks: names from TASKS (or "squad=path.jsonl" items); limit: the first N records of each task;
    records: {task: records} to score a task's metrics on your own records (builtin_data format)
    instead of the built-in set. engine: "lm_eval" (lm-evaluation-harness) or "native" (this module's
    batched log-likelihood with a shared prompt cache, and model.generate; same prompts and metrics).
    samples: also return each document's output and scores (native engine; the `nll` task, which
    always runs natively, under either engine). Returns {"tasks": {task: {metric: value, ..., "n": count}},
    "config": ..., "timing": ..., "versions": ...}; `results["tasks"]` is the table.
    """
    import torch

    if isinstance(tasks, str):
        tasks = [tasks]
    names, file_records = parse_task_args(list(tasks))
    records = {task_name(k): v for k, v in (records or {}).items()} | file_records
    unknown = set(records) - set(names)
    if unknown:
        raise EvalError(f"records given for task(s) not evaluated: {', '.join(sorted(unknown))}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    docs = {t: task_docs(t, limit, records.get(t)) for t in names}
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    if engine not in ("lm_eval", "native"):
        raise EvalError(f"unknown engine {engine!r}; known: lm_eval, native")
    # Denormal floats show up in SmolLM2's activations on CPU and make its forward ~5x slower (measured:
    # 7.2 s -> 1.5 s for 4 x 50 tokens); flushing them to zero left every logit bit-identical there.
    flushed = torch.set_flush_denormal(True)
    try:
        with torch.inference_mode():
            if engine == "lm_eval":
                # lm_eval has no score for a response as training tokenises it: `nll` tasks run natively
                harness = {t: d for t, d in docs.items() if TASKS[t].kind != "nll"}
                table, info = (
                    _lm_eval_run(model, tokenizer, harness, batch_size, max_length, progress)
                    if harness
                    else ({}, {"timings": {}})
                )
                if len(harness) < len(docs):
                    nll = {t: d for t, d in docs.items() if t not in harness}
                    nll_table, nll_info = _native_run(model, tokenizer, nll, batch_size, progress, samples)
                    table = {t: (table | nll_table)[t] for t in docs}
                    info["timings"] |= nll_info["timings"]
                    info["samples"] = nll_info["samples"]
            else:
                table, info = _native_run(model, tokenizer, docs, batch_size, progress, samples)
    finally:
        if flushed:
            torch.set_flush_denormal(False)
        model.train(was_training)
    total = time.perf_counter() - started
    import transformers

    result = {
        "tasks": table,
        "config": {
            "tasks": names,
            "limit": limit,
            "batch_size": batch_size,
            "engine": engine,
            "records": {t: ("custom" if t in records else TASKS[t].builtin) for t in names},
            "max_new_tokens": {t: TASKS[t].max_new_tokens for t in names if TASKS[t].kind == "generate"},
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "device": str(next(model.parameters()).device),
            "chat_template": True,
            "num_fewshot": 0,
        },
        "timing": {"total_s": round(total, 2), **{f"{t}_s": round(s, 2) for t, s in info["timings"].items()}},
        "versions": {
            "lm_eval": info.get("lm_eval") if engine == "lm_eval" else None,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    if info.get("task_folder"):
        result["task_folder"] = info["task_folder"]
    if samples and info.get("samples"):
        result["samples"] = info["samples"]
    return result


def _has_full_weights(folder: Path) -> bool:
    """The folder holds a whole model's weights (model.safetensors, pytorch_model.bin, or their shards)."""
    patterns = (
        "model*.safetensors",
        "pytorch_model*.bin",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    )
    return any(next(folder.glob(pattern), None) is not None for pattern in patterns)


def load_for_eval(spec: str | os.PathLike, dtype=None):
    """(model, tokenizer) for a model argument: a built-in name, a HF model folder, or a PEFT adapter
    folder as `qtuning train` writes it with LoRA (its base model loaded, the adapter merged in).

    A folder is an adapter folder when it holds adapter_config.json and no full model weights, whether or
    not it also holds the base model's config.json (Axolotl writes one next to the adapter); a folder
    with both weights and an adapter is refused (EvalError: is the adapter merged in already?)."""
    path = Path(str(spec)).expanduser()
    from ..data.models import load_model_and_tokenizer

    if (path / "adapter_config.json").is_file() and _has_full_weights(path):
        # transformers would load the adapter on top of weights that may already hold it (merged): refuse
        raise EvalError(
            f"model folder {path} holds both a whole model's weights and a LoRA adapter (adapter_config.json): "
            "it cannot be told whether the adapter is merged into them already; move the adapter files "
            "(adapter_config.json, adapter_model.*) or the model's weights into a folder of their own"
        )
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel
        from transformers import AutoTokenizer

        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise EvalError(f"adapter folder {path}: adapter_config.json names no base_model_name_or_path")
        model, tokenizer = load_model_and_tokenizer(base, dtype=dtype)
        with warnings.catch_warnings():
            # peft (0.21) reads `is_gradient_checkpointing`, which transformers (5.24) deprecates: a warning
            # between two libraries about nothing the user set (as in qtuning.training.run)
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
        if (path / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    return load_model_and_tokenizer(spec, dtype=dtype)


def evaluate_dir(model_dir_or_spec: str | os.PathLike, tasks: list[str] | str, **kwargs) -> dict:
    """`evaluate` on a saved model folder, a LoRA adapter folder, or `smollm2-135m-instruct`."""
    started = time.perf_counter()
    model, tokenizer = load_for_eval(model_dir_or_spec)
    load_s = time.perf_counter() - started
    result = evaluate(model, tokenizer, tasks, **kwargs)
    local = Path(str(model_dir_or_spec)).expanduser()
    # a local folder by its absolute path, so that `qtuning compare` run elsewhere finds its summary
    result["config"]["model"] = str(local.resolve()) if local.exists() else str(model_dir_or_spec)
    result["timing"]["load_s"] = round(load_s, 2)
    return result


def format_table(result: dict) -> str:
    """A plain-text table of the results: one row per task, one column per metric."""
    metrics = ["acc", "acc_norm", "exact_match", "f1", "nll"]
    rows = [["task", "n", *metrics, "time"]]
    for task, values in result["tasks"].items():
        seconds = result.get("timing", {}).get(f"{task}_s")
        rows.append(
            [
                task,
                str(values["n"]),
                *(f"{values[m]:.4f}" if m in values else "-" for m in metrics),
                f"{seconds:.0f} s" if seconds is not None else "",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
