"""Selection in pools and how stable it is: pools of N cut from the scored samples (stage 1 per pool), the kept
sets against the whole-dataset selection (Jaccard), the spread of the pools' thresholds, quadrant shares,
the failure signatures and example rows per quadrant."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from itertools import combinations

import torch

from ..engine import signatures
from ..engine.config import QTuningConfig
from ..engine.selection import Role, select_samples
from ..errors import AnalysisError


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
