"""Score-history thresholds: the EU plane's lines from a window of recent samples, not one pool.

With pools of 8-16 samples the paper's bisection estimates four quantile lines from a handful of
points every step: it often misses its tolerance, the supplement then decides much of the kept set,
and the kept set agrees poorly with what the same scores would select over the whole data set.
Here the lines come from the last `history_window` scored samples (the current pool included), and
the current pool is held to the budget exactly (docs/algorithm.md section 3.5):

    1. append the pool's valid (PPL, Ent) points to the window (oldest dropped beyond W);
    2. bisect the quantile level over the WINDOW's points (same search, tolerance and last-iterate
       rule as the paper's, on up to W points instead of N);
    3. the pool's samples inside the kept corners of those lines are the candidates;
    4. K = round(r_s * N) samples are kept: corner samples first, then the others, each group
       ordered by its distance toward the nearer kept corner on the plane min-max normalised over
       the window (deepest first; ties to the lower index). More than K in the corners: the
       shallowest are trimmed; fewer: the rest come from outside (the "supplement"), as in the paper.
    5. roles: a corner sample takes its corner's role (Q2 or Q4); a supplemented one the role of the
       corner it is closer to. Quadrants (for reporting) use the window's mid lines.

Pure torch, float64 on the CPU. The window is plain state (lists of floats) that the trainer saves
in its checkpoints, so a resumed run selects exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .policies import target_count
from .thresholds import Thresholds, bisect_thresholds, corner_closeness, corner_membership
from .types import Role


@dataclass
class ScoreWindow:
    """The (PPL, Ent) of the last `capacity` scored samples, oldest first.

    Attributes:
        capacity: How many points are kept (cfg.history_window).
        ppl: The points' PPL, oldest first.
        ent: The points' entropy, in the same order.
    """

    capacity: int
    ppl: list[float] = field(default_factory=list)
    ent: list[float] = field(default_factory=list)

    def extend(self, ppl: torch.Tensor, ent: torch.Tensor) -> None:
        """Append points (n,) in pool order; keep the newest `capacity`.

        Args:
            ppl: (n,) PPL of the new points.
            ent: (n,) entropy of the new points.
        """
        self.ppl.extend(float(v) for v in ppl.tolist())
        self.ent.extend(float(v) for v in ent.tolist())
        if len(self.ppl) > self.capacity:
            del self.ppl[: len(self.ppl) - self.capacity]
            del self.ent[: len(self.ent) - self.capacity]

    def __len__(self) -> int:
        return len(self.ppl)

    def state_dict(self) -> dict:
        """The window as plain data, for a checkpoint.

        Returns:
            {"capacity": int, "ppl": list of float, "ent": list of float}.
        """
        return {"capacity": self.capacity, "ppl": list(self.ppl), "ent": list(self.ent)}

    @classmethod
    def from_state_dict(cls, state: dict) -> ScoreWindow:
        """The window that `state_dict` saved.

        Args:
            state: What `state_dict` returned.

        Returns:
            A new ScoreWindow with that capacity and those points.
        """
        return cls(
            capacity=int(state["capacity"]), ppl=[float(v) for v in state["ppl"]], ent=[float(v) for v in state["ent"]]
        )


@dataclass
class HistorySelection:
    """What `select_with_history` decided for one pool (per-sample tensors are (B,))."""

    kept_role: torch.Tensor  # int64 Role values: DROPPED, Q2 or Q4
    supplemented: torch.Tensor  # bool: kept from outside the kept corners
    quadrant: torch.Tensor  # int64 1..4 by the window's mid lines; 0 without a trainable position
    thresholds: Thresholds  # from the window
    pool_size: int
    target_count: int
    trimmed: int  # corner samples left out because the corners held more than K
    window_size: int  # points the thresholds were computed from
    toward_high: torch.Tensor  # (B,) float64 closeness to the high-PPL kept corner (window-normalised plane)
    toward_low: torch.Tensor  # (B,) float64 closeness to the low-PPL kept corner


def _normalised(values: torch.Tensor, window: list[float]) -> torch.Tensor:
    lo, hi = min(window), max(window)
    return (values - lo) / (hi - lo) if hi > lo else torch.zeros_like(values)


def select_with_history(
    ppl: torch.Tensor,
    ent: torch.Tensor,
    valid: torch.Tensor,
    window: ScoreWindow,
    sample_ratio: float,
    *,
    max_iters: int,
    tolerance: float,
    upper: float,
    kept_quadrants: str = "q2_q4",
    fill_toward: str = "nearest",
) -> HistorySelection:
    """Stage 1 with score-history thresholds (module docstring); updates `window` with the pool.

    ppl, ent: (B,) float; valid: (B,) bool (samples without a trainable position take no part and
    are never kept). The high-PPL kept corner gives the Q2 role, the low-PPL one Q4. fill_toward:
    'nearest' (outside samples ranked by their depth toward either corner, role of the nearer one)
    or 'low_ppl' (ranked by their depth toward the low-PPL corner, all in its role).

    Args:
        ppl: (B,) float per-sample PPL.
        ent: (B,) float per-sample entropy.
        valid: (B,) bool, the samples with a trainable position.
        window: The run's score window; the pool's valid points are appended first.
        sample_ratio: r_s; K = min(N, max(1, round(r_s * N))) samples are kept.
        max_iters: The bisection's maximum iterations.
        tolerance: The bisection's tolerance.
        upper: Upper end of the quantile level searched.
        kept_quadrants: "q2_q4", "q1_q4" or "q2_q3".
        fill_toward: "nearest" or "low_ppl" (above).

    Returns:
        The pool's HistorySelection.
    """
    ppl = ppl.detach().to("cpu", torch.float64)
    ent = ent.detach().to("cpu", torch.float64)
    valid = valid.detach().to("cpu", torch.bool)
    batch = ppl.shape[0]
    n = int(valid.sum())
    window.extend(ppl[valid], ent[valid])
    kept_role = torch.zeros(batch, dtype=torch.int64)
    supplemented = torch.zeros(batch, dtype=torch.bool)
    quadrant = torch.zeros(batch, dtype=torch.int64)
    if n == 0 or len(window) == 0:
        empty = Thresholds.none()
        zeros = torch.zeros(batch, dtype=torch.float64)
        return HistorySelection(kept_role, supplemented, quadrant, empty, n, 0, 0, len(window), zeros, zeros)
    w_ppl = torch.tensor(window.ppl, dtype=torch.float64)
    w_ent = torch.tensor(window.ent, dtype=torch.float64)
    t = bisect_thresholds(
        w_ppl, w_ent, sample_ratio, max_iters=max_iters, tolerance=tolerance, upper=upper, kept_quadrants=kept_quadrants
    )
    in_high, in_low = corner_membership(ppl, ent, valid, t, kept_quadrants)
    in_corner = in_high | in_low

    # Depth toward each kept corner on the window-normalised plane (the paper's supplement distance).
    toward_high, toward_low = corner_closeness(
        _normalised(ppl, window.ppl), _normalised(ent, window.ent), kept_quadrants
    )
    depth = torch.maximum(toward_high, toward_low)  # (B,)
    if fill_toward == "low_ppl":  # outside samples: only the depth toward the low-PPL corner counts
        depth = torch.where(in_corner, depth, toward_low)

    # Corner samples first, then the others; deepest first within each; ties to the lower index.
    key = torch.where(valid, depth, -torch.inf)
    order = torch.sort(key, descending=True, stable=True).indices
    order = order[torch.sort((~in_corner[order]).to(torch.int8), stable=True).indices]
    k = target_count(n, sample_ratio)
    chosen = order[:k]
    nearer_high = (toward_high[chosen] >= toward_low[chosen]) & (fill_toward != "low_ppl")
    high, low = int(Role.Q2), int(Role.Q4)
    role_of_chosen = torch.where(
        in_high[chosen], high, torch.where(in_low[chosen], low, torch.where(nearer_high, high, low))
    )
    kept_role[chosen] = role_of_chosen
    supplemented[chosen] = ~in_corner[chosen]
    trimmed = int(in_corner.sum()) - int(in_corner[chosen].sum())

    high_ppl = ppl > t.ppl_mid
    high_ent = ent > t.ent_mid
    quadrant[:] = torch.where(high_ppl, torch.where(high_ent, 1, 2), torch.where(high_ent, 4, 3))
    quadrant[~valid] = 0
    return HistorySelection(kept_role, supplemented, quadrant, t, n, k, trimmed, len(window), toward_high, toward_low)
