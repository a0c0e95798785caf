"""The entry functions of `qtuning analyze`, `report` and `select` (the registry names them): the
one-line checks a command makes before its work, then the library call."""

from __future__ import annotations

from ..errors import UsageError


def need_plots() -> None:
    """matplotlib is an extra (qtuning[insight], or qtuning[plot] alone): say so before any work is done."""
    try:
        from ..insight import plots  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{exc}") from exc


def analyze(cfg, qcfg) -> int:
    """`qtuning analyze`; exit code 3 when stopped by --max-batches (run it again to resume)."""
    from ..insight.analyze import run_analyze

    need_plots()
    return 0 if run_analyze(cfg, qcfg)["complete"] else 3


def report(cfg) -> int:
    """`qtuning report RUN_DIR`: the HTML page of a training run."""
    from ..insight.run_report import write_run_report

    need_plots()
    print(f"[qtuning] wrote {write_run_report(cfg)}")
    return 0


def select(cfg, qcfg) -> int:
    """`qtuning select`: a static selection from the scores of `qtuning analyze`."""
    from ..insight.static_select import run_select

    if not cfg.scores:
        raise UsageError("qtuning select needs --scores (the scores.parquet written by `qtuning analyze`)")
    run_select(cfg, qcfg)
    return 0
