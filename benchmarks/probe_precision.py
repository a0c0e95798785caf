"""Does a bf16 probe make the same plans as an fp32 probe? Real batches, SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/probe_precision.py [--rows 256] [--batch 16]

Scores the same real Alpaca batches twice, in fp32 and under bf16 autocast (what
probe_precision=bf16, and auto on bf16-capable hardware, do; the vocabulary softmax stays fp32 in
both), plans each with the default settings, and counts how often the kept samples, their roles
and the token masks agree. Writes benchmarks/results/probe_precision.json.
"""

import argparse
import json
from pathlib import Path

import torch

from qtuning import QTuningConfig
from qtuning.data import collate, load_records, split_records, tokenize_record
from qtuning.data.models import load_model_and_tokenizer
from qtuning.engine.selection import plan_batch
from qtuning.modeling.probe import score_batch

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    records, _ = load_records("alpaca-demo")
    records, _ = split_records(records, 0.0, seed=1, max_train=args.rows)
    features = [tokenize_record(tokenizer, r, 256) for r in records]
    cfg = QTuningConfig()
    batches = same_kept = same_roles = same_masks = 0
    tokens = tokens_differing = 0
    nll_error = []
    for start in range(0, len(features), args.batch):
        b = collate(features[start : start + args.batch], tokenizer.pad_token_id)
        fp32, mask, attention = score_batch(model, b["input_ids"], b["attention_mask"], b["labels"], sub_batch_size=4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _, _ = score_batch(model, b["input_ids"], b["attention_mask"], b["labels"], sub_batch_size=4)
        a = plan_batch(fp32.nll, fp32.entropy, mask, cfg, attention)
        c = plan_batch(bf16.nll, bf16.entropy, mask, cfg, attention)
        batches += 1
        same_kept += torch.equal(a.sample_keep, c.sample_keep)
        same_roles += torch.equal(a.kept_role, c.kept_role)
        same_masks += torch.equal(a.token_keep, c.token_keep)
        both = a.sample_keep & c.sample_keep
        tokens += int(mask[both].sum())
        tokens_differing += int((a.token_keep[both] != c.token_keep[both]).sum())
        nll_error.append((fp32.nll - bf16.nll).abs()[mask].mean().item())
    result = {
        "benchmark": "probe_precision",
        "batches": batches,
        "batch": args.batch,
        "same_kept_samples": same_kept,
        "same_roles": same_roles,
        "same_token_masks": same_masks,
        "kept_tokens_compared": tokens,
        "token_decisions_differing": tokens_differing,
        "mean_abs_token_nll_difference": sum(nll_error) / len(nll_error),
    }
    print(
        f"{batches} real batches of {args.batch}: same kept samples in {same_kept}, same roles in {same_roles}, "
        f"same token masks in {same_masks}; {tokens_differing} of {tokens} token decisions of jointly kept samples "
        f"differ ({tokens_differing / max(1, tokens):.2%}); mean |NLL fp32 - bf16| {result['mean_abs_token_nll_difference']:.4f} nats"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "probe_precision.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
