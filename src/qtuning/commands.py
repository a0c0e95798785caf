"""The `qtuning analyze`, `report`, `select` and `compare` subcommands (cli.py registers them).

Thin: each command's options are one dataclass (`AnalyzeConfig`, `ReportConfig`, `SelectConfig`,
`CompareConfig`)
plus, for analyze and select, the selection's `QTuningConfig` (their field help is the --help
text, see `cli_args`); the work is the library's:

    analyze   analysis.run_analyze: score the data in resumable shards, select under each pool
              size and shuffle, write scores, the EU-plane plot, the summaries and the warnings
    report    report.write_run_report: a training run's output_dir -> one self-contained HTML page
    select    static_select.run_select: scores.parquet -> the kept rows with their token masks (JSONL)
    compare   comparison.run_compare: two recipes' per-seed evaluations -> paired differences with CIs
"""

from __future__ import annotations

import argparse

from .cli_args import add_dataclass_arguments, dataclass_from_args
from .errors import UsageError

SHORT_FLAGS = {"output": ["-o"]}


def register(sub) -> None:
    """Add the four subcommands to cli.py's subparsers."""
    from .engine.config import QTuningConfig
    from .evaluation.compare import CompareConfig
    from .insight.analyze import AnalyzeConfig
    from .insight.run_report import ReportConfig
    from .insight.static_select import SelectConfig

    analyze = sub.add_parser(
        "analyze",
        help="score a whole dataset with a model and show its Error-Uncertainty "
        "plane: scores, plot, quadrants, threshold stability, warnings",
    )
    add_dataclass_arguments(analyze, AnalyzeConfig, SHORT_FLAGS)
    add_dataclass_arguments(analyze, QTuningConfig)
    analyze.set_defaults(func=_cmd_analyze)

    report = sub.add_parser(
        "report",
        help="one self-contained HTML page about a training run: plots over the "
        "steps and a token view of the pruned Q2 samples",
    )
    add_dataclass_arguments(report, ReportConfig, SHORT_FLAGS)
    report.set_defaults(func=_cmd_report)

    select = sub.add_parser(
        "select",
        help="one-shot Q-Tuning of a scored dataset (from `qtuning analyze`): the "
        "kept rows with their token masks, for `qtuning train --pruning_method none`",
    )
    add_dataclass_arguments(select, SelectConfig, SHORT_FLAGS)
    add_dataclass_arguments(select, QTuningConfig)
    select.set_defaults(func=_cmd_select)

    compare = sub.add_parser(
        "compare",
        help="is recipe A better than recipe B? paired differences over seeds x items, with 95%% CIs, "
        "from `qtuning eval --engine native -o` files",
    )
    add_dataclass_arguments(compare, CompareConfig, SHORT_FLAGS)
    compare.set_defaults(func=_cmd_compare)


def _need_plots() -> None:
    """matplotlib is an extra (qtuning[insight], or qtuning[plot] alone): say so before any work is done."""
    try:
        from .insight import plots  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{exc}") from exc


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .engine.config import QTuningConfig
    from .insight.analyze import AnalyzeConfig, run_analyze

    _need_plots()
    result = run_analyze(dataclass_from_args(AnalyzeConfig, args), dataclass_from_args(QTuningConfig, args))
    return 0 if result["complete"] else 3


def _cmd_report(args: argparse.Namespace) -> int:
    from .insight.run_report import ReportConfig, write_run_report

    _need_plots()
    out = write_run_report(dataclass_from_args(ReportConfig, args))
    print(f"[qtuning] wrote {out}")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from .engine.config import QTuningConfig
    from .insight.static_select import SelectConfig, run_select

    cfg = dataclass_from_args(SelectConfig, args)
    if not cfg.scores:
        raise UsageError("qtuning select needs --scores (the scores.parquet written by `qtuning analyze`)")
    run_select(cfg, dataclass_from_args(QTuningConfig, args))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .evaluation.compare import CompareConfig, run_compare

    run_compare(dataclass_from_args(CompareConfig, args))
    return 0
