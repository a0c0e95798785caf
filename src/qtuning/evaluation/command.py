"""`qtuning eval`: its settings (EvalConfig, whose fields are the flags) and the command."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from ..errors import EvalError
from .api import evaluate_dir, format_table
from .records import parse_task_args
from .tasks import TASKS, task_name


@dataclass
class EvalConfig:
    """Settings of `qtuning eval` (a model on the built-in benchmarks or on your own records)."""

    model: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "Built-in name, Hugging Face model folder, or LoRA adapter folder (qtuning train's output_dir)."
        },
    )
    tasks: str = field(
        default="arc_easy,arc_challenge,gsm8k,triviaqa,squad,math",
        metadata={
            "help": f"Comma-separated, from {', '.join(TASKS)}; task=path.jsonl scores that task's metrics on "
            "your own records; nll=path.jsonl: the held-out per-token NLL of each row's reference response "
            "(rows in any format `qtuning train` reads; lower is better; always scored natively)."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "The first N records of each task."})
    batch_size: int = field(default=8, metadata={"help": "Records per forward."})
    max_length: int | None = field(default=None, metadata={"help": "Context window (default: the model's)."})
    engine: Literal["lm_eval", "native"] = field(
        default="lm_eval",
        metadata={
            "help": "lm_eval (lm-evaluation-harness) or native (same prompts and metrics; ARC prompts run once "
            "per question, so log-likelihood tasks are faster)."
        },
    )
    output: str | None = field(
        default=None,
        metadata={
            "help": "Write the results, config and timing as JSON (with --engine native, and for the nll task "
            "under either engine, also each item's output and scores, which `qtuning compare` reads)."
        },
    )


def run_eval(cfg: EvalConfig) -> int:
    """`qtuning eval`: evaluate, print the table and the timing, write the JSON; returns the exit code.

    Raises:
        EvalError: an output that cannot be written (checked before the model loads), unknown tasks, bad records.
    """
    if cfg.output:  # before the model loads and the evaluation runs: fail in a second, not after the work
        from ..files import check_output_file

        check_output_file(cfg.output, "-o/--output", EvalError)
    tasks, records = parse_task_args(cfg.tasks)
    print(
        f"[qtuning] eval {cfg.model} on {', '.join(tasks)}{f' (first {cfg.limit} records each)' if cfg.limit else ''}"
    )
    result = evaluate_dir(
        cfg.model,
        tasks,
        records=records,
        limit=cfg.limit,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        engine=cfg.engine,
        samples=bool(cfg.output),  # per-item scores of the natively run tasks, for `qtuning compare`
    )
    for task, path in (i.split("=", 1) for i in cfg.tasks.split(",") if "=" in i):
        result["config"]["records"][task_name(task)] = path
    print(format_table(result))
    print(
        f"[qtuning] {result['timing']['total_s']:.0f} s in all (model load {result['timing']['load_s']:.0f} s), "
        f"engine {cfg.engine}{' ' + result['versions']['lm_eval'] if result['versions']['lm_eval'] else ''}"
    )
    if cfg.output:
        from ..files import atomic_write_text

        atomic_write_text(cfg.output, json.dumps(result, indent=1) + "\n")
        print(f"[qtuning] results: {cfg.output}")
    return 0
