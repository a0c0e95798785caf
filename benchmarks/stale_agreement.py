"""How far do stale scores move the selection over a real multi-epoch run?

    .venv/bin/python benchmarks/stale_agreement.py RUN_DIR [RUN_DIR ...] [--fractions 0 0.25 0.5]

Reads the plan logs of multi-epoch runs trained with FRESH scores (scoring: probe), which record
every pool's sample ids and their per-sample (PPL, entropy) at that step. For each pool it then
replays what `scoring: stale` would have had at the same step, on the same batches and the same
model weights:
  - a score cache by row id, as `qtuning.stale` keeps it: a row is cached when it is probed, and
    refreshed when it is kept (its training forward gives its scores at that step; with LoRA
    dropout 0 those equal the probe's, up to the probe's bf16 autocast);
  - rows never seen are probed; of the cached rows, round(fraction x cached) drawn at random are
    probed afresh (`stale_reprobe_fraction`); the rest are selected with their cached scores;
  - the kept set from those scores against the kept set from the fresh scores of the log
    (Jaccard = |both| / |either|, summed over the pools that held at least one cached row).
Both selections run through `qtuning.selection.select_samples` with the run's ratios (paper
thresholds). As a check, the fresh selection recomputed from the log's (rounded) scores must match
the logged kept set. For scale: two random 4-of-16 sets agree about 0.14.

This measures agreement on the fresh run's trajectory; a stale run follows its own trajectory,
whose selection differs by more than this only through the training it does differently.
Writes benchmarks/results/stale_agreement.json (or --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from qtuning import QTuningConfig
from qtuning.plan_log import read_run_plans
from qtuning.selection import select_samples
from qtuning.stale import rows_to_probe

RESULTS = Path(__file__).parent / "results"


def kept_ids(ids: list[int], ppl: torch.Tensor, entropy: torch.Tensor, valid: torch.Tensor, cfg) -> set[int]:
    """The row ids Q-Tuning keeps from one pool. ppl, entropy: (N,) float64; valid: (N,) bool."""
    keep = select_samples(ppl, entropy, valid, cfg).kept_role != 0  # (N,)
    return {i for i, k in zip(ids, keep.tolist()) if k}


def replay(plans: list[dict], cfg: QTuningConfig, fraction: float, seed: int = 0) -> dict:
    """Replay one run's pools with a stale score cache; the agreement of stale and fresh kept sets."""
    generator = torch.Generator().manual_seed(seed)
    cache: dict[int, tuple[float, float]] = {}  # row id -> (ppl, entropy) when last scored
    seen_epoch: dict[int, int] = {}  # row id -> how many times it has been drawn
    both = either = 0
    per_epoch: dict[int, list[int]] = {}  # epoch -> [|both|, |either|]
    pools_with_cache = logged_match = stale_rows = cached_rows = 0
    for plan in plans:
        samples = plan["samples"]
        ids = [int(i) for i in samples["id"]]
        ppl = torch.tensor(samples["ppl"], dtype=torch.float64)  # (N,)
        entropy = torch.tensor(samples["entropy"], dtype=torch.float64)  # (N,)
        valid = torch.tensor([t > 0 for t in samples["trainable_tokens"]])  # (N,)
        fresh = kept_ids(ids, ppl, entropy, valid, cfg)
        logged = {i for i, role in zip(ids, samples["role"]) if role != 0}
        logged_match += fresh == logged
        have = torch.tensor([i in cache for i in ids])  # (N,)
        probe = rows_to_probe(have, fraction, generator)  # (N,)
        stale_ppl, stale_entropy = ppl.clone(), entropy.clone()
        for b, row_id in enumerate(ids):
            if not probe[b]:
                stale_ppl[b], stale_entropy[b] = cache[row_id]
        stale = kept_ids(ids, stale_ppl, stale_entropy, valid, cfg)
        if have.any():
            pools_with_cache += 1
            cached_rows += int(have.sum())
            stale_rows += int((~probe).sum())
            both += len(stale & fresh)
            either += len(stale | fresh)
            epoch = 1 + max(seen_epoch.get(i, 0) for i in ids)
            counts = per_epoch.setdefault(epoch, [0, 0])
            counts[0] += len(stale & fresh)
            counts[1] += len(stale | fresh)
        for b, row_id in enumerate(ids):  # what the cache holds after this step
            if probe[b] or row_id in stale:
                cache[row_id] = (float(ppl[b]), float(entropy[b]))
            seen_epoch[row_id] = seen_epoch.get(row_id, 0) + 1
    return {
        "pools": len(plans),
        "pools_with_cached_rows": pools_with_cache,
        "fresh_recomputed_matches_log": logged_match / max(1, len(plans)),
        "stale_row_share": stale_rows / max(1, cached_rows),
        "jaccard": both / either if either else None,  # None: no pool held a cached row (one epoch)
        "jaccard_by_epoch": {str(e): c[0] / max(1, c[1]) for e, c in sorted(per_epoch.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="output_dir of multi-epoch runs trained with scoring: probe")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--sample-ratio", type=float, default=0.25)
    parser.add_argument("--token-ratio", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS / "stale_agreement.json")
    args = parser.parse_args()
    cfg = QTuningConfig(sample_ratio=args.sample_ratio, token_ratio=args.token_ratio)
    runs = {}
    for run in args.runs:
        plans = read_run_plans(run)
        runs[run] = {str(f): replay(plans, cfg, f) for f in args.fractions}
        for f, r in runs[run].items():
            if r["jaccard"] is None:
                print(f"{run}: no row is drawn twice (one epoch?): nothing to compare")
                break
            epochs = ", ".join(f"epoch {e} {j:.3f}" for e, j in r["jaccard_by_epoch"].items())
            print(
                f"{run}  reprobe {f}: Jaccard {r['jaccard']:.3f} ({epochs}); stale rows {r['stale_row_share']:.2f};"
                f" fresh recomputed = log in {r['fresh_recomputed_matches_log']:.1%} of {r['pools']} pools"
            )
    result = {
        "benchmark": "stale_agreement",
        "sample_ratio": args.sample_ratio,
        "token_ratio": args.token_ratio,
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
