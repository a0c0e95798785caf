"""Cost of `plan_batch` as a fraction of one no-grad forward of SmolLM2-135M over the same batch.

    .venv/bin/python benchmarks/selection_overhead.py [--forward-batches 8 64]

For B in {8, 64, 512, 4096} x T = 512, times `plan_batch` (stage 1 and stage 2, default
settings) on realistic score tensors (half of each row is prompt, ragged lengths). The forward
of the real model (full logits, fp32, no grad) is measured only for the B given in
--forward-batches and extrapolated linearly in B for the larger ones (the output says which).
Writes benchmarks/results/selection_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from qtuning import QTuningConfig, plan_batch

RESULTS = Path(__file__).parent / "results"
SEQ = 512


def realistic_scores(batch: int, seq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    prompts = (lengths.float() * torch.rand(batch, generator=g) * 0.6).long()
    pos = torch.arange(seq).unsqueeze(0)
    attention = pos < lengths.unsqueeze(1)
    loss_mask = attention & (pos >= prompts.unsqueeze(1))
    nll = torch.distributions.Gamma(0.7, 0.5).sample((batch, seq)).float()  # heavy-tailed, like real NLLs
    entropy = torch.rand(batch, seq, generator=g) * 4
    return nll, entropy, loss_mask, attention


def time_plan(batch: int, repeats: int) -> float:
    nll, ent, mask, attn = realistic_scores(batch, SEQ)
    cfg = QTuningConfig()
    plan_batch(nll, ent, mask, cfg, attention_mask=attn)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        plan_batch(nll, ent, mask, cfg, attention_mask=attn)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_forward(model, batch: int, repeats: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, SEQ))
    attn = torch.ones_like(ids)
    times = []
    with torch.no_grad():
        model(input_ids=ids[:1, :32], attention_mask=attn[:1, :32])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=attn)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 512, 4096])
    parser.add_argument("--forward-batches", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    from qtuning.data.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(args.model)
    model.eval()
    forward = {}
    for b in args.forward_batches:
        forward[b] = time_forward(model, b, repeats=2 if b <= 8 else 1)
        print(f"measured forward B={b} x T={SEQ}: {forward[b]:.2f} s")
    largest = max(forward)
    per_sample = forward[largest] / largest

    rows = []
    print(f"\n{'B':>5s} {'plan_batch ms':>14s} {'forward s':>10s} {'':>13s} {'plan / forward':>15s}")
    for b in args.batches:
        plan_s = time_plan(b, repeats=max(3, min(200, 4096 // b)))
        measured = b in forward
        fwd = forward[b] if measured else per_sample * b
        how = "measured" if measured else "extrapolated"
        rows.append(
            {"batch": b, "seq": SEQ, "plan_s": plan_s, "forward_s": fwd, "forward": how, "fraction": plan_s / fwd}
        )
        print(f"{b:5d} {plan_s * 1e3:14.2f} {fwd:10.2f} {'(' + how + ')':>13s} {plan_s / fwd:15.5%}")
    print(f"\nforward for B not measured = B x {per_sample:.3f} s (per-sample time at B={largest}, linear)")
    goal = all(r["fraction"] < 0.01 for r in rows if r["batch"] in (8, 64))
    print(f"goal (< 1% at B = 8 and 64): {'met' if goal else 'NOT met'}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "selection_overhead",
        "threads": torch.get_num_threads(),
        "rows": rows,
        "forward_extrapolated_from_batch": largest,
        "goal_met": goal,
    }
    (RESULTS / "selection_overhead.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / 'selection_overhead.json'}")


if __name__ == "__main__":
    main()
