"""The `qtuning` command line. Thin: parse, call the library, print.

    qtuning train --config configs/quickstart.yaml [--key value ...]
    qtuning plan --model smollm2-135m-instruct --data alpaca-demo --num-samples 64
    qtuning fetch
    qtuning eval --model DIR --tasks arc_easy,squad --limit 300 -o results.json
    qtuning analyze --model smollm2-135m-instruct --data alpaca-demo -o analysis/
    qtuning report RUN_DIR
    qtuning select --scores analysis/scores.parquet --sample-ratio 0.25 -o subset.jsonl
    qtuning compare --a a.json --b b.json
    qtuning llamafactory train.yaml [key=value ...]

Every subcommand is one row of `registry.COMMANDS`. Options come from the config dataclasses (`RunConfig`
and `QTuningSFTConfig` for train, `QTuningConfig` and each command's own for the others): their field
help is the --help text (`args`), and YAML keys are their field names. `python -m qtuning.cli` runs it too.
"""

from ..errors import UsageError
from .main import build_parser, entry_point, exit_process, main, run_command
from .train import RECIPES, load_recipe, parse_train_config, train_fields

__all__ = [
    "RECIPES",
    "UsageError",
    "build_parser",
    "entry_point",
    "exit_process",
    "load_recipe",
    "main",
    "parse_train_config",
    "run_command",
    "train_fields",
]
