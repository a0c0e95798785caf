"""`qtuning plan`: the plans Q-Tuning would make on the first batches of a data set, printed without training
(model and data as `qtuning train` loads them)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

import torch

from ..engine.config import QTuningConfig
from ..errors import AnalysisError
from ..files import atomic_write_text, check_output_file


@dataclass
class PlanConfig:
    """Settings of `qtuning plan` (the selection's own settings are QTuningConfig's)."""

    model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Model that scores the data: built-in name, .gguf file, Hugging Face folder or hub id."},
    )
    data: str = field(default="alpaca-demo", metadata={"help": "Built-in data set name."})
    num_samples: int = field(default=64, metadata={"help": "How many (shuffled) samples to score."})
    batch_size: int = field(default=16, metadata={"help": "Samples per selection pool."})
    max_length: int = field(default=256, metadata={"help": "Tokens per sample (longer ones are truncated)."})
    seed: int = field(default=0, metadata={"help": "Seed of the shuffle."})
    output: str | None = field(
        default=None, metadata={"help": "Write the per-batch plan statistics to this JSON file."}
    )


def run_plan(cfg: PlanConfig, qcfg: QTuningConfig) -> int:
    """`qtuning plan`: `preview_plans` with the command's settings; returns the exit code."""
    preview_plans(
        cfg.model,
        cfg.data,
        qcfg,
        num_samples=cfg.num_samples,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        seed=cfg.seed,
        output=cfg.output,
    )
    return 0


def preview_plans(
    model_name: str,
    data: str,
    cfg: QTuningConfig,
    *,
    num_samples: int = 64,
    batch_size: int = 16,
    max_length: int = 256,
    seed: int = 0,
    output: str | None = None,
) -> list[dict]:
    """`qtuning plan`: score `num_samples` shuffled rows of `data` with the model, plan them in pools of
    `batch_size` (one window across pools with thresholds="history"), print what each pool keeps and a
    summary; returns the per-pool plan statistics (also written to `output` as JSON when given)."""
    from tqdm import tqdm

    from ..data import collate, load_records, tokenize_record
    from ..data.models import load_model_and_tokenizer
    from ..engine.history import ScoreWindow
    from ..engine.selection import plan_batch
    from ..modeling.probe import score_batch

    if output:  # before the model loads and the rows are scored: fail in a second, not after the work
        output = str(check_output_file(output, "--output", AnalysisError))
    torch.manual_seed(seed)
    print(f"[qtuning] model {model_name}, data {data}, {num_samples} samples, batch {batch_size}")
    records, report = load_records(data)  # before the model: a bad data file fails in a second
    print("\n".join(report.lines()))
    model, tokenizer = load_model_and_tokenizer(model_name)
    model.eval()
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    records = [records[i] for i in order[:num_samples]]
    features = [tokenize_record(tokenizer, r, max_length) for r in records]

    window = ScoreWindow(cfg.history_window) if cfg.thresholds == "history" else None
    totals = dict(samples=0, kept=0, supplemented=0, tokens=0, kept_tokens=0, q=[0, 0, 0, 0], converged=0, batches=0)
    started = time.perf_counter()
    rows = []
    for start in tqdm(range(0, len(features), batch_size), desc="score + select", unit="batch"):
        chunk = features[start : start + batch_size]
        batch = collate(chunk, tokenizer.pad_token_id)
        scores, loss_mask, attention = score_batch(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"], cfg.entropy_positions
        )
        plan = plan_batch(scores.nll, scores.entropy, loss_mask, cfg, attention_mask=attention, window=window)
        stats = plan.stats()
        rows.append(stats)
        totals["samples"] += len(chunk)
        totals["kept"] += plan.num_kept
        totals["supplemented"] += plan.num_supplemented
        totals["tokens"] += int(loss_mask.sum())
        totals["kept_tokens"] += plan.num_kept_tokens
        totals["converged"] += int(plan.converged)
        totals["batches"] += 1
        for q in range(4):
            totals["q"][q] += stats[f"quadrant_{q + 1}"]
        tqdm.write(
            f"batch {totals['batches']:3d}: kept {plan.num_kept}/{len(chunk)} "
            f"(supplemented {plan.num_supplemented}), Q1-Q4 {[stats[f'quadrant_{q}'] for q in range(1, 5)]}, "
            f"alpha {plan.alpha:.4f}, iters {plan.iterations}{'' if plan.converged else ' (tolerance missed)'}, "
            f"tokens kept {plan.num_kept_tokens}/{int(loss_mask.sum())}"
        )
    elapsed = time.perf_counter() - started
    print(
        f"\n[qtuning] {totals['samples']} samples in {totals['batches']} batches, {elapsed:.1f} s\n"
        f"  kept samples      {totals['kept']} ({totals['kept'] / totals['samples']:.1%}; "
        f"target {cfg.sample_ratio:.1%}), supplemented {totals['supplemented']}\n"
        f"  quadrants Q1-Q4   {totals['q']}\n"
        f"  bisection within tolerance in {totals['converged']}/{totals['batches']} batches\n"
        f"  trained tokens    {totals['kept_tokens']} of {totals['tokens']} trainable "
        f"({totals['kept_tokens'] / max(1, totals['tokens']):.1%})"
    )
    if output:
        atomic_write_text(output, json.dumps({"config": dataclasses.asdict(cfg), "batches": rows}, indent=1))
        print(f"  per-batch plans   {output}")
    return rows
