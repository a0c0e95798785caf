"""Every `qtuning` subcommand in one table: its name, its help line, the dataclasses whose fields are its
flags, and the function that runs it. Classes and functions are named as "module:attribute" strings and
imported only for the command that runs, so `qtuning --help` and `qtuning report` load no trl."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

QTUNING_CONFIG = "qtuning.engine.config:QTuningConfig"  # the selection's own settings (plan, analyze, select)


def load(target: str):
    """The object a "module:attribute" string names."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Command:
    """One subcommand.

    Attributes:
        name: what follows `qtuning`.
        help: one line, shown by `qtuning --help` and as the command's description.
        run: "module:function". A "fields" command's function gets one instance per class of
            `configs`, in order; an "argv" command's gets the arguments after the name. It returns
            the exit code (None: 0).
        configs: "module:Class" dataclasses whose fields are the flags (cli.args), "fields" only.
        parse: "fields" (flags from `configs`) or "argv" (the command parses its own arguments).
        extra: the optional dependency checked before anything of the command is imported.
    """

    name: str
    help: str
    run: str
    configs: tuple[str, ...] = ()
    parse: Literal["fields", "argv"] = "fields"
    extra: str | None = None

    def config_classes(self) -> list[type]:
        """The dataclasses of `configs`, imported."""
        return [load(c) for c in self.configs]


COMMANDS = (
    Command(
        "train",
        "fine-tune with Q-Tuning from a YAML recipe (qtuning train --help for every field)",
        "qtuning.cli.train:run_train",
        parse="argv",
        extra="trl",
    ),
    Command(
        "llamafactory",
        "run LLaMA-Factory's own SFT workflow with Q-Tuning on, from its YAML plus a `qtuning:` block "
        "(qtuning llamafactory train.yaml [key=value ...]; needs the [llamafactory] extra)",
        "qtuning.integrations.llamafactory:main",
        parse="argv",
    ),
    Command(
        "plan",
        "score a real dataset with a model and show what Q-Tuning keeps, batch by batch",
        "qtuning.insight.plan_preview:run_plan",
        ("qtuning.insight.plan_preview:PlanConfig", QTUNING_CONFIG),
    ),
    Command(
        "fetch",
        "fetch, check and cache the built-in models and data sets",
        "qtuning.data.fetch:run_fetch",
        ("qtuning.data.fetch:FetchConfig",),
    ),
    Command(
        "eval",
        "benchmark a model (ARC, GSM8K, MATH, TriviaQA, SQuAD) on the built-in data, or score its held-out NLL "
        "on your records (nll=FILE)",
        "qtuning.evaluation.command:run_eval",
        ("qtuning.evaluation.command:EvalConfig",),
    ),
    Command(
        "analyze",
        "score a whole dataset with a model and show its Error-Uncertainty plane: scores, plot, quadrants, "
        "threshold stability, warnings",
        "qtuning.cli.commands:analyze",
        ("qtuning.insight.analyze_config:AnalyzeConfig", QTUNING_CONFIG),
    ),
    Command(
        "report",
        "one self-contained HTML page about a training run: plots over the steps and a token view of the "
        "pruned Q2 samples",
        "qtuning.cli.commands:report",
        ("qtuning.insight.run_report:ReportConfig",),
    ),
    Command(
        "select",
        "one-shot Q-Tuning of a scored dataset (from `qtuning analyze`): the kept rows with their token masks, "
        "for `qtuning train --pruning_method none`",
        "qtuning.cli.commands:select",
        ("qtuning.insight.static_select:SelectConfig", QTUNING_CONFIG),
    ),
    Command(
        "compare",
        "is recipe A better than recipe B? paired differences over seeds x items, with 95% CIs, from "
        "`qtuning eval --engine native -o` files",
        "qtuning.evaluation.compare:run_compare",
        ("qtuning.evaluation.compare:CompareConfig",),
    ),
    Command(
        "ab",
        "is Q-Tuning better than a random subset (or full data) on your recipe? trains both over paired seeds, "
        "scores each on your held-out records (NLL, plus any eval task) and compares",
        "qtuning.cli.ab:run_ab",
        ("qtuning.cli.ab:AbConfig",),
        extra="trl",
    ),
)
BY_NAME = {command.name: command for command in COMMANDS}
