"""`qtuning eval`: its flags and the command."""

from __future__ import annotations

import json

from ..errors import EvalError
from .api import evaluate_dir, format_table
from .records import parse_task_args
from .tasks import TASKS, task_name


def add_eval_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="built-in name, HF model folder, or LoRA adapter folder (qtuning train's output_dir)",
    )
    parser.add_argument(
        "--tasks",
        default="arc_easy,arc_challenge,gsm8k,triviaqa,squad,math",
        help=f"comma-separated, from {', '.join(TASKS)}; task=path.jsonl scores that task's "
        "metrics on your own records",
    )
    parser.add_argument("--limit", type=int, default=None, help="the first N records of each task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=None, help="context window (default: the model's)")
    parser.add_argument(
        "--engine",
        choices=["lm_eval", "native"],
        default="lm_eval",
        help="lm_eval (lm-evaluation-harness) or native (same prompts and metrics; ARC prompts run once "
        "per question, so log-likelihood tasks are faster)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="write the results, config and timing as JSON (with --engine native also each item's output and "
        "scores, which `qtuning compare` reads)",
    )


def run_eval_cli(args) -> int:
    if args.output:  # before the model loads and the evaluation runs: fail in a second, not after the work
        from ..files import check_output_file

        check_output_file(args.output, "-o/--output", EvalError)
    tasks, records = parse_task_args(args.tasks)
    print(
        f"[qtuning] eval {args.model} on {', '.join(tasks)}"
        f"{f' (first {args.limit} records each)' if args.limit else ''}"
    )
    result = evaluate_dir(
        args.model,
        tasks,
        records=records,
        limit=args.limit,
        batch_size=args.batch_size,
        max_length=args.max_length,
        engine=args.engine,
        samples=bool(args.output) and args.engine == "native",  # per-item scores, for `qtuning compare`
    )
    for task, path in (i.split("=", 1) for i in args.tasks.split(",") if "=" in i):
        result["config"]["records"][task_name(task)] = path
    print(format_table(result))
    print(
        f"[qtuning] {result['timing']['total_s']:.0f} s in all (model load {result['timing']['load_s']:.0f} s), "
        f"engine {args.engine}{' ' + result['versions']['lm_eval'] if result['versions']['lm_eval'] else ''}"
    )
    if args.output:
        from ..files import atomic_write_text

        atomic_write_text(args.output, json.dumps(result, indent=1) + "\n")
        print(f"[qtuning] results: {args.output}")
    return 0
