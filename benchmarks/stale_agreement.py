"""How far do stale scores move the selection over a real multi-epoch run?

    .venv/bin/python benchmarks/stale_agreement.py RUN_DIR [RUN_DIR ...] [--fractions 0 0.25 0.5]

Reads the plan logs of multi-epoch runs trained with FRESH scores (scoring: probe), which record
every pool's sample ids and their per-sample (PPL, entropy) at that step. For each pool it then
replays what `scoring: stale` would have had at the same step, on the same batches and the same
model weights:
  - a score cache by row id, as `qtuning.training.stale` keeps it: a row is cached when it is probed, and
    refreshed when it is kept (its training forward gives its scores at that step; with LoRA
    dropout 0 those equal the probe's, up to the probe's bf16 autocast);
  - rows never seen are probed; of the cached rows, round(fraction x cached) drawn at random are
    probed afresh (`stale_reprobe_fraction`); the rest are selected with their cached scores;
  - the kept set from those scores against the kept set from the fresh scores of the log
    (Jaccard = |both| / |either|, summed over the pools that held at least one cached row),
    averaged over `--draws` seeds of the re-probe draw (its range is reported too).
Both selections run through `qtuning.engine.selection.select_samples` with the run's ratios (paper
thresholds). As a check, the fresh selection recomputed from the log's (rounded) scores must match
the logged kept set. For scale: two random 4-of-16 sets agree about 0.14.

This measures agreement on the fresh run's trajectory; a stale run follows its own trajectory,
whose selection differs by more than this only through the training it does differently.
Writes benchmarks/results/stale_agreement.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from qtuning import QTuningConfig
from qtuning.data.plan_log import read_run_plans
from qtuning.engine.selection import select_samples
from qtuning.insight.stability import spearman
from qtuning.training.stale import rows_to_probe

RESULTS = Path(__file__).parent / "results"
DRIFT_WINDOW = 64  # re-probed rows whose score change sets the drift rate (replay(drift=True))


def kept_ids(ids: list[int], ppl: torch.Tensor, entropy: torch.Tensor, valid: torch.Tensor, cfg) -> set[int]:
    """The row ids Q-Tuning keeps from one pool. ppl, entropy: (N,) float64; valid: (N,) bool."""
    keep = select_samples(ppl, entropy, valid, cfg).kept_role != 0  # (N,)
    return {i for i, k in zip(ids, keep.tolist()) if k}


def replay(plans: list[dict], cfg: QTuningConfig, fraction: float, seed: int = 0, drift: bool = False) -> dict:
    """Replay one run's pools with a stale score cache; the agreement of stale and fresh kept sets.

    drift: correct each stale row's scores for the model's drift since they were cached, at the
    rate (per step of age) that the re-probed rows of the last DRIFT_WINDOW observations show:
    log PPL + rate x age, entropy + rate x age (an idea measured here, not built)."""
    generator = torch.Generator().manual_seed(seed)
    cache: dict[int, tuple[float, float, int]] = {}  # row id -> (log ppl, entropy, pool index) when last scored
    draws: dict[int, int] = {}  # row id -> how many times it has been drawn
    moves: list[tuple[float, float, int]] = []  # re-probed rows: (d log ppl, d entropy, age in pools)
    per_epoch: dict[int, list[int]] = {}  # epoch -> [|both|, |either|]
    pools_with_cache = logged_match = stale_rows = cached_rows = 0
    for index, plan in enumerate(plans):
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
        for b, row_id in enumerate(ids):
            if probe[b] and have[b]:
                old_log_ppl, old_entropy, when = cache[row_id]
                moves.append((math.log(ppl[b]) - old_log_ppl, float(entropy[b]) - old_entropy, index - when))
        recent = moves[-DRIFT_WINDOW:]
        age_sum = sum(m[2] for m in recent)
        rate_log_ppl = sum(m[0] for m in recent) / age_sum if drift and age_sum else 0.0
        rate_entropy = sum(m[1] for m in recent) / age_sum if drift and age_sum else 0.0
        stale_ppl, stale_entropy = ppl.clone(), entropy.clone()
        for b, row_id in enumerate(ids):
            if not probe[b]:
                old_log_ppl, old_entropy, when = cache[row_id]
                stale_ppl[b] = math.exp(old_log_ppl + rate_log_ppl * (index - when))
                stale_entropy[b] = old_entropy + rate_entropy * (index - when)
        stale = kept_ids(ids, stale_ppl, stale_entropy, valid, cfg)
        if have.any():
            pools_with_cache += 1
            cached_rows += int(have.sum())
            stale_rows += int((~probe).sum())
            epoch = 1 + max(draws.get(i, 0) for i in ids)
            counts = per_epoch.setdefault(epoch, [0, 0])
            counts[0] += len(stale & fresh)
            counts[1] += len(stale | fresh)
        for b, row_id in enumerate(ids):  # what the cache holds after this step
            if probe[b] or row_id in stale:
                cache[row_id] = (math.log(ppl[b]), float(entropy[b]), index)
            draws[row_id] = draws.get(row_id, 0) + 1
    both, either = (sum(c[k] for c in per_epoch.values()) for k in (0, 1))
    return {
        "pools": len(plans),
        "pools_with_cached_rows": pools_with_cache,
        "fresh_recomputed_matches_log": logged_match / max(1, len(plans)),
        "stale_row_share": stale_rows / max(1, cached_rows),
        "jaccard": both / either if either else None,  # None: no pool held a cached row (one epoch)
        "jaccard_by_epoch": {str(e): c[0] / max(1, c[1]) for e, c in sorted(per_epoch.items())},
    }


def score_movement(plans: list[dict]) -> dict:
    """How a row's scores move between its draws: Spearman correlation, over every repeated draw, of
    its previous (log PPL, entropy) with the new ones, and the median log-PPL change."""
    last: dict[int, tuple[float, float]] = {}
    old_ppl, new_ppl, old_entropy, new_entropy = [], [], [], []
    for plan in plans:
        samples = plan["samples"]
        for row_id, ppl, entropy in zip(samples["id"], samples["ppl"], samples["entropy"]):
            if row_id in last:
                old_ppl.append(last[row_id][0])
                new_ppl.append(math.log(ppl))
                old_entropy.append(last[row_id][1])
                new_entropy.append(entropy)
            last[row_id] = (math.log(ppl), entropy)
    if not old_ppl:
        return {}
    change = torch.tensor(new_ppl) - torch.tensor(old_ppl)
    return {
        "repeated_draws": len(old_ppl),
        "spearman_log_ppl": spearman(torch.tensor(old_ppl), torch.tensor(new_ppl)),
        "spearman_entropy": spearman(torch.tensor(old_entropy), torch.tensor(new_entropy)),
        "median_log_ppl_change": float(change.median()),
    }


def averaged(plans: list[dict], cfg: QTuningConfig, fraction: float, draws: int, drift: bool = False) -> dict:
    """`replay` over `draws` re-probe draws (seeds 0..draws-1): the mean agreement and its range."""
    results = [replay(plans, cfg, fraction, seed, drift) for seed in range(draws)]
    out = dict(results[0])
    if out["jaccard"] is None:
        return out
    values = [r["jaccard"] for r in results]
    out["jaccard"] = sum(values) / draws
    out["jaccard_min"], out["jaccard_max"] = min(values), max(values)
    out["jaccard_by_epoch"] = {
        e: sum(r["jaccard_by_epoch"][e] for r in results) / draws for e in results[0]["jaccard_by_epoch"]
    }
    out["stale_row_share"] = sum(r["stale_row_share"] for r in results) / draws
    out["draws"] = draws
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="output_dir of multi-epoch runs trained with scoring: probe")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--draws", type=int, default=20, help="re-probe draws (generator seeds) averaged over")
    parser.add_argument("--sample-ratio", type=float, default=0.25)
    parser.add_argument("--token-ratio", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS / "stale_agreement.json")
    args = parser.parse_args()
    cfg = QTuningConfig(sample_ratio=args.sample_ratio, token_ratio=args.token_ratio)
    runs = {}
    for run in args.runs:
        plans = read_run_plans(run)
        movement = score_movement(plans)
        runs[run] = {"score_movement": movement, "stale": {}, "stale_drift_corrected": {}}
        if movement:
            print(
                f"{run}: {movement['repeated_draws']} repeated draws; previous vs fresh scores: Spearman "
                f"log PPL {movement['spearman_log_ppl']:.3f}, entropy {movement['spearman_entropy']:.3f}; "
                f"median log-PPL change {movement['median_log_ppl_change']:+.3f}"
            )
        for variant, drift in (("stale", False), ("stale_drift_corrected", True)):
            for f in args.fractions:
                r = averaged(plans, cfg, f, args.draws, drift)
                runs[run][variant][str(f)] = r
                if r["jaccard"] is None:
                    print(f"{run}: no row is drawn twice (one epoch?): nothing to compare")
                    break
                epochs = ", ".join(f"epoch {e} {j:.3f}" for e, j in r["jaccard_by_epoch"].items())
                print(
                    f"  {variant:21s} reprobe {f}: Jaccard {r['jaccard']:.3f} (over {args.draws} draws "
                    f"{r['jaccard_min']:.3f}-{r['jaccard_max']:.3f}; {epochs}); stale rows "
                    f"{r['stale_row_share']:.2f}; fresh recomputed = log in {r['fresh_recomputed_matches_log']:.0%}"
                    f" of {r['pools']} pools"
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
