"""What a larger selection pool buys: the kept set of the same samples under pools of 8, 32, 128.

    .venv/bin/python benchmarks/pool_stability.py [--rows 512] [--shuffles 5]

1. SmolLM2-135M-Instruct scores `--rows` real Alpaca rows once (PPL and Ent per sample).
2. The whole-dataset selection (one pool of all rows) is the reference kept set.
3. For each pool size and each shuffle, the rows are cut into pools of that size, each pool
   selects on its own (stage 1, docs/algorithm.md section 3), and the union of the kept sets is compared with
   the reference (Jaccard overlap), and with the other shuffles at the same pool size.
Also prints how the pools' mid thresholds spread, and the bytes per sample that the "global" /
"accumulation" pools send across processes. Writes benchmarks/results/pool_stability.json.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import torch

from qtuning import QTuningConfig
from qtuning.engine.selection import prepare_scores
from qtuning.insight.stability import pool_stability, spearman
from qtuning.training.distributed import _shareable

RESULTS = Path(__file__).parent / "results"


def score_rows(model_name: str, rows: int, max_length: int, batch: int):
    from tqdm import tqdm

    from qtuning.data import collate, load_records, split_records, tokenize_record
    from qtuning.data.models import load_model_and_tokenizer
    from qtuning.modeling.probe import score_batch

    model, tokenizer = load_model_and_tokenizer(model_name)
    records, _ = load_records("alpaca-demo")
    records, _ = split_records(records, 0.0, seed=0, max_train=rows)
    features = [tokenize_record(tokenizer, r, max_length) for r in records]
    cfg = QTuningConfig()
    ppl, ent, valid, parts = [], [], [], []
    for start in tqdm(range(0, len(features), batch), desc="scoring", unit="batch"):
        b = collate(features[start : start + batch], tokenizer.pad_token_id)
        scores, loss_mask, attention = score_batch(
            model, b["input_ids"], b["attention_mask"], b["labels"], sub_batch_size=4
        )
        part = prepare_scores(scores.nll, scores.entropy, loss_mask, cfg, attention)
        parts.append(part)
        ppl.append(part.scores.ppl)
        ent.append(part.scores.entropy)
        valid.append(part.scores.has_response)
    return torch.cat(ppl), torch.cat(ent), torch.cat(valid), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--pools", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--shuffles", type=int, default=5)
    parser.add_argument("--sample-ratio", type=float, default=0.25)
    args = parser.parse_args()

    ppl, ent, valid, parts = score_rows(args.model, args.rows, args.max_length, batch=16)
    n = ppl.shape[0]
    cfg = QTuningConfig(sample_ratio=args.sample_ratio)
    # The threshold stability test of `qtuning analyze` (qtuning.insight.analyze), with whole pools only.
    result = pool_stability(
        ppl, ent, valid, [(str(p), p) for p in args.pools], cfg, shuffles=args.shuffles, seed=0, include_remainder=False
    )
    reference = result.reference.kept()
    whole = result.reference.pools[0]
    print(
        f"{n} rows scored; whole-dataset selection keeps {len(reference)} "
        f"(PPL line {whole['ppl_mid']:.3f}, Ent line {whole['ent_mid']:.3f})"
    )
    print(f"PPL/Ent rank correlation over the rows: {spearman(ppl, ent):.3f}")

    keys = (
        "pool",
        "jaccard_vs_whole_mean",
        "jaccard_vs_whole_sd",
        "jaccard_across_shuffles_mean",
        "ppl_line_sd",
        "ent_line_sd",
        "kept_mean",
    )
    rows = [{k: (int(r[k]) if k == "pool" else r[k]) for k in keys} for r in result.rows]
    print(
        f"\n{'pool':>5s} {'Jaccard vs whole':>17s} {'Jaccard across shuffles':>24s} "
        f"{'PPL line sd':>12s} {'Ent line sd':>12s}"
    )
    for row in rows:
        print(
            f"{row['pool']:5d} {row['jaccard_vs_whole_mean']:11.3f} +- {row['jaccard_vs_whole_sd']:.3f} "
            f"{row['jaccard_across_shuffles_mean'] or 0.0:24.3f} {row['ppl_line_sd']:12.3f} "
            f"{row['ent_line_sd']:12.3f}"
        )

    light = pickle.dumps([_shareable(p, cfg) for p in parts[:1]])
    heavy = pickle.dumps([_shareable(p, QTuningConfig(token_budget="batch")) for p in parts[:1]])
    per_sample = {
        "per_sample_budget": len(light) / parts[0].scores.ppl.shape[0],
        "batch_budget": len(heavy) / parts[0].scores.ppl.shape[0],
    }
    print(
        f"\ngathered per sample (pickled, a micro-batch of {parts[0].scores.ppl.shape[0]} rows of up to "
        f"{parts[0].loss_mask.shape[1]} positions): {per_sample['per_sample_budget']:.0f} B with the per-sample "
        f"token budget, {per_sample['batch_budget']:.0f} B with the batch budget"
    )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "pool_stability",
        "rows": n,
        "sample_ratio": args.sample_ratio,
        "shuffles": args.shuffles,
        "whole_dataset_kept": len(reference),
        "spearman_ppl_ent": spearman(ppl, ent),
        "pools": rows,
        "gathered_bytes_per_sample": per_sample,
    }
    (RESULTS / "pool_stability.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'pool_stability.json'}")


if __name__ == "__main__":
    main()
