"""The scores of `qtuning analyze` on disk: every record scored once by the probe (no grad) and written in
Parquet shards, so an interrupted run resumes at the first missing shard; the data fingerprint that ties the
shards to exactly these records."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..data.run_files import META_FILE, SHARD_DIR, SHARD_GLOB, shard_name
from ..engine.config import QTuningConfig
from ..errors import AnalysisError
from ..files import atomic_write_text, check_output_folder
from .analyze_config import AnalyzeConfig


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

    from ..data import collate, tokenize_record
    from ..engine.scoring import sample_scores, shift_labels
    from ..modeling.probe import score_batch

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
