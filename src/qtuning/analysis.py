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
5. `run_analyze`: the whole `qtuning analyze` (the plot is drawn by `qtuning.plots`, the summary
   page built by `qtuning.report`, both imported only there).

Nothing runs on import. A shard row holds, per sample:
index (position among the scored records), row (its row in the source), id, ppl, entropy,
trainable_tokens (scored response tokens), has_response, positions (non-pad positions after the
shift), response_tokens_total (response tokens before truncation), token_ids and token_nll (the
scored response tokens and their NLL, in order: what `qtuning select` prunes from).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import torch

from .data.run_files import (
    ANALYSIS_SUMMARY_HTML_FILE,
    ANALYSIS_SUMMARY_MD_FILE,
    EU_PLANE_FILE,
    META_FILE,
    SCORES_CSV_FILE,
    SCORES_FILE,
    SHARD_DIR,
    SHARD_GLOB,
    STABILITY_FILE,
    TOKEN_SCORES_FILE,
    shard_name,
)
from .engine import signatures
from .engine.config import QTuningConfig
from .engine.selection import ROLE_NAMES, Role, select_samples
from .engine.thresholds import Thresholds
from .errors import AnalysisError
from .files import atomic_write_text, check_output_file, check_output_folder


@dataclass
class AnalyzeConfig:
    """Settings of `qtuning analyze` (the selection's own settings are QTuningConfig's)."""

    model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Model that scores the data: built-in name, .gguf file, Hugging Face folder or hub id."},
    )
    data: str = field(
        default="alpaca-demo",
        metadata={"help": "Data to analyse: built-in name, .json/.jsonl/.parquet file or save_to_disk folder."},
    )
    output: str = field(
        default="analysis",
        metadata={
            "help": "Output folder: scores.parquet/.csv, token_scores.parquet, eu_plane.png, summary.md/.html, "
            "stability.json, and the score shards (kept for resuming)."
        },
    )
    max_samples: int = field(default=0, metadata={"help": "Score only the first N records (0: all)."})
    max_length: int = field(
        default=1024,
        metadata={"help": "Tokens per sample (longer ones are truncated, like `qtuning train --max_length`)."},
    )
    batch_size: int = field(default=8, metadata={"help": "Rows per scoring forward (rows are sorted by length)."})
    shard_rows: int = field(default=256, metadata={"help": "Rows per score shard: the unit of resuming."})
    pool_sizes: str = field(
        default="8,32,all",
        metadata={"help": "Selection pool sizes to analyse, comma-separated; 'all' is the whole dataset as one pool."},
    )
    shuffles: int = field(default=4, metadata={"help": "Shuffles per pool size for the threshold stability test."})
    seed: int = field(default=0, metadata={"help": "Seed of the pools' shuffles (shuffle s uses seed + s)."})
    examples: int = field(default=3, metadata={"help": "Example samples shown per quadrant in the summary."})
    device: str = field(default="auto", metadata={"help": "Device to score on: auto (cuda if available), cpu, cuda."})
    max_batches: int = field(
        default=0,
        metadata={
            "help": "Stop after scoring this many batches (0: no limit); a later run resumes from the "
            "last complete shard."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "shard_rows", "shuffles"):
            if getattr(self, name) < 1:
                raise AnalysisError(f"{name}={getattr(self, name)!r} is not allowed: expected an integer >= 1")
        for name in ("max_samples", "examples", "max_batches"):
            if getattr(self, name) < 0:
                raise AnalysisError(f"{name}={getattr(self, name)!r} is not allowed: expected an integer >= 0")
        parse_pool_sizes(self.pool_sizes, 1)  # checks the syntax


def check_qtuning_selection(qcfg: QTuningConfig, command: str) -> None:
    """analyze and select run Q-Tuning's own stage 1; a baseline sample pruner has no EU-plane selection."""
    pruner = getattr(qcfg, "sample_pruner", "qtuning")
    if pruner != "qtuning":
        raise AnalysisError(
            f"sample_pruner={pruner!r} is not supported by `qtuning {command}`: it shows and runs "
            "Q-Tuning's EU-plane selection (sample_pruner='qtuning')"
        )
    if getattr(qcfg, "token_pruner", "qtuning") == "rho1":
        raise AnalysisError(
            f"token_pruner='rho1' is not supported by `qtuning {command}`: it needs a reference "
            "model's token losses, which the stored scores do not have"
        )


# ---------------------------------------------------------------------------------- 1. scoring


def parse_pool_sizes(text: str, n: int) -> list[tuple[str, int]]:
    """'8,32,all' -> [('8', 8), ('32', 32), ('all', n)]; a size >= n is the whole dataset."""
    out = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        if part.lower() in ("all", "whole", "0"):
            out.append(("all", n))
            continue
        if not part.isdigit() or int(part) < 1:
            raise AnalysisError(f"pool_sizes={text!r}: {part!r} is not allowed: expected integers >= 1 or 'all'")
        out.append((part, int(part)))
    if not out:
        raise AnalysisError(f"pool_sizes={text!r}: expected at least one pool size")
    return list(dict.fromkeys(out))


def data_fingerprint(records: list[dict]) -> str:
    """A short hash of the normalised records (ids and texts): the scores belong to exactly these."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record["id"], record["prompt"], record["completion"]], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def check_or_write_meta(out_dir: Path, meta: dict) -> None:
    """Resuming is only sound on the same data, model and settings: refuse anything else."""
    path = out_dir / META_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AnalysisError(
                f"{path}: not valid JSON ({exc.msg}); remove the folder {out_dir} to start over"
            ) from exc
        changed = [k for k in meta if k != "model_path" and old.get(k) != meta[k]]
        if changed:
            details = "; ".join(f"{k}: {old.get(k)!r} on disk, {meta[k]!r} now" for k in changed)
            raise AnalysisError(
                f"{out_dir} holds scores of another analysis ({details}); use another output folder or remove it"
            )
        return
    if any((out_dir / SHARD_DIR).glob(SHARD_GLOB)):
        raise AnalysisError(
            f"{out_dir} holds score shards but no {META_FILE}: they cannot be matched to this data "
            "and model; use another output folder or remove it"
        )
    check_output_folder(out_dir, "output folder", AnalysisError)
    atomic_write_text(path, json.dumps(meta, indent=1) + "\n")


def _response_positions(labels: list[int]) -> int:
    """Response tokens that carry a loss: labels set at positions 1.. (position 0 is never predicted)."""
    return sum(1 for label in labels[1:] if label != -100)


def score_dataset(
    model,
    tokenizer,
    records: list[dict],
    source_rows: list[int],
    out_dir: str | os.PathLike,
    cfg: AnalyzeConfig,
    qcfg: QTuningConfig,
    progress: bool = True,
) -> bool:
    """Score every record into shards under out_dir/shards; True once every shard is on disk.

    Shards already on disk are skipped (resume). With cfg.max_batches > 0 it stops after that many
    batches and returns False; the shard being filled is not written and will be scored again.
    """
    from tqdm import tqdm

    from .data import collate, tokenize_record
    from .engine.scoring import sample_scores, shift_labels
    from .modeling.probe import score_batch

    shard_dir = Path(out_dir) / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    n = len(records)
    todo = shards_to_score(out_dir, n, cfg.shard_rows)
    if not todo:
        return True
    done_rows = n - sum(len(rows) for _, rows in todo)
    device = next(model.parameters()).device
    bar = tqdm(total=n, initial=done_rows, desc="scoring", unit="row", disable=not progress)
    batches = 0
    try:
        for k, rows in todo:
            features = {i: tokenize_record(tokenizer, records[i], cfg.max_length) for i in rows}
            order = sorted(rows, key=lambda i: -len(features[i]["input_ids"]))  # little padding per batch
            out_rows = []
            for start in range(0, len(order), cfg.batch_size):
                if cfg.max_batches and batches >= cfg.max_batches:
                    return False
                chunk = order[start : start + cfg.batch_size]
                batch = collate([features[i] for i in chunk], tokenizer.pad_token_id)
                batch = {key: value.to(device) for key, value in batch.items()}
                scores, loss_mask, attention = score_batch(
                    model, batch["input_ids"], batch["attention_mask"], batch["labels"], qcfg.entropy_positions
                )
                per_sample = sample_scores(
                    scores.nll.cpu(), scores.entropy.cpu(), loss_mask.cpu(), attention.cpu(), qcfg.entropy_positions
                )
                targets = shift_labels(batch["labels"]).cpu()  # (B, T): the token each position predicts
                nll, loss_mask, attention = scores.nll.cpu(), loss_mask.cpu(), attention.cpu()
                for b, i in enumerate(chunk):
                    where = loss_mask[b]
                    full = tokenize_record(tokenizer, records[i], None)
                    out_rows.append(
                        {
                            "index": i,
                            "row": source_rows[i],
                            "id": str(records[i]["id"]),
                            "ppl": float(per_sample.ppl[b]),
                            "entropy": float(per_sample.entropy[b]),
                            "trainable_tokens": int(per_sample.num_tokens[b]),
                            "has_response": bool(per_sample.has_response[b]),
                            "positions": int(attention[b].sum()),
                            "response_tokens_total": _response_positions(full["labels"]),
                            "token_ids": targets[b][where].tolist(),
                            "token_nll": nll[b][where].tolist(),
                        }
                    )
                batches += 1
                bar.update(len(chunk))
            write_shard(shard_path(shard_dir, k), sorted(out_rows, key=lambda r: r["index"]))
    finally:
        bar.close()
    return True


def shards_to_score(out_dir: str | os.PathLike, n: int, shard_rows: int) -> list[tuple[int, range]]:
    """(shard number, record indices) of the shards not on disk yet."""
    shard_dir = Path(out_dir) / SHARD_DIR
    shards = [(k, range(start, min(n, start + shard_rows))) for k, start in enumerate(range(0, n, shard_rows))]
    return [(k, rows) for k, rows in shards if not shard_path(shard_dir, k).is_file()]


def shard_path(shard_dir: Path, k: int) -> Path:
    return shard_dir / shard_name(k)


def _shard_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("row", pa.int64()),
            ("id", pa.string()),
            ("ppl", pa.float64()),
            ("entropy", pa.float64()),
            ("trainable_tokens", pa.int64()),
            ("has_response", pa.bool_()),
            ("positions", pa.int64()),
            ("response_tokens_total", pa.int64()),
            ("token_ids", pa.list_(pa.int32())),
            ("token_nll", pa.list_(pa.float32())),
        ]
    )


def write_shard(path: Path, rows: list[dict]) -> None:
    """Written whole or not at all (temporary file, then an atomic rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=_shard_schema())
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_shards(out_dir: str | os.PathLike):
    """Every shard of an analysis folder as one pandas DataFrame, ordered by index."""
    import pandas as pd
    import pyarrow.parquet as pq

    shard_dir = Path(out_dir) / SHARD_DIR
    paths = sorted(shard_dir.glob(SHARD_GLOB))
    if not paths:
        raise AnalysisError(f"{shard_dir}: no score shards (expected part-*.parquet from `qtuning analyze`)")
    frames = [pq.read_table(p).to_pandas() for p in paths]
    return pd.concat(frames, ignore_index=True).sort_values("index", ignore_index=True)


# ---------------------------------------------------------------------------------- 2. pools


@dataclass
class PoolRun:
    """Stage 1 over a dataset cut into pools of `pool_size` (one shuffle)."""

    label: str
    pool_size: int
    seed: int
    kept_role: torch.Tensor  # (N,) int64 Role values; DROPPED also for samples left out of every pool
    quadrant: torch.Tensor  # (N,) int64 1..4 by the pool's mid thresholds, 0 without a response
    supplemented: torch.Tensor  # (N,) bool
    pools: list[dict]  # per pool: size, kept, supplemented, then Thresholds.SCALARS (alpha, ..., converged)

    def kept(self) -> set[int]:
        return set((self.kept_role != Role.DROPPED).nonzero().flatten().tolist())


def select_in_pools(
    ppl: torch.Tensor,
    ent: torch.Tensor,
    valid: torch.Tensor,
    pool_size: int,
    cfg: QTuningConfig,
    seed: int = 0,
    include_remainder: bool = True,
    label: str | None = None,
) -> PoolRun:
    """Shuffle with `seed`, cut into pools of pool_size, select in each (the whole dataset: no shuffle).

    include_remainder=False leaves out the last, smaller pool (what a drop_last loader does).
    """
    n = ppl.shape[0]
    whole = pool_size >= n
    order = torch.arange(n) if whole else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    stop = n if include_remainder or whole else n - n % pool_size
    kept_role = torch.zeros(n, dtype=torch.int64)
    quadrant = torch.zeros(n, dtype=torch.int64)
    supplemented = torch.zeros(n, dtype=torch.bool)
    pools = []
    for start in range(0, stop, max(1, pool_size)):
        index = order[start : start + pool_size]
        sel = select_samples(ppl[index], ent[index], valid[index], cfg)
        kept_role[index], quadrant[index], supplemented[index] = sel.kept_role, sel.quadrant, sel.supplemented
        pools.append(
            {
                "size": sel.pool_size,
                "kept": int((sel.kept_role != Role.DROPPED).sum()),
                "supplemented": int(sel.supplemented.sum()),
                **sel.thresholds.scalars(),
            }
        )
    return PoolRun(
        label=label or ("all" if whole else str(pool_size)),
        pool_size=min(pool_size, n),
        seed=seed,
        kept_role=kept_role,
        quadrant=quadrant,
        supplemented=supplemented,
        pools=pools,
    )


# ---------------------------------------------------------------------------------- 3. stability


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx = torch.argsort(torch.argsort(x)).double()
    ry = torch.argsort(torch.argsort(y)).double()
    if x.numel() < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def _sd(values: list[float]) -> float:
    return statistics.pstdev(values) if values else 0.0


@dataclass
class Stability:
    """The threshold stability test: one row per pool size, and the runs behind it."""

    reference: PoolRun  # the whole dataset as one pool
    rows: list[dict]
    runs: dict[str, list[PoolRun]]  # label -> one run per shuffle


def pool_stability(
    ppl: torch.Tensor,
    ent: torch.Tensor,
    valid: torch.Tensor,
    pool_sizes: list[tuple[str, int]],
    cfg: QTuningConfig,
    shuffles: int = 4,
    seed: int = 0,
    include_remainder: bool = True,
) -> Stability:
    """Kept sets under each pool size and shuffle (seed + s) against the whole-dataset selection.

    Per pool size: Jaccard overlap with the whole-dataset kept set (mean and sd over shuffles), the
    mean Jaccard between shuffles, the sd of the pools' mid thresholds (PPL and Ent lines, over
    every pool of every shuffle), the kept and supplemented shares and the bisection's success rate.
    """
    n = ppl.shape[0]
    reference = select_in_pools(ppl, ent, valid, n, cfg, label="all")
    ref_kept = reference.kept()
    rows, runs = [], {}
    for label, size in pool_sizes:
        count = 1 if size >= n else shuffles
        these = [select_in_pools(ppl, ent, valid, size, cfg, seed + s, include_remainder, label) for s in range(count)]
        runs[label] = these
        kept_sets = [r.kept() for r in these]
        pools = [p for r in these for p in r.pools if p["size"] > 0]
        vs_whole = [jaccard(k, ref_kept) for k in kept_sets]
        across = [jaccard(a, b) for a, b in combinations(kept_sets, 2)]
        kept_total = sum(p["kept"] for p in pools)
        rows.append(
            {
                "pool": label,
                "pool_size": min(size, n),
                "shuffles": count,
                "pools": len(pools),
                "jaccard_vs_whole_mean": statistics.mean(vs_whole),
                "jaccard_vs_whole_sd": _sd(vs_whole),
                "jaccard_across_shuffles_mean": statistics.mean(across) if across else None,
                "ppl_line_mean": statistics.mean(p["ppl_mid"] for p in pools) if pools else 0.0,
                "ppl_line_sd": _sd([p["ppl_mid"] for p in pools]),
                "ent_line_mean": statistics.mean(p["ent_mid"] for p in pools) if pools else 0.0,
                "ent_line_sd": _sd([p["ent_mid"] for p in pools]),
                "kept_mean": statistics.mean(len(k) for k in kept_sets),
                "converged_share": sum(p["converged"] for p in pools) / max(1, len(pools)),
                "supplemented_share": sum(p["supplemented"] for p in pools) / max(1, kept_total),
            }
        )
    return Stability(reference=reference, rows=rows, runs=runs)


# ---------------------------------------------------------------------------------- 4. warnings


def quadrant_shares(run: PoolRun, valid: torch.Tensor) -> list[float]:
    n = max(1, int(valid.sum()))
    return [int(((run.quadrant == q) & valid).sum()) / n for q in range(1, 5)]


def failure_signatures(run: PoolRun, valid: torch.Tensor, sample_ratio: float) -> list[str]:
    """The warnings of `qtuning.engine.signatures` for one pool size: collapse, a missed bisection, a dominant
    supplement (the rule is the trainer's; the wording names the pool size)."""
    out = []
    where = "the whole dataset as one pool" if run.label == "all" else f"pools of {run.label}"
    shares = quadrant_shares(run, valid)
    pools = [p for p in run.pools if p["size"] > 0]
    missed = [p for p in pools if not p["converged"]]
    kept = sum(p["kept"] for p in pools)
    supplemented = sum(p["supplemented"] for p in pools)
    fired = signatures.failure_signatures(
        shares, plans=len(pools), converged=len(pools) - len(missed), kept=kept, supplemented=supplemented
    )
    if fired["collapse"]:
        small = ", ".join(f"Q{q} {shares[q - 1]:.1%}" for q in signatures.collapsed_quadrants(shares))
        out.append(
            f"quadrant collapse with {where}: {small} of the samples (two or more quadrants under "
            f"{signatures.COLLAPSE_SHARE:.0%}); the thresholds barely separate these samples"
        )
    if fired["bisection"]:
        detail = (
            f"kept fraction {missed[0]['bisection_kept_fraction']:.3f} vs target {sample_ratio:.3f}"
            if len(pools) == 1
            else f"in {len(missed)}/{len(pools)} pools"
        )
        out.append(
            f"the bisection missed its tolerance with {where} ({detail}): the supplement, not the "
            "quantiles, sets the kept fraction"
        )
    if fired["supplement"]:
        out.append(
            f"the supplement chose {supplemented / kept:.0%} of the kept samples with {where}: the kept "
            "set is decided by distance from the diagonal, not by the quadrant corners"
        )
    return out


def quadrant_examples(scores, run: PoolRun, k: int) -> dict[int, list[int]]:
    """Up to k sample indices per quadrant, the deepest into their corner (by rank on both axes)."""
    valid = torch.tensor(scores["has_response"].to_numpy().copy(), dtype=torch.bool)
    ppl = torch.tensor(scores["ppl"].to_numpy().copy(), dtype=torch.float64)
    ent = torch.tensor(scores["entropy"].to_numpy().copy(), dtype=torch.float64)
    rank_p = torch.argsort(torch.argsort(ppl)).double()
    rank_e = torch.argsort(torch.argsort(ent)).double()
    direction = {1: (1, 1), 2: (1, -1), 3: (-1, -1), 4: (-1, 1)}
    out = {}
    for q, (dp, de) in direction.items():
        members = ((run.quadrant == q) & valid).nonzero().flatten()
        depth = dp * rank_p[members] + de * rank_e[members]
        out[q] = members[torch.argsort(depth, descending=True, stable=True)[:k]].tolist()
    return out


def finite(value: float | None) -> float | None:
    """JSON-safe: NaN and inf become None."""
    return None if value is None or not math.isfinite(value) else value


# ---------------------------------------------------------------------------------- 5. the whole command


def _column(label: str) -> str:
    return f"p{label}" if label.isdigit() else label


def run_analyze(cfg: AnalyzeConfig, qcfg: QTuningConfig, *, model=None, tokenizer=None, progress: bool = True) -> dict:
    """The whole `qtuning analyze`; returns {"complete": bool, ...} (False: stopped by max_batches).

    1. load and normalise the data, 2. score it in resumable shards (no grad), 3. select under
    each pool size and shuffle, 4. write scores, the EU-plane plot, the summary (Markdown + HTML)
    and stability.json, and print the warnings. `model`/`tokenizer`: an already loaded model
    (default: cfg.model, loaded only if a shard is left to score).
    """
    from .data import load_records

    started = time.perf_counter()
    check_qtuning_selection(qcfg, "analyze")
    out = Path(cfg.output).expanduser()
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"{out}: is a file; expected an output folder (new or from an earlier analyze)")
    # 1. the data, as `qtuning train` reads it
    records, report = load_records(cfg.data)
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
    # 2. scores, resumable
    if model is None and shards_to_score(out, len(records), cfg.shard_rows):
        from .data.models import load_model_and_tokenizer

        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_model_and_tokenizer(cfg.model, device=device)
    scoring_started = time.perf_counter()
    if not score_dataset(model, tokenizer, records, source_rows, out, cfg, qcfg, progress=progress):
        print(
            f"[qtuning] stopped after {cfg.max_batches} batches (--max-batches); run the same command again to "
            "resume from the last complete shard"
        )
        return {"complete": False}
    scoring_s = time.perf_counter() - scoring_started
    scores = read_shards(out)
    # 3. selection under each pool size and shuffle
    ppl = torch.as_tensor(scores["ppl"].to_numpy().copy(), dtype=torch.float64)
    ent = torch.as_tensor(scores["entropy"].to_numpy().copy(), dtype=torch.float64)
    valid = torch.as_tensor(scores["has_response"].to_numpy().copy(), dtype=torch.bool)
    if not valid.any():
        raise AnalysisError(
            f"{cfg.data}: no record has a scored response token (max_length {cfg.max_length} leaves only prompts?)"
        )
    n = len(scores)
    pool_sizes = parse_pool_sizes(cfg.pool_sizes, n)
    stability = pool_stability(ppl, ent, valid, pool_sizes, qcfg, cfg.shuffles, cfg.seed)
    whole = stability.reference
    # 4. outputs
    table = scores[
        ["index", "row", "id", "ppl", "entropy", "trainable_tokens", "response_tokens_total", "has_response"]
    ].copy()
    for label, runs in stability.runs.items():
        table[f"quadrant_{_column(label)}"] = runs[0].quadrant.numpy()
        table[f"role_{_column(label)}"] = [ROLE_NAMES.get(r, str(r)) for r in runs[0].kept_role.tolist()]
        table[f"supplemented_{_column(label)}"] = runs[0].supplemented.numpy()
    table.to_parquet(out / SCORES_FILE, index=False)
    table.to_csv(out / SCORES_CSV_FILE, index=False)
    scores[["index", "id", "positions", "response_tokens_total", "token_ids", "token_nll"]].to_parquet(
        out / TOKEN_SCORES_FILE, index=False
    )
    warnings = []
    for runs in stability.runs.values():
        warnings += [w for w in failure_signatures(runs[0], valid, qcfg.sample_ratio) if w not in warnings]
    # the whole-dataset pool's threshold scalars (its kept fraction is reported by the warnings)
    thresholds = {k: whole.pools[0][k] for k in Thresholds.SCALARS if k != "bisection_kept_fraction"}
    from . import plots
    from .report import analysis_doc

    kept_whole = (whole.kept_role != Role.DROPPED).tolist()
    png = plots.eu_plane(
        ppl.tolist(),
        ent.tolist(),
        whole.quadrant.tolist(),
        kept_whole,
        ppl_lo=thresholds["ppl_lo"],
        ppl_hi=thresholds["ppl_hi"],
        ent_lo=thresholds["ent_lo"],
        ent_hi=thresholds["ent_hi"],
        title=f"{cfg.data} scored by {cfg.model}: whole dataset as one pool",
    )
    (out / EU_PLANE_FILE).write_bytes(png)
    examples = quadrant_examples(scores, whole, cfg.examples)
    rank_correlation = spearman(ppl[valid], ent[valid])
    populations = {
        label: [int(((runs[0].quadrant == q) & valid).sum()) for q in range(1, 5)] + [int((~valid).sum())]
        for label, runs in stability.runs.items()
    }
    kept_counts = {
        label: {q: int(((runs[0].quadrant == q) & (runs[0].kept_role != Role.DROPPED)).sum()) for q in range(1, 5)}
        for label, runs in stability.runs.items()
    }
    roles = {
        label: {
            "Q2": int((runs[0].kept_role == Role.Q2).sum()),
            "Q4": int((runs[0].kept_role == Role.Q4).sum()),
            "supplemented": int(runs[0].supplemented.sum()),
        }
        for label, runs in stability.runs.items()
    }
    result = {
        "complete": True,
        "meta": meta,
        "samples": n,
        "with_response": int(valid.sum()),
        "scoring_s": scoring_s,
        "whole_dataset_thresholds": thresholds,
        "spearman_ppl_ent": finite(rank_correlation),
        "populations": populations,
        "kept_by_quadrant": kept_counts,
        "kept_roles": roles,
        "stability": stability.rows,
        "warnings": warnings,
        "settings": dataclasses.asdict(qcfg),
    }
    doc = analysis_doc(result, records, scores, examples, png)
    (out / ANALYSIS_SUMMARY_MD_FILE).write_text(doc.markdown(), encoding="utf-8")
    (out / ANALYSIS_SUMMARY_HTML_FILE).write_text(doc.html(), encoding="utf-8")
    (out / STABILITY_FILE).write_text(json.dumps(result, indent=1, default=str) + "\n")
    result["elapsed_s"] = time.perf_counter() - started
    _print_result(result, out)
    return result


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
    lines += [f"[qtuning] warning: {w}" for w in result["warnings"]] or ["[qtuning] no warnings"]
    lines.append(
        f"[qtuning] wrote {out}/: scores.parquet, scores.csv, token_scores.parquet, eu_plane.png, "
        "summary.md, summary.html, stability.json"
    )
    print("\n".join(lines))


def preview_plans(
    model_name: str,
    data: str,
    cfg: QTuningConfig,
    *,
    num_samples: int = 64,
    batch_size: int = 16,
    max_length: int = 256,
    seed: int = 0,
    output: str | None = None,
) -> list[dict]:
    """`qtuning plan`: score `num_samples` shuffled rows of `data` with the model, plan them in pools of
    `batch_size` (one window across pools with thresholds="history"), print what each pool keeps and a
    summary; returns the per-pool plan statistics (also written to `output` as JSON when given)."""
    from tqdm import tqdm

    from .data import collate, load_records, tokenize_record
    from .data.models import load_model_and_tokenizer
    from .engine.history import ScoreWindow
    from .engine.selection import plan_batch
    from .modeling.probe import score_batch

    if output:  # before the model loads and the rows are scored: fail in a second, not after the work
        output = str(check_output_file(output, "--output", AnalysisError))
    torch.manual_seed(seed)
    print(f"[qtuning] model {model_name}, data {data}, {num_samples} samples, batch {batch_size}")
    model, tokenizer = load_model_and_tokenizer(model_name)
    model.eval()
    records, report = load_records(data)
    print("\n".join(report.lines()))
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    records = [records[i] for i in order[:num_samples]]
    features = [tokenize_record(tokenizer, r, max_length) for r in records]

    window = ScoreWindow(cfg.history_window) if cfg.thresholds == "history" else None
    totals = dict(samples=0, kept=0, supplemented=0, tokens=0, kept_tokens=0, q=[0, 0, 0, 0], converged=0, batches=0)
    started = time.perf_counter()
    rows = []
    for start in tqdm(range(0, len(features), batch_size), desc="score + select", unit="batch"):
        chunk = features[start : start + batch_size]
        batch = collate(chunk, tokenizer.pad_token_id)
        scores, loss_mask, attention = score_batch(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"], cfg.entropy_positions
        )
        plan = plan_batch(scores.nll, scores.entropy, loss_mask, cfg, attention_mask=attention, window=window)
        stats = plan.stats()
        rows.append(stats)
        totals["samples"] += len(chunk)
        totals["kept"] += plan.num_kept
        totals["supplemented"] += plan.num_supplemented
        totals["tokens"] += int(loss_mask.sum())
        totals["kept_tokens"] += plan.num_kept_tokens
        totals["converged"] += int(plan.converged)
        totals["batches"] += 1
        for q in range(4):
            totals["q"][q] += stats[f"quadrant_{q + 1}"]
        tqdm.write(
            f"batch {totals['batches']:3d}: kept {plan.num_kept}/{len(chunk)} "
            f"(supplemented {plan.num_supplemented}), Q1-Q4 {[stats[f'quadrant_{q}'] for q in range(1, 5)]}, "
            f"alpha {plan.alpha:.4f}, iters {plan.iterations}{'' if plan.converged else ' (tolerance missed)'}, "
            f"tokens kept {plan.num_kept_tokens}/{int(loss_mask.sum())}"
        )
    elapsed = time.perf_counter() - started
    print(
        f"\n[qtuning] {totals['samples']} samples in {totals['batches']} batches, {elapsed:.1f} s\n"
        f"  kept samples      {totals['kept']} ({totals['kept'] / totals['samples']:.1%}; "
        f"target {cfg.sample_ratio:.1%}), supplemented {totals['supplemented']}\n"
        f"  quadrants Q1-Q4   {totals['q']}\n"
        f"  bisection within tolerance in {totals['converged']}/{totals['batches']} batches\n"
        f"  trained tokens    {totals['kept_tokens']} of {totals['tokens']} trainable "
        f"({totals['kept_tokens'] / max(1, totals['tokens']):.1%})"
    )
    if output:
        atomic_write_text(output, json.dumps({"config": dataclasses.asdict(cfg), "batches": rows}, indent=1))
        print(f"  per-batch plans   {output}")
    return rows
