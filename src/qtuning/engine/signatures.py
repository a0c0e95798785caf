"""Failure signatures (docs/algorithm.md section 8): the one rule for "this selection looks unhealthy". Pure Python.

    fired = failure_signatures(shares, plans=4, converged=1, kept=12, supplemented=8)
    # {"collapse": False, "bisection": True, "supplement": True}

The trainer applies it to the samples planned since its last log, `qtuning analyze` to each
pool size; each words its own warning. The three signatures:
- collapse:   two or more quadrants hold under COLLAPSE_SHARE (5%) of the samples: PPL and Ent
              barely separate them, and the kept corners are noise;
- bisection:  more than half of the plans (pools) ended outside the bisection's tolerance: the
              supplement, not the quantiles, sets the kept fraction;
- supplement: the supplement chose more than half of the kept samples.
"""

from __future__ import annotations

from collections.abc import Sequence

COLLAPSE_SHARE = 0.05  # a quadrant holding fewer than this share of the samples has collapsed
COLLAPSE_QUADRANTS = 2  # ... and the plane has collapsed when at least this many quadrants have
SIGNATURES = ("collapse", "bisection", "supplement")


def collapsed_quadrants(shares: Sequence[float]) -> list[int]:
    """The quadrants (1..4) whose share of the samples is under COLLAPSE_SHARE.

    Args:
        shares: The shares of the samples in Q1..Q4.

    Returns:
        The collapsed quadrants' numbers, ascending.
    """
    return [q for q, share in enumerate(shares, start=1) if share < COLLAPSE_SHARE]


def failure_signatures(
    shares: Sequence[float], *, plans: float, converged: float, kept: float, supplemented: float
) -> dict[str, bool]:
    """Which signatures fire, in SIGNATURES order.

    Counts may be floats (sums over ranks).

    Args:
        shares: The Q1..Q4 shares of the samples.
        plans: Selections made (pools).
        converged: Those of them whose bisection ended within its tolerance.
        kept: Kept samples.
        supplemented: Those of them chosen by the supplement.

    Returns:
        Signature name -> whether it fires, for "collapse", "bisection" and "supplement".
    """
    return {
        "collapse": len(collapsed_quadrants(shares)) >= COLLAPSE_QUADRANTS,
        "bisection": plans > 0 and converged / plans < 0.5,
        "supplement": supplemented > 0.5 * max(1.0, kept),
    }
