"""The `qtuning analyze`, `qtuning report` and `qtuning select` subcommands (cli.py registers them).

Each command's options are one dataclass (`AnalyzeConfig`, `ReportConfig`, `SelectConfig`) plus,
for analyze and select, the selection's `QTuningConfig`: their field help is the --help text.

    analyze   1. load and normalise the data, 2. score it in resumable shards (no grad),
              3. select under each pool size and shuffle, 4. write scores, the EU-plane plot,
              the summary (Markdown + HTML) and stability.json, and print the warnings
    report    a training run's output_dir -> one self-contained HTML page
    select    scores.parquet -> the kept rows with their token masks (JSONL)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

SHORT_FLAGS = {"output": ["-o"]}


def add_fields(parser: argparse.ArgumentParser, cls) -> None:
    """One option per field of a command's dataclass (a field with metadata positional=True is positional)."""
    group = parser.add_argument_group(f"{cls.__name__} ({cls.__doc__.strip().splitlines()[0]})")
    for f in dataclasses.fields(cls):
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if f.metadata.get("positional"):
            group.add_argument(f.name, metavar=f.name.upper(), help=f.metadata.get("help", ""))
            continue
        flags = [*SHORT_FLAGS.get(f.name, []), f"--{f.name.replace('_', '-')}"]
        group.add_argument(*flags, dest=f.name, type=type(f.default), default=f.default, help=help_text)


def register(sub) -> None:
    """Add the three subcommands to cli.py's subparsers."""
    from .analysis import AnalyzeConfig
    from .cli import add_dataclass_arguments
    from .config import QTuningConfig
    from .report import ReportConfig
    from .static_select import SelectConfig

    analyze = sub.add_parser("analyze", help="score a whole dataset with a model and show its Error-Uncertainty "
                             "plane: scores, plot, quadrants, threshold stability, warnings")
    add_fields(analyze, AnalyzeConfig)
    add_dataclass_arguments(analyze, QTuningConfig)
    analyze.set_defaults(func=_cmd_analyze)

    report = sub.add_parser("report", help="one self-contained HTML page about a training run: plots over the "
                            "steps and a token view of the pruned Q2 samples")
    add_fields(report, ReportConfig)
    report.set_defaults(func=_cmd_report)

    select = sub.add_parser("select", help="one-shot Q-Tuning of a scored dataset (from `qtuning analyze`): the "
                            "kept rows with their token masks, for `qtuning train --pruning_method none`")
    add_fields(select, SelectConfig)
    add_dataclass_arguments(select, QTuningConfig)
    select.set_defaults(func=_cmd_select)


def _need_plots() -> None:
    """matplotlib is an extra (qtuning[plot]): say so before any work is done."""
    from .errors import UsageError

    try:
        from . import plots  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"{exc}") from exc


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import AnalyzeConfig
    from .cli import dataclass_from_args
    from .config import QTuningConfig

    _need_plots()
    result = analyze(dataclass_from_args(AnalyzeConfig, args), dataclass_from_args(QTuningConfig, args))
    return 0 if result["complete"] else 3


def _cmd_report(args: argparse.Namespace) -> int:
    from .cli import dataclass_from_args
    from .report import ReportConfig, write_run_report

    _need_plots()
    out = write_run_report(dataclass_from_args(ReportConfig, args))
    print(f"[qtuning] wrote {out}")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from .cli import dataclass_from_args
    from .errors import UsageError
    from .config import QTuningConfig
    from .static_select import SelectConfig, run_select

    cfg = dataclass_from_args(SelectConfig, args)
    if not cfg.scores:
        raise UsageError("qtuning select needs --scores (the scores.parquet written by `qtuning analyze`)")
    run_select(cfg, dataclass_from_args(QTuningConfig, args))
    return 0


# ---------------------------------------------------------------------------------- analyze


def _column(label: str) -> str:
    return f"p{label}" if label.isdigit() else label


def analyze(cfg, qcfg, *, model=None, tokenizer=None, progress: bool = True) -> dict:
    """The whole `qtuning analyze`; returns {"complete": bool, ...} (False: stopped by max_batches)."""
    import torch

    from . import analysis as A
    from .data import load_records

    started = time.perf_counter()
    A.check_qtuning_selection(qcfg, "analyze")
    out = Path(cfg.output).expanduser()
    if out.exists() and not out.is_dir():
        raise A.AnalysisError(f"{out}: is a file; expected an output folder (new or from an earlier analyze)")
    # 1. the data, as `qtuning train` reads it
    records, report = load_records(cfg.data)
    skipped = set(report.empty_response_rows)
    source_rows = [i for i in range(report.rows_read) if i not in skipped]
    if cfg.max_samples:
        records, source_rows = records[: cfg.max_samples], source_rows[: cfg.max_samples]
    meta = {"model": cfg.model, "data": cfg.data, "num_records": len(records),
            "data_sha": A.data_fingerprint(records), "max_length": cfg.max_length,
            "entropy_positions": qcfg.entropy_positions, "shard_rows": cfg.shard_rows}
    A.check_or_write_meta(out, meta)
    print(f"[qtuning] analyze: model {cfg.model}, data {cfg.data}: {len(records)} records "
          f"({report.rows_read} rows read, {len(skipped)} with an empty response skipped), output {out}")
    # 2. scores, resumable
    if model is None and A.shards_to_score(out, len(records), cfg.shard_rows):
        from .models import load_model_and_tokenizer

        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_model_and_tokenizer(cfg.model, device=device)
    scoring_started = time.perf_counter()
    if not A.score_dataset(model, tokenizer, records, source_rows, out, cfg, qcfg, progress=progress):
        print(f"[qtuning] stopped after {cfg.max_batches} batches (--max-batches); run the same command again to "
              "resume from the last complete shard")
        return {"complete": False}
    scoring_s = time.perf_counter() - scoring_started
    scores = A.read_shards(out)
    # 3. selection under each pool size and shuffle
    ppl = torch.as_tensor(scores["ppl"].to_numpy().copy(), dtype=torch.float64)
    ent = torch.as_tensor(scores["entropy"].to_numpy().copy(), dtype=torch.float64)
    valid = torch.as_tensor(scores["has_response"].to_numpy().copy(), dtype=torch.bool)
    if not valid.any():
        raise A.AnalysisError(f"{cfg.data}: no record has a scored response token (max_length {cfg.max_length} "
                              "leaves only prompts?)")
    n = len(scores)
    pool_sizes = A.parse_pool_sizes(cfg.pool_sizes, n)
    stability = A.pool_stability(ppl, ent, valid, pool_sizes, qcfg, cfg.shuffles, cfg.seed)
    whole = stability.reference
    # 4. outputs
    table = scores[["index", "row", "id", "ppl", "entropy", "trainable_tokens", "response_tokens_total",
                    "has_response"]].copy()
    for label, runs in stability.runs.items():
        table[f"quadrant_{_column(label)}"] = runs[0].quadrant.numpy()
        table[f"role_{_column(label)}"] = [A.ROLE_NAMES.get(r, str(r)) for r in runs[0].kept_role.tolist()]
        table[f"supplemented_{_column(label)}"] = runs[0].supplemented.numpy()
    table.to_parquet(out / A.SCORES_FILE, index=False)
    table.to_csv(out / "scores.csv", index=False)
    scores[["index", "id", "positions", "response_tokens_total", "token_ids", "token_nll"]].to_parquet(
        out / A.TOKEN_SCORES_FILE, index=False)
    warnings = []
    for label, runs in stability.runs.items():
        warnings += [w for w in A.failure_signatures(runs[0], valid, qcfg.sample_ratio) if w not in warnings]
    thresholds = {k: whole.pools[0][k] for k in ("ppl_lo", "ppl_hi", "ent_lo", "ent_hi", "ppl_mid", "ent_mid",
                                                 "alpha", "beta", "iterations", "converged")}
    from . import plots
    from .report import analysis_doc

    png = plots.eu_plane(ppl.tolist(), ent.tolist(), whole.quadrant.tolist(), (whole.kept_role != 0).tolist(),
                         ppl_lo=thresholds["ppl_lo"], ppl_hi=thresholds["ppl_hi"], ent_lo=thresholds["ent_lo"],
                         ent_hi=thresholds["ent_hi"],
                         title=f"{cfg.data} scored by {cfg.model}: whole dataset as one pool")
    (out / "eu_plane.png").write_bytes(png)
    examples = A.quadrant_examples(scores, whole, cfg.examples)
    spearman = A.spearman(ppl[valid], ent[valid])
    populations = {label: [int(((runs[0].quadrant == q) & valid).sum()) for q in range(1, 5)]
                   + [int((~valid).sum())] for label, runs in stability.runs.items()}
    kept_counts = {label: {q: int(((runs[0].quadrant == q) & (runs[0].kept_role != 0)).sum()) for q in range(1, 5)}
                   for label, runs in stability.runs.items()}
    roles = {label: {"Q2": int((runs[0].kept_role == A.ROLE_Q2).sum()),
                     "Q4": int((runs[0].kept_role == A.ROLE_Q4).sum()),
                     "supplemented": int(runs[0].supplemented.sum())} for label, runs in stability.runs.items()}
    result = {"complete": True, "meta": meta, "samples": n, "with_response": int(valid.sum()),
              "scoring_s": scoring_s, "whole_dataset_thresholds": thresholds, "spearman_ppl_ent": A.finite(spearman),
              "populations": populations, "kept_by_quadrant": kept_counts, "kept_roles": roles,
              "stability": stability.rows, "warnings": warnings, "settings": dataclasses.asdict(qcfg)}
    doc = analysis_doc(result, records, scores, examples, png)
    (out / "summary.md").write_text(doc.markdown(), encoding="utf-8")
    (out / "summary.html").write_text(doc.html(), encoding="utf-8")
    (out / "stability.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    result["elapsed_s"] = time.perf_counter() - started
    _print_result(result, out)
    return result


def _print_result(result: dict, out: Path) -> None:
    lines = [f"[qtuning] {result['samples']} samples scored ({result['with_response']} with a response); scoring "
             f"time in this run {result['scoring_s']:.1f} s; PPL/Ent rank correlation "
             f"{result['spearman_ppl_ent'] or float('nan'):.3f}",
             "[qtuning] quadrants Q1-Q4 (share of samples) and kept samples, per pool size:"]
    for label, counts in result["populations"].items():
        total = max(1, result["with_response"])
        shares = "/".join(f"{100 * c / total:.0f}" for c in counts[:4])
        kept = sum(result["kept_by_quadrant"][label].values())
        roles = result["kept_roles"][label]
        lines.append(f"  pool {label:>5s}: Q1-Q4 {shares}% | kept {kept} ({kept / total:.1%}): {roles['Q2']} as Q2, "
                     f"{roles['Q4']} as Q4, {roles['supplemented']} by the supplement")
    lines.append("[qtuning] threshold stability (Jaccard of the kept set vs the whole-dataset selection; sd of the "
                 "pools' mid thresholds):")
    for row in result["stability"]:
        lines.append(f"  pool {row['pool']:>5s}: Jaccard {row['jaccard_vs_whole_mean']:.3f} +- "
                     f"{row['jaccard_vs_whole_sd']:.3f}, PPL line {row['ppl_line_mean']:.3f} +- "
                     f"{row['ppl_line_sd']:.3f}, "
                     f"Ent line {row['ent_line_mean']:.3f} +- {row['ent_line_sd']:.3f}, bisection ok "
                     f"{row['converged_share']:.0%}, supplemented {row['supplemented_share']:.0%} of kept")
    lines += [f"[qtuning] warning: {w}" for w in result["warnings"]] or ["[qtuning] no warnings"]
    lines.append(f"[qtuning] wrote {out}/: scores.parquet, scores.csv, token_scores.parquet, eu_plane.png, "
                 "summary.md, summary.html, stability.json")
    print("\n".join(lines))
