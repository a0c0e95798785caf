"""Static selection (beyond the paper): one-shot Q-Tuning of a whole scored dataset.

    qtuning select --scores analysis/scores.parquet --sample-ratio 0.25 --token-ratio 0.5 -o subset.jsonl
    qtuning train --data subset.jsonl --pruning_method none

For users who cannot change their trainer: the scores of one model (written by `qtuning
analyze`, which also keeps every response token's NLL in token_scores.parquet) go through the
same two stages as in training, over one pool (the whole dataset, or shuffled pools of
`--pool-size`), without the model. The kept rows are written as they were in the source data,
plus:

    qtuning_token_keep        [1, 1, 0, 1, ...]  one 0/1 per response token (0: no loss on it)
    qtuning_token_keep_model  the model (tokenizer) the mask belongs to
    qtuning_role              "Q2" (token-pruned) or "Q4" (kept whole)

`qtuning train` applies the mask (label -100 where it is 0). Train with `--pruning_method none`:
the default, `qtuning`, would select and prune again on top.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import MASK_FIELD, MASK_MODEL_FIELD, load_records, read_rows
from ..data.run_files import META_FILE, TOKEN_SCORES_FILE
from ..engine.config import QTuningConfig
from ..engine.scoring import SampleScores
from ..engine.selection import Role, ScoredBatch, build_plan, select_samples
from ..errors import AnalysisError, UsageError
from ..files import atomic_path, check_output_file
from .analyze_config import check_qtuning_selection
from .store import data_fingerprint

ROLE_FIELD = "qtuning_role"
_ROWS_PER_PART = 512  # stage 2 runs on grids of this many rows at a time (per-sample budget)


@dataclass
class SelectConfig:
    """Settings of `qtuning select` (the selection's own settings are QTuningConfig's)."""

    scores: str = field(
        default="",
        metadata={
            "help": "scores.parquet written by `qtuning analyze` (its "
            "token_scores.parquet and meta.json must sit next to it)."
        },
    )
    output: str = field(default="subset.jsonl", metadata={"help": "JSONL file to write the kept rows to."})
    pool_size: int = field(
        default=0,
        metadata={
            "help": "Selection pool size: 0 selects over the whole dataset at "
            "once; N cuts it into shuffled pools of N, like training."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the shuffle into pools (with --pool-size)."})
    data: str = field(
        default="", metadata={"help": "The analysed data, if it moved (default: the data named in meta.json)."}
    )


def read_analysis(scores_path: str | os.PathLike):
    """(scores joined with the token scores, as a DataFrame; meta) of an analysis; clear errors otherwise."""
    import pyarrow.parquet as pq

    path = Path(scores_path).expanduser()
    expected = "the scores.parquet written by `qtuning analyze`, with token_scores.parquet and meta.json next to it"
    if not path.is_file():
        raise AnalysisError(f"{path}: no such file; expected {expected}")
    try:
        scores = pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise AnalysisError(f"{path}: not a Parquet file ({exc}); expected {expected}") from exc
    needed = {"index", "row", "id", "ppl", "entropy", "has_response"}
    if not needed <= set(scores.columns):
        raise AnalysisError(f"{path}: missing column(s) {sorted(needed - set(scores.columns))}; expected {expected}")
    if scores.empty:
        raise AnalysisError(f"{path}: no rows; expected {expected}")
    token_path, meta_path = path.with_name(TOKEN_SCORES_FILE), path.with_name(META_FILE)
    for other in (token_path, meta_path):
        if not other.is_file():
            raise AnalysisError(f"{other}: no such file; expected {expected}")
    tokens = pq.read_table(token_path).to_pandas()
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise AnalysisError(f"{meta_path}: not valid JSON ({exc.msg})") from exc
    if not {"index", "token_nll", "positions"} <= set(tokens.columns):
        raise AnalysisError(f"{token_path}: expected the columns index, token_nll, positions (from `qtuning analyze`)")
    wanted = ["index"] + [c for c in ("positions", "response_tokens_total", "token_nll") if c not in scores.columns]
    merged = scores.merge(tokens[wanted], on="index", how="left", validate="one_to_one")
    if merged["token_nll"].isna().any():
        raise AnalysisError(f"{token_path}: no token scores for some samples of {path}; rerun `qtuning analyze`")
    return merged.sort_values("index", ignore_index=True), meta


def _grid(rows, width: int | None = None) -> ScoredBatch:
    """Left-aligned (B, W) grids of the rows' response-token NLL; per-sample scores from the table."""
    lengths = [len(v) for v in rows["token_nll"]]
    positions = rows["positions"].tolist()
    width = width or max([1, *positions, *lengths])
    nll = torch.zeros(len(lengths), width, dtype=torch.float64)
    loss_mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    attention = torch.zeros(len(lengths), width, dtype=torch.bool)
    for b, (values, n, p) in enumerate(zip(rows["token_nll"], lengths, positions)):
        nll[b, :n] = torch.from_numpy(np.array(values, dtype=np.float64))
        loss_mask[b, :n] = True
        attention[b, : max(n, p)] = True
    scores = SampleScores(
        ppl=torch.as_tensor(rows["ppl"].to_numpy().copy(), dtype=torch.float64),
        entropy=torch.as_tensor(rows["entropy"].to_numpy().copy(), dtype=torch.float64),
        num_tokens=torch.as_tensor(lengths, dtype=torch.int64),
        has_response=torch.as_tensor(rows["has_response"].to_numpy().copy(), dtype=torch.bool),
    )
    return ScoredBatch(token_nll=nll, loss_mask=loss_mask, attention_mask=attention, scores=scores)


def static_select(table, cfg: QTuningConfig, pool_size: int = 0, seed: int = 0) -> dict[int, tuple[int, list[int]]]:
    """{table position: (role, token mask over the scored response tokens)} of the kept samples.

    Stage 1 per pool (the whole table when pool_size is 0 or >= its length), stage 2 inside each
    pool, exactly as `plan_batch` would on that pool, from the stored token NLL.
    """
    n = len(table)
    whole = pool_size <= 0 or pool_size >= n
    order = torch.arange(n) if whole else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    size = n if whole else pool_size
    kept: dict[int, tuple[int, list[int]]] = {}
    for start in range(0, n, size):
        index = order[start : start + size].tolist()
        pool = table.iloc[index]
        selection = select_samples(
            torch.as_tensor(pool["ppl"].to_numpy().copy(), dtype=torch.float64),
            torch.as_tensor(pool["entropy"].to_numpy().copy(), dtype=torch.float64),
            torch.as_tensor(pool["has_response"].to_numpy().copy(), dtype=torch.bool),
            cfg,
        )
        # The batch budget is one top-k over the whole pool; the per-sample one is row by row.
        step = len(index) if cfg.token_budget == "batch" else _ROWS_PER_PART
        for lo in range(0, len(index), step):
            hi = min(len(index), lo + step)
            plan = build_plan(_grid(pool.iloc[lo:hi]), selection.rows(lo, hi), cfg)
            for b in (plan.kept_role != Role.DROPPED).nonzero().flatten().tolist():
                n_tokens = int(plan.num_trainable_tokens[b])
                kept[index[lo + b]] = (int(plan.kept_role[b]), plan.token_keep[b, :n_tokens].int().tolist())
    return kept


def run_select(cfg: SelectConfig, qcfg: QTuningConfig) -> dict:
    """Select, write the subset JSONL, print what was kept; returns the counts."""
    check_qtuning_selection(qcfg, "select")
    out = check_output_file(cfg.output, "-o/--output", UsageError)  # before the work: fail in a second
    table, meta = read_analysis(cfg.scores)
    if meta.get("entropy_positions", qcfg.entropy_positions) != qcfg.entropy_positions:
        raise AnalysisError(
            f"{cfg.scores}: scored with entropy_positions={meta['entropy_positions']!r}, asked "
            f"{qcfg.entropy_positions!r}: rerun `qtuning analyze` with it"
        )
    data = cfg.data or meta.get("data")
    records, report = load_records(data)
    records = records[: meta.get("num_records") or len(records)]
    if data_fingerprint(records) != meta.get("data_sha"):
        raise AnalysisError(
            f"data {data!r} is not the data of the analysis {cfg.scores} (its rows or ids differ); "
            "pass the analysed data with --data"
        )
    rows, _ = read_rows(data)
    kept = static_select(table, qcfg, cfg.pool_size, cfg.seed)
    counts = {"samples": len(table), "kept": len(kept), "q2": 0, "q4": 0, "tokens": 0, "kept_tokens": 0}
    with atomic_path(out) as tmp, open(tmp, "w") as handle:  # the subset appears whole, or not at all
        for position in sorted(kept):
            role, mask = kept[position]
            sample = table.iloc[position]
            total = int(sample["response_tokens_total"])
            mask = mask + [1] * (total - len(mask))  # tokens past max_length were not scored: kept
            row = dict(rows[int(sample["row"])])
            row[MASK_FIELD] = mask
            row[MASK_MODEL_FIELD] = meta.get("model")
            row[ROLE_FIELD] = "Q2" if role == Role.Q2 else "Q4"
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts["q2" if role == Role.Q2 else "q4"] += 1
            counts["tokens"] += len(mask)
            counts["kept_tokens"] += sum(mask)
    by_group = ""
    if "group" in table.columns:  # analyzed with --group-field: what each group keeps
        groups = table["group"].tolist()
        sizes = Counter(groups)
        kept_in = Counter(groups[position] for position in kept)
        by_group = (
            "[qtuning] kept by group: "
            + ", ".join(
                f"{g} {kept_in[g]} of {sizes[g]} ({kept_in[g] / sizes[g]:.0%})"
                for g in sorted(sizes, key=lambda g: (-sizes[g], g))
            )
            + "\n"
        )
        counts["kept_by_group"] = {g: kept_in[g] for g in sizes}
    pools = (
        "the whole dataset as one pool"
        if cfg.pool_size <= 0 or cfg.pool_size >= len(table)
        else f"shuffled pools of {cfg.pool_size} (seed {cfg.seed})"
    )
    print(
        f"[qtuning] selected {counts['kept']} of {counts['samples']} samples "
        f"({counts['kept'] / counts['samples']:.1%}; target {qcfg.sample_ratio:.1%}) over {pools}: "
        f"{counts['q2']} Q2 (token-pruned), {counts['q4']} Q4\n"
        f"[qtuning] response tokens of the kept samples: {counts['kept_tokens']} of {counts['tokens']} carry a loss "
        f"({counts['kept_tokens'] / max(1, counts['tokens']):.1%})\n"
        f"{by_group}"
        f"[qtuning] wrote {out}\n"
        f"[qtuning] train on it with: qtuning train --data {out} --model {meta.get('model')} --pruning_method none\n"
        "           (--pruning_method none: the default, qtuning, would select and prune again on top of the mask)"
    )
    return counts
