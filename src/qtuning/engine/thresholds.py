"""The quantile thresholds of the EU plane and the corners they cut (docs/algorithm.md section 3).

Pure torch on float64 CPU tensors. `bisect_thresholds` searches the quantile level that puts a
target fraction of a set of (PPL, Ent) points into the two kept corners; `corner_membership`
applies thresholds to any points. Q-Tuning's selection uses both on the same pool; the
score-history variant (`qtuning.engine.history`) searches over a window of recent points and applies the
result to the current pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass(frozen=True)
class Thresholds:
    """The last bisection iterate: quantile levels, the lines they give, and how it ended."""

    alpha: float  # quantile level on the PPL axis
    beta: float  # quantile level on the entropy axis
    ppl_lo: float
    ppl_hi: float
    ent_lo: float
    ent_hi: float
    iterations: int
    converged: bool  # |kept fraction - target| < tolerance at the last iterate
    kept_fraction: float  # fraction of the searched points in the kept corners at the last iterate

    # The scalars a selection reports, by their logged names, in their logged order (the plan log, the
    # trainer's log metrics, `qtuning analyze`): the one list of them. SampleSelection and
    # SelectionPlan read each as an attribute of their own (plan.alpha, plan.bisection_kept_fraction).
    SCALARS: ClassVar[dict[str, str]] = {
        "alpha": "final quantile level on the PPL axis",
        "beta": "final quantile level on the entropy axis",
        "ppl_lo": "low PPL threshold of the last iterate",
        "ppl_hi": "high PPL threshold of the last iterate",
        "ent_lo": "low entropy threshold of the last iterate",
        "ent_hi": "high entropy threshold of the last iterate",
        "ppl_mid": "quadrant line on the PPL axis, (ppl_lo + ppl_hi) / 2",
        "ent_mid": "quadrant line on the entropy axis, (ent_lo + ent_hi) / 2",
        "iterations": "bisection iterates computed",
        "converged": "the last iterate was within the tolerance",
        "bisection_kept_fraction": "kept fraction of the last iterate, before the supplement",
    }

    @classmethod
    def none(cls, *, converged: bool = False, kept_fraction: float = 0.0) -> Thresholds:
        """No bisection ran (an empty pool, a baseline, full-data training): every line at 0.

        Args:
            converged: The `converged` flag to report.
            kept_fraction: The `kept_fraction` to report.

        Returns:
            Thresholds with every level and line at 0 and 0 iterations.
        """
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, converged, kept_fraction)

    @property
    def ppl_mid(self) -> float:
        """The quadrant line on the PPL axis."""
        return (self.ppl_lo + self.ppl_hi) / 2

    @property
    def ent_mid(self) -> float:
        """The quadrant line on the entropy axis."""
        return (self.ent_lo + self.ent_hi) / 2

    @property
    def bisection_kept_fraction(self) -> float:
        """`kept_fraction` by its logged name."""
        return self.kept_fraction

    def scalars(self) -> dict[str, float | int | bool]:
        """SCALARS -> their values, in the logged order.

        Returns:
            Name -> value for each of SCALARS.
        """
        return {name: getattr(self, name) for name in self.SCALARS}


def quantile_sorted(sorted_values: list[float], q: float) -> float:
    """The q-quantile of ascending values with linear interpolation, as numpy computes it.

    Args:
        sorted_values: The values, ascending, at least one.
        q: The quantile level, in [0, 1].

    Returns:
        The interpolated quantile.
    """
    n = len(sorted_values)
    position = q * (n - 1)
    below = min(max(math.floor(position), 0), n - 1)
    above = min(below + 1, n - 1)
    gamma = position - below
    a, b = sorted_values[below], sorted_values[above]
    diff = b - a
    # numpy's _lerp: interpolate from the nearer end, for accuracy.
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def corner_flags(kept_quadrants: str) -> tuple[bool, bool]:
    """Which entropy half each kept corner lies in, for a kept_quadrants value.

    Args:
        kept_quadrants: "q2_q4" (the method), "q1_q4" or "q2_q3" (ablations).

    Returns:
        (high-PPL corner has LOW entropy, low-PPL corner has HIGH entropy): q2_q4 -> (True, True).
    """
    return kept_quadrants in ("q2_q4", "q2_q3"), kept_quadrants in ("q2_q4", "q1_q4")


def corner_closeness(
    p_hat: torch.Tensor, e_hat: torch.Tensor, kept_quadrants: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """How deep points lie toward each kept corner; the supplement and the history trimming rank by it.

    Args:
        p_hat: (B,) PPL, min-max normalised to [0, 1] (over the pool, or over the score window).
        e_hat: (B,) entropy, normalised the same way.
        kept_quadrants: "q2_q4", "q1_q4" or "q2_q3".

    Returns:
        (toward the high-PPL kept corner, toward the low-PPL one), (B,) each; for Q2/Q4 these are
        p - e and e - p.
    """
    high_low_ent, low_high_ent = corner_flags(kept_quadrants)
    toward_high = p_hat - e_hat if high_low_ent else p_hat + e_hat - 1
    toward_low = e_hat - p_hat if low_high_ent else 1 - p_hat - e_hat
    return toward_high, toward_low


def corner_membership(
    ppl: torch.Tensor, ent: torch.Tensor, valid: torch.Tensor, t: Thresholds, kept_quadrants: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which points lie in the kept corners that thresholds `t` cut.

    Args:
        ppl: (B,) float PPL.
        ent: (B,) float entropy.
        valid: (B,) bool; invalid points are in no corner.
        t: The thresholds (ppl_lo, ppl_hi, ent_lo, ent_hi are read).
        kept_quadrants: "q2_q4", "q1_q4" or "q2_q3".

    Returns:
        (in the high-PPL kept corner, in the low-PPL kept corner), each (B,) bool.
    """
    high_low_ent, low_high_ent = corner_flags(kept_quadrants)
    in_high = valid & (ppl > t.ppl_hi) & ((ent <= t.ent_lo) if high_low_ent else (ent > t.ent_hi))
    in_low = valid & (ppl <= t.ppl_lo) & ((ent > t.ent_hi) if low_high_ent else (ent <= t.ent_lo))
    return in_high, in_low


def bisect_thresholds(
    ppl: torch.Tensor,
    ent: torch.Tensor,
    target: float,
    *,
    max_iters: int,
    tolerance: float,
    upper: float,
    kept_quadrants: str,
) -> Thresholds:
    """Bisection over one quantile level for both axes (docs/algorithm.md section 3).

    Iterate a = (lo + hi) / 2 from [0, upper]; the lines are the a / 1-a quantiles of each axis; stop once the fraction of points in
    the kept corners is within `tolerance` of `target`; else move the interval toward it. The
    result is the LAST iterate, not the best one.

    Args:
        ppl: (n,) float64 PPL of the points searched, n >= 1 (all valid).
        ent: (n,) float64 entropy of the same points.
        target: The kept fraction aimed at (sample_ratio).
        max_iters: Maximum number of iterations (>= 1).
        tolerance: The search stops once |kept fraction - target| < tolerance.
        upper: Upper end of the quantile level searched.
        kept_quadrants: "q2_q4", "q1_q4" or "q2_q3".

    Returns:
        The last iterate's Thresholds (converged and kept_fraction set).
    """
    ppl_sorted = torch.sort(ppl).values.tolist()
    ent_sorted = torch.sort(ent).values.tolist()
    valid = torch.ones(ppl.shape[0], dtype=torch.bool)
    n = ppl.shape[0]
    lo, hi = 0.0, upper
    result = None
    for iteration in range(1, max_iters + 1):
        a = (lo + hi) / 2
        t = Thresholds(
            alpha=a,
            beta=a,
            ppl_lo=quantile_sorted(ppl_sorted, a),
            ppl_hi=quantile_sorted(ppl_sorted, 1 - a),
            ent_lo=quantile_sorted(ent_sorted, a),
            ent_hi=quantile_sorted(ent_sorted, 1 - a),
            iterations=iteration,
            converged=False,
            kept_fraction=0.0,
        )
        in_high, in_low = corner_membership(ppl, ent, valid, t, kept_quadrants)
        fraction = int(in_high.sum() + in_low.sum()) / n
        converged = abs(fraction - target) < tolerance
        result = Thresholds(**{**t.__dict__, "converged": converged, "kept_fraction": fraction})
        if converged:
            break
        if fraction < target:
            lo = a
        else:
            hi = a
    assert result is not None  # max_iters >= 1 (checked by QTuningConfig)
    return result
