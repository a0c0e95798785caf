"""EU-plane analysis of a whole dataset: score it once with a model, then look at what Q-Tuning keeps.

    qtuning analyze --model smollm2-135m-instruct --data alpaca-demo -o analysis/

1. `score_dataset`: every record is tokenised like `qtuning train` does, scored in batches by the
   probe (no grad), and written in shards of `shard_rows` rows (`OUT/shards/part-*.parquet`); a
   shard on disk is never scored again, so an interrupted run resumes where it stopped.
2. `select_in_pools`: the scored samples are shuffled (seed) and cut into pools of N; each pool
   runs stage 1 (`selection.select_samples`) with the QTuningConfig settings, giving each sample a
   quadrant and a kept role per pool size.
3. `pool_stability`: the threshold stability test: the kept set under pools of N (several shuffles)
   against the whole-dataset selection (Jaccard), and the spread of the pools' mid thresholds.
4. `failure_signatures`: docs/algorithm.md section 8.1's warnings (quadrant collapse, a bisection that
   misses its tolerance, a supplement that decides most of the kept set).
5. `run_analyze`: the whole `qtuning analyze` (the plot is drawn by `qtuning.insight.plots`, the summary
   page built by `qtuning.insight.run_report`, both imported only there).

Nothing runs on import. A shard row holds, per sample:
index (position among the scored records), row (its row in the source), id, ppl, entropy,
trainable_tokens (scored response tokens), has_response, positions (non-pad positions after the
shift), response_tokens_total (response tokens before truncation), token_ids and token_nll (the
scored response tokens and their NLL, in order: what `qtuning select` prunes from).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

import torch

from ..data.run_files import (
    ANALYSIS_SUMMARY_HTML_FILE,
    ANALYSIS_SUMMARY_MD_FILE,
    EU_PLANE_FILE,
    SCORES_CSV_FILE,
    SCORES_FILE,
    STABILITY_FILE,
    TOKEN_SCORES_FILE,
)
from ..engine.config import QTuningConfig
from ..engine.selection import ROLE_NAMES, Role
from ..engine.thresholds import Thresholds
from ..errors import AnalysisError
from .analyze_config import AnalyzeConfig, check_qtuning_selection
from .stability import failure_signatures, finite, parse_pool_sizes, pool_stability, quadrant_examples, spearman
from .store import check_or_write_meta, data_fingerprint, read_shards, score_dataset, shards_to_score


def _column(label: str) -> str:
    return f"p{label}" if label.isdigit() else label


def run_analyze(cfg: AnalyzeConfig, qcfg: QTuningConfig, *, model=None, tokenizer=None, progress: bool = True) -> dict:
    """The whole `qtuning analyze`, in four steps.

    1. load and normalise the data, 2. score it in resumable shards (no grad), 3. select under
    each pool size and shuffle, 4. write scores, the EU-plane plot, the summary (Markdown + HTML)
    and stability.json, and print the warnings.

    Args:
        cfg: the command's settings.
        qcfg: the selection's settings (stage 1 runs as in training).
        model: an already loaded model (default: cfg.model, loaded only if a shard is left to score).
        tokenizer: its tokenizer, with `model`.
        progress: show a progress bar while scoring.

    Returns:
        {"complete": False} when stopped by cfg.max_batches (run again to resume), else the result
        written to stability.json plus "elapsed_s".

    Raises:
        AnalysisError: the output is a file, no record has a scored response token, bad settings.
    """
    started = time.perf_counter()
    check_qtuning_selection(qcfg, "analyze")
    out = Path(cfg.output).expanduser()
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"{out}: is a file; expected an output folder (new or from an earlier analyze)")
    records, source_rows, meta = _read_data(cfg, qcfg, out)
    # the groups stay off the records: the shards' fingerprint is of the rows alone
    groups = [r.pop("group") for r in records] if cfg.group_field else None
    scored = _score(cfg, qcfg, out, records, source_rows, model, tokenizer, progress)
    if scored is None:
        return {"complete": False}
    scores, scoring_s = scored
    if groups is not None:
        scores["group"] = [groups[int(i)] for i in scores["index"].tolist()]
    ppl, ent, valid, stability = _select(cfg, qcfg, scores)
    result = _write_outputs(cfg, qcfg, out, records, scores, (ppl, ent, valid), stability, meta, scoring_s)
    (out / STABILITY_FILE).write_text(json.dumps(result, indent=1, default=str) + "\n")
    result["elapsed_s"] = time.perf_counter() - started
    _print_result(result, out)
    return result


def _read_data(cfg: AnalyzeConfig, qcfg: QTuningConfig, out: Path) -> tuple[list[dict], list[int], dict]:
    """Step 1: the records as `qtuning train` reads them, their source rows, and the meta that ties the
    output folder's shards to exactly these records and settings."""
    from ..data import load_records

    records, report = load_records(cfg.data, cfg.group_field)
    skipped = set(report.empty_response_rows)
    source_rows = [i for i in range(report.rows_read) if i not in skipped]
    if cfg.max_samples:
        records, source_rows = records[: cfg.max_samples], source_rows[: cfg.max_samples]
    meta = {
        "model": cfg.model,
        "data": cfg.data,
        "num_records": len(records),
        "data_sha": data_fingerprint(records),
        "max_length": cfg.max_length,
        "entropy_positions": qcfg.entropy_positions,
        "shard_rows": cfg.shard_rows,
    }
    check_or_write_meta(out, meta)
    print(
        f"[qtuning] analyze: model {cfg.model}, data {cfg.data}: {len(records)} records "
        f"({report.rows_read} rows read, {len(skipped)} with an empty response skipped), output {out}"
    )
    return records, source_rows, meta


def _score(cfg, qcfg, out: Path, records, source_rows, model, tokenizer, progress: bool):
    """Step 2: every shard not on disk yet, scored (the model loaded only if one is left); returns
    (the scores table, seconds spent scoring in this run), or None when stopped by max_batches."""
    if model is None and shards_to_score(out, len(records), cfg.shard_rows):
        from ..data.models import load_model_and_tokenizer

        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_model_and_tokenizer(cfg.model, device=device)
    started = time.perf_counter()
    if not score_dataset(model, tokenizer, records, source_rows, out, cfg, qcfg, progress=progress):
        print(
            f"[qtuning] stopped after {cfg.max_batches} batches (--max-batches); run the same command again to "
            "resume from the last complete shard"
        )
        return None
    return read_shards(out), time.perf_counter() - started


def _select(cfg: AnalyzeConfig, qcfg: QTuningConfig, scores):
    """Step 3: stage 1 under each pool size and shuffle; returns ppl, entropy, valid (N,) and the Stability."""
    ppl = torch.as_tensor(scores["ppl"].to_numpy().copy(), dtype=torch.float64)  # (N,)
    ent = torch.as_tensor(scores["entropy"].to_numpy().copy(), dtype=torch.float64)  # (N,)
    valid = torch.as_tensor(scores["has_response"].to_numpy().copy(), dtype=torch.bool)  # (N,)
    if not valid.any():
        raise AnalysisError(
            f"{cfg.data}: no record has a scored response token (max_length {cfg.max_length} leaves only prompts?)"
        )
    pool_sizes = parse_pool_sizes(cfg.pool_sizes, len(scores))
    return ppl, ent, valid, pool_stability(ppl, ent, valid, pool_sizes, qcfg, cfg.shuffles, cfg.seed)


def _write_outputs(cfg, qcfg, out: Path, records, scores, planes, stability, meta: dict, scoring_s: float) -> dict:
    """Step 4: the score tables, the EU-plane plot and the summary pages; returns the result (stability.json)."""
    ppl, ent, valid = planes
    _write_tables(out, scores, stability)
    warnings = []
    for runs in stability.runs.values():
        warnings += [w for w in failure_signatures(runs[0], valid, qcfg.sample_ratio) if w not in warnings]
    whole = stability.reference
    # the whole-dataset pool's threshold scalars (its kept fraction is reported by the warnings)
    thresholds = {k: whole.pools[0][k] for k in Thresholds.SCALARS if k != "bisection_kept_fraction"}
    png = _plot(cfg, ppl, ent, whole, thresholds)
    (out / EU_PLANE_FILE).write_bytes(png)
    result = {
        "complete": True,
        "meta": meta,
        "samples": len(scores),
        "with_response": int(valid.sum()),
        "scoring_s": scoring_s,
        "whole_dataset_thresholds": thresholds,
        "spearman_ppl_ent": finite(spearman(ppl[valid], ent[valid])),
        **_counts(stability, valid),
        **_by_group(cfg.group_field, stability, valid, scores),
        "stability": stability.rows,
        "warnings": warnings,
        "settings": dataclasses.asdict(qcfg),
    }
    from .analysis_summary import analysis_doc

    doc = analysis_doc(result, records, scores, quadrant_examples(scores, whole, cfg.examples), png)
    (out / ANALYSIS_SUMMARY_MD_FILE).write_text(doc.markdown(), encoding="utf-8")
    (out / ANALYSIS_SUMMARY_HTML_FILE).write_text(doc.html(), encoding="utf-8")
    return result


def _write_tables(out: Path, scores, stability) -> None:
    """scores.parquet/.csv (a row per sample: scores, quadrant, role per pool size) and token_scores.parquet."""
    columns = ["index", "row", "id", "ppl", "entropy", "trainable_tokens", "response_tokens_total", "has_response"]
    table = scores[columns + (["group"] if "group" in scores else [])].copy()
    for label, runs in stability.runs.items():
        table[f"quadrant_{_column(label)}"] = runs[0].quadrant.numpy()
        table[f"role_{_column(label)}"] = [ROLE_NAMES.get(r, str(r)) for r in runs[0].kept_role.tolist()]
        table[f"supplemented_{_column(label)}"] = runs[0].supplemented.numpy()
    table.to_parquet(out / SCORES_FILE, index=False)
    table.to_csv(out / SCORES_CSV_FILE, index=False)
    scores[["index", "id", "positions", "response_tokens_total", "token_ids", "token_nll"]].to_parquet(
        out / TOKEN_SCORES_FILE, index=False
    )


def _plot(cfg: AnalyzeConfig, ppl, ent, whole, thresholds: dict) -> bytes:
    """The EU plane of the whole dataset as one pool, with its threshold lines (PNG bytes)."""
    from . import plots

    return plots.eu_plane(
        ppl.tolist(),
        ent.tolist(),
        whole.quadrant.tolist(),
        (whole.kept_role != Role.DROPPED).tolist(),
        ppl_lo=thresholds["ppl_lo"],
        ppl_hi=thresholds["ppl_hi"],
        ent_lo=thresholds["ent_lo"],
        ent_hi=thresholds["ent_hi"],
        title=f"{cfg.data} scored by {cfg.model}: whole dataset as one pool",
    )


def _counts(stability, valid) -> dict:
    """Per pool size: the population of each quadrant (+ samples without a response), kept per quadrant, roles."""
    runs = {label: r[0] for label, r in stability.runs.items()}
    kept = {label: run.kept_role != Role.DROPPED for label, run in runs.items()}
    return {
        "populations": {
            label: [int(((run.quadrant == q) & valid).sum()) for q in range(1, 5)] + [int((~valid).sum())]
            for label, run in runs.items()
        },
        "kept_by_quadrant": {
            label: {q: int(((run.quadrant == q) & kept[label]).sum()) for q in range(1, 5)}
            for label, run in runs.items()
        },
        "kept_roles": {
            label: {
                "Q2": int((run.kept_role == Role.Q2).sum()),
                "Q4": int((run.kept_role == Role.Q4).sum()),
                "supplemented": int(run.supplemented.sum()),
            }
            for label, run in runs.items()
        },
    }


def _by_group(group_field: str, stability, valid, scores) -> dict:
    """group_field set: per group (largest first), its samples, quadrant shares (of its samples with a
    response, whole dataset as one pool) and, per pool size, the share of its samples kept (shuffle 0)."""
    if not group_field:
        return {}
    group_of = scores["group"].tolist()  # (N,) in the runs' order
    sizes = Counter(group_of)
    whole = stability.reference
    rows = []
    for group in sorted(sizes, key=lambda g: (-sizes[g], g)):
        member = torch.tensor([g == group for g in group_of])  # (N,)
        with_response = int((member & valid).sum())
        rows.append(
            {
                "group": group,
                "samples": sizes[group],
                "with_response": with_response,
                "quadrant_shares": [
                    round(int(((whole.quadrant == q) & member & valid).sum()) / max(1, with_response), 3)
                    for q in range(1, 5)
                ],
                "kept_share": {
                    label: round(int(((runs[0].kept_role != Role.DROPPED) & member).sum()) / sizes[group], 3)
                    for label, runs in stability.runs.items()
                },
            }
        )
    return {"group_field": group_field, "by_group": rows}


def _print_result(result: dict, out: Path) -> None:
    lines = [
        f"[qtuning] {result['samples']} samples scored ({result['with_response']} with a response); scoring "
        f"time in this run {result['scoring_s']:.1f} s; PPL/Ent rank correlation "
        f"{result['spearman_ppl_ent'] or float('nan'):.3f}",
        "[qtuning] quadrants Q1-Q4 (share of samples) and kept samples, per pool size:",
    ]
    for label, counts in result["populations"].items():
        total = max(1, result["with_response"])
        shares = "/".join(f"{100 * c / total:.0f}" for c in counts[:4])
        kept = sum(result["kept_by_quadrant"][label].values())
        roles = result["kept_roles"][label]
        lines.append(
            f"  pool {label:>5s}: Q1-Q4 {shares}% | kept {kept} ({kept / total:.1%}): {roles['Q2']} as Q2, "
            f"{roles['Q4']} as Q4, {roles['supplemented']} by the supplement"
        )
    lines.append(
        "[qtuning] threshold stability (Jaccard of the kept set vs the whole-dataset selection; sd of the "
        "pools' mid thresholds):"
    )
    for row in result["stability"]:
        lines.append(
            f"  pool {row['pool']:>5s}: Jaccard {row['jaccard_vs_whole_mean']:.3f} +- "
            f"{row['jaccard_vs_whole_sd']:.3f}, PPL line {row['ppl_line_mean']:.3f} +- "
            f"{row['ppl_line_sd']:.3f}, "
            f"Ent line {row['ent_line_mean']:.3f} +- {row['ent_line_sd']:.3f}, bisection ok "
            f"{row['converged_share']:.0%}, supplemented {row['supplemented_share']:.0%} of kept"
        )
    if result.get("by_group"):
        lines.append(f"[qtuning] by {result['group_field']}: samples, Q1-Q4 (whole dataset), kept per pool size:")
        for row in result["by_group"]:
            kept = ", ".join(f"{label} {share:.0%}" for label, share in row["kept_share"].items())
            shares = "/".join(f"{100 * s:.0f}" for s in row["quadrant_shares"])
            lines.append(f"  {row['group']}: {row['samples']} samples, Q1-Q4 {shares}% | kept: {kept}")
    lines += [f"[qtuning] warning: {w}" for w in result["warnings"]] or ["[qtuning] no warnings"]
    lines.append(
        f"[qtuning] wrote {out}/: scores.parquet, scores.csv, token_scores.parquet, eu_plane.png, "
        "summary.md, summary.html, stability.json"
    )
    print("\n".join(lines))
