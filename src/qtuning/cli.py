"""The `qtuning` command line. Thin: parse, call the library, print.

    qtuning train --config configs/quickstart.yaml [--key value ...]
    qtuning plan --model smollm2-135m-instruct --data alpaca-demo --num-samples 64
    qtuning fetch
    qtuning eval --model DIR --tasks arc_easy,squad --limit 300 -o results.json
    qtuning analyze --model smollm2-135m-instruct --data alpaca-demo -o analysis/   (see commands.py)
    qtuning report RUN_DIR
    qtuning select --scores analysis/scores.parquet --sample-ratio 0.25 -o subset.jsonl

Options come from the config dataclasses (`RunConfig` and `QTuningSFTConfig` for train,
`QTuningConfig` and each command's own for the others): their field help is the --help text, and
YAML keys are their field names.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .cli_args import add_dataclass_arguments, dataclass_from_args
from .engine.config import QTuningConfig
from .errors import QTuningError, UsageError


def _cmd_plan(args: argparse.Namespace) -> int:
    from .insight.plan_preview import preview_plans

    cfg = dataclass_from_args(QTuningConfig, args)
    preview_plans(
        args.model,
        args.data,
        cfg,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        output=args.output,
    )
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .data.assets import cache_root
    from .data.builtin import load_builtin_records
    from .data.models import BUILTIN_MODELS, resolve_model

    for name in args.models:  # what fetch can cache: a built-in model, or a .gguf file (converted once)
        if name.lower() not in BUILTIN_MODELS and not name.lower().endswith(".gguf"):
            raise UsageError(
                f"fetch: model {name!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}) nor a .gguf file; "
                "`qtuning fetch` caches only those (a local folder or a hub id needs no fetch)"
            )
    for name in args.models:
        print(f"[qtuning] model {name}: {resolve_model(name)}")
    for name in args.datasets:
        print(f"[qtuning] data  {name}: {len(load_builtin_records(name))} rows")
    print(f"[qtuning] cache: {cache_root()}")
    return 0


RECIPES = Path(__file__).parent / "recipes"  # configs/ in the repository points here


def _close(name: str, names) -> str:
    import difflib

    matches = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(matches)}?)" if matches else ""


def train_fields() -> set[str]:
    """The names `qtuning train` accepts, as YAML keys and --flags: the fields of RunConfig and QTuningSFTConfig."""
    from .training.sft_config import QTuningSFTConfig, RunConfig

    return {f.name for cls in (RunConfig, QTuningSFTConfig) for f in dataclasses.fields(cls)}


def load_recipe(path: str | Path) -> dict:
    """A YAML recipe as a dict of config fields; unknown keys are an error that lists close matches."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"recipe {path} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:  # no permission, a broken disk, not text
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"recipe {path} cannot be read: {why}") from exc
    if not isinstance(values, dict):
        raise UsageError(f"recipe {path} must be a mapping of config fields, got {type(values).__name__}")
    known = train_fields()
    unknown = [k for k in values if k not in known]
    if unknown:
        details = "; ".join(f"{k!r}{_close(k, known)}" for k in unknown)
        raise UsageError(f"recipe {path}: unknown key(s) {details}")
    return values


def parse_train_config(argv: list[str]):
    """`--config recipe.yaml` plus `--key value` overrides -> (RunConfig, QTuningSFTConfig), validated."""
    from transformers import HfArgumentParser

    from .training.sft_config import QTuningSFTConfig, RunConfig, train_configs

    parser = HfArgumentParser(
        (RunConfig, QTuningSFTConfig),
        prog="qtuning train",
        description="Fine-tune with Q-Tuning. YAML keys and --flags are the fields below; flags override the recipe. "
        "Without --config, the quickstart recipe runs.",
    )
    parser.add_argument("--config", default=None, help="YAML recipe (see configs/)")
    config_path = argparse.ArgumentParser(add_help=False)
    config_path.add_argument("--config", default=None)
    known, _ = config_path.parse_known_args(argv)
    recipe = load_recipe(known.config or RECIPES / "quickstart.yaml")
    parser.set_defaults(**recipe)
    namespace, extras = parser.parse_known_args(argv)
    if extras:
        names = [a.lstrip("-").replace("-", "_") for a in extras if a.startswith("--")]
        details = "; ".join(f"--{n}{_close(n, train_fields())}" for n in names) or " ".join(extras)
        raise UsageError(f"unknown option(s): {details}")
    return train_configs({k: v for k, v in vars(namespace).items() if k != "config"})


def _cmd_train(argv: list[str]) -> int:
    from .extras import require_extra

    require_extra("trl", "`qtuning train`")  # one line naming the pip command, before transformers is imported
    from .training.run import run_training

    run, args = parse_train_config(argv)
    run_training(run, args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtuning", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "train",
        help="fine-tune with Q-Tuning from a YAML recipe (qtuning train --help for every field)",
        add_help=False,
    )
    sub.add_parser(
        "llamafactory",
        help="run LLaMA-Factory's own SFT workflow with Q-Tuning on, from its YAML plus a `qtuning:` block "
        "(qtuning llamafactory train.yaml [key=value ...]; needs the [llamafactory] extra)",
        add_help=False,
    )
    plan = sub.add_parser(
        "plan",
        help="score a real dataset with a model and show what Q-Tuning keeps, batch by batch",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    plan.add_argument("--model", default="smollm2-135m-instruct", help="built-in name, .gguf file, HF folder or hub id")
    plan.add_argument("--data", default="alpaca-demo", help="built-in dataset name")
    plan.add_argument("--num-samples", type=int, default=64, help="how many (shuffled) samples to score")
    plan.add_argument("--batch-size", type=int, default=16, help="samples per selection pool")
    plan.add_argument("--max-length", type=int, default=256, help="tokens per sample (truncated)")
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--output", default=None, help="write the per-batch plan statistics to this JSON file")
    add_dataclass_arguments(plan, QTuningConfig)
    plan.set_defaults(func=_cmd_plan)

    fetch = sub.add_parser("fetch", help="fetch, check and cache the built-in models and data sets")
    fetch.add_argument("--models", nargs="*", default=["smollm2-135m-instruct"])
    fetch.add_argument("--datasets", nargs="*", default=["alpaca-demo"])
    fetch.set_defaults(func=_cmd_fetch)

    from .evaluation import add_eval_arguments, run_eval_cli

    evaluate = sub.add_parser(
        "eval",
        help="benchmark a model (ARC, GSM8K, MATH, TriviaQA, SQuAD) on the built-in data",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=run_eval_cli)

    from .commands import register  # analyze, report, select

    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        if argv and argv[0] == "train":  # its options come from the config dataclass, parsed apart
            return _cmd_train(argv[1:])
        if argv and argv[0] == "llamafactory":  # LLaMA-Factory's own key=value overrides, parsed by it
            from .integrations.llamafactory import main as llamafactory_main

            return llamafactory_main(argv[1:])
        args = parser.parse_args(argv)
        return args.func(args)
    except QTuningError as exc:  # the user's input: one line that names it, no traceback
        print(f"qtuning: error: {exc}", file=sys.stderr)
        if exc.exit_code == 2:  # a bad option or config value: exit as argparse does for its own errors
            raise SystemExit(2) from None
        return exc.exit_code


def exit_process(code: int) -> None:
    """Exit; after a torch.distributed run, without interpreter finalization: gloo's worker threads
    can deadlock it (pytorch/pytorch#75097 and related), leaving a finished run hanging forever."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    import atexit
    import os

    dist.destroy_process_group()
    atexit._run_exitfuncs()  # what a normal exit would run (loggers flushing, ...), while all is alive
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry_point() -> None:
    exit_process(main())


if __name__ == "__main__":
    entry_point()
