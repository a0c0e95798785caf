"""Would a truncated probe do? Score only the first K response tokens of each sample, select with
those scores, and compare the kept samples with the full probe's, on the same pools.

    .venv/bin/python benchmarks/truncated_probe.py [--rows 256] [--ks 16 32 64]

1. SmolLM2-135M-Instruct scores `--rows` real TRAINING rows of each data set once (per-token NLL and
   entropy). A causal model's scores at the first K response positions do not depend on what comes
   after them, so the truncated probe's scores are those of the full probe at those positions: the
   selection of a truncated probe is computed exactly from the full one.
2. Per pool of 16 (one batch), Q-Tuning's plan (25% x 50%, the defaults) from all response tokens
   and from the first K only; the agreement of the kept sets is Jaccard = |both| / |either|, summed
   over the pools.
3. The cost, on the first `--timed-pools` pools: the probe forward with each row cut after its K-th
   response token against the whole batch, timed in the same run, alternating, best of 2 per batch.
Writes benchmarks/results/truncated_probe.json. The data are training rows only (arith: records
0-255; the evaluation items are 4000-4249).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from qtuning import QTuningConfig, plan_batch

RESULTS = Path(__file__).parent / "results"


def first_k(loss_mask: torch.Tensor, k: int) -> torch.Tensor:
    """The first k response positions of each row. loss_mask: (B, T) bool -> (B, T) bool."""
    return loss_mask & (loss_mask.long().cumsum(dim=1) <= k)


def cut_after(batch: dict, mask: torch.Tensor) -> tuple[dict, int]:
    """The batch with each row ending at its last position in `mask` (B, T, shifted grid: position t
    predicts token t + 1), and the width the longest such row needs. Rows without a response keep
    their length. The probe's length-sorted sub-batches then trim to prompt + k, not the response."""
    from qtuning.engine.scoring import IGNORE_INDEX, shift_labels

    columns = torch.arange(mask.shape[1])
    last = torch.where(mask, columns, -1).max(dim=1).values  # (B,)
    row_end = torch.where(last >= 0, last + 2, batch["attention_mask"].sum(dim=1))  # (B,)
    attention_mask = batch["attention_mask"] * (columns[None, :] < row_end[:, None])  # (B, T)
    labels = torch.where(attention_mask.bool(), batch["labels"], IGNORE_INDEX)
    assert (shift_labels(labels) != IGNORE_INDEX).sum() == mask.sum()
    return {**batch, "attention_mask": attention_mask, "labels": labels}, int(row_end.max())


def timed_probe(model, batch: dict, width: int, repeats: int = 2) -> float:
    """Best-of-`repeats` seconds of the no-grad probe on the batch's first `width` columns."""
    from qtuning.modeling.probe import score_batch

    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        score_batch(
            model,
            batch["input_ids"][:, :width],
            batch["attention_mask"][:, :width],
            batch["labels"][:, :width],
            sub_batch_size=4,
        )
        best = min(best, time.perf_counter() - started)
    return best


def measure(
    model, tokenizer, data: str, rows: int, ks: list[int], max_length: int, batch_size: int, timed_pools: int
) -> dict:
    from tqdm import tqdm

    from qtuning.data import collate, load_records, tokenize_record
    from qtuning.modeling.probe import score_batch

    records, _ = load_records(data)
    features = [tokenize_record(tokenizer, r, max_length) for r in records[:rows]]
    cfg = QTuningConfig()
    both = {k: 0 for k in ks}
    either = {k: 0 for k in ks}
    seconds = {"full": 0.0, **{k: 0.0 for k in ks}}
    response_lengths = []
    starts = range(0, len(features) - batch_size + 1, batch_size)
    for pool, start in enumerate(tqdm(starts, desc=data, unit="pool")):
        timed = pool < timed_pools
        batch = collate(features[start : start + batch_size], tokenizer.pad_token_id)
        scores, loss_mask, attention = score_batch(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"], sub_batch_size=4
        )
        response_lengths += loss_mask.sum(dim=1).tolist()
        full = plan_batch(scores.nll, scores.entropy, loss_mask, cfg, attention_mask=attention).sample_keep
        width = batch["input_ids"].shape[1]
        if timed:
            seconds["full"] += timed_probe(model, batch, width)
        for k in ks:
            mask = first_k(loss_mask, k)  # (B, T) on the shifted grid
            short = plan_batch(scores.nll, scores.entropy, mask, cfg, attention_mask=attention).sample_keep
            both[k] += int((full & short).sum())
            either[k] += int((full | short).sum())
            if timed:
                seconds[k] += timed_probe(model, *cut_after(batch, mask))
    lengths = torch.tensor(response_lengths, dtype=torch.float)
    return {
        "rows": len(response_lengths),
        "median_response_tokens": float(lengths.median()),
        "by_k": {
            str(k): {
                "jaccard_vs_full_probe": round(both[k] / max(1, either[k]), 4),
                "probe_time_ratio": round(seconds[k] / seconds["full"], 4),
            }
            for k in ks
        },
        "timed_pools": min(timed_pools, len(starts)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", nargs="+", default=["alpaca-demo", "arith-steps"])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--timed-pools", type=int, default=4)
    args = parser.parse_args()

    from qtuning.data.models import load_model_and_tokenizer

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(args.model)
    model.eval()
    result = {"model": args.model, "pool": 16, "sample_ratio": 0.25, "token_ratio": 0.5, "data": {}}
    for data in args.data:
        result["data"][data] = measure(
            model, tokenizer, data, args.rows, args.ks, args.max_length, 16, args.timed_pools
        )
        d = result["data"][data]
        print(f"{data}: {d['rows']} rows, median response {d['median_response_tokens']:.0f} tokens")
        for k, v in d["by_k"].items():
            print(
                f"  first {k:>3} response tokens: kept-set Jaccard vs full probe {v['jaccard_vs_full_probe']:.3f}, "
                f"probe time {v['probe_time_ratio']:.3f} of the full probe"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "truncated_probe.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS / 'truncated_probe.json'}")


if __name__ == "__main__":
    main()
