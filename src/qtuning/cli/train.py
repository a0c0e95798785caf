"""`qtuning train`: a YAML recipe plus `--key value` overrides -> RunConfig and QTuningSFTConfig (parsed by
transformers' HfArgumentParser, apart from the other commands), then the run."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..errors import UsageError

RECIPES = Path(__file__).parents[1] / "recipes"  # configs/ in the repository points here


def _close(name: str, names) -> str:
    import difflib

    matches = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(matches)}?)" if matches else ""


def train_fields() -> set[str]:
    """The names `qtuning train` accepts, as YAML keys and --flags: the fields of RunConfig and QTuningSFTConfig."""
    from ..training.sft_config import QTuningSFTConfig, RunConfig

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

    from ..training.sft_config import QTuningSFTConfig, RunConfig, train_configs

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


def run_train(argv: list[str]) -> int:
    """`qtuning train [--config recipe.yaml] [--key value ...]`: parse, then train (qtuning.training.run)."""
    from ..training.run import run_training

    run, args = parse_train_config(argv)
    run_training(run, args)
    return 0
