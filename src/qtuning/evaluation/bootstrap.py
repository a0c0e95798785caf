"""Confidence intervals for comparing training runs over seeds AND evaluation items (numpy only).

A comparison of two arms is paired twice: the same seed gives both arms the same data order and
initialisation, and both are scored on the same evaluation items. The two-way bootstrap resamples
seeds and items independently, so the interval holds both the training randomness and the
evaluation set's sampling error (a one-way bootstrap over items alone would be too narrow when runs
differ from seed to seed; one over seeds alone ignores that the items are a sample).

Scores are ratios of sums: numerator[s, i] / denominator[s, i] summed over the resampled cells.
Accuracy has denominator 1; a held-out NLL has (summed NLL, token count) per item, so the statistic
is the token-weighted mean, as the NLL of a set is defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float  # the estimate on the data as observed
    low: float  # 2.5th percentile of the bootstrap distribution
    high: float  # 97.5th percentile
    seeds: int
    items: int


def _as_grid(values, name: str) -> np.ndarray:
    grid = np.asarray(values, dtype=np.float64)
    if grid.ndim == 1:
        grid = grid[None, :]  # one seed
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"{name}: expected a (seeds, items) grid, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError(f"{name}: holds a NaN or Inf")
    return grid


def _ratio_stat(num: np.ndarray, den: np.ndarray, seed_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
    """(R,) statistics: sum over the resampled seeds x items of num / the same of den.
    seed_idx (R, S), item_idx (R, N); num, den (S, N)."""
    # Sum over items first (R, S), then over the resampled seeds: O(R * (S * N)) memory-light.
    num_items = np.stack([num[:, idx].sum(axis=1) for idx in item_idx])  # (R, S)
    den_items = np.stack([den[:, idx].sum(axis=1) for idx in item_idx])  # (R, S)
    rows = np.arange(seed_idx.shape[0])[:, None]
    return num_items[rows, seed_idx].sum(axis=1) / den_items[rows, seed_idx].sum(axis=1)


def paired_difference(a_num, b_num, a_den=None, b_den=None, resamples: int = 10_000, rng_seed: int = 0) -> Interval:
    """Mean of A - B with a 95% two-way bootstrap interval.

    a_num, b_num: (seeds, items) per-item scores (row s of A pairs with row s of B; a single row of B
    (e.g. zero-shot) pairs with every row of A). a_den, b_den: the per-item denominators (token counts)
    when the score is a ratio of sums; None means 1 per item.
    """
    a_num, b_num = _as_grid(a_num, "A"), _as_grid(b_num, "B")
    a_den = np.ones_like(a_num) if a_den is None else _as_grid(a_den, "A denominators")
    b_den = np.ones_like(b_num) if b_den is None else _as_grid(b_den, "B denominators")
    if b_num.shape[0] == 1 and a_num.shape[0] > 1:
        b_num, b_den = np.repeat(b_num, a_num.shape[0], 0), np.repeat(b_den, a_num.shape[0], 0)
    if a_num.shape[0] == 1 and b_num.shape[0] > 1:
        a_num, a_den = np.repeat(a_num, b_num.shape[0], 0), np.repeat(a_den, b_num.shape[0], 0)
    if a_num.shape != b_num.shape or a_den.shape != a_num.shape or b_den.shape != b_num.shape:
        raise ValueError(f"A and B must be paired grids: A {a_num.shape}, B {b_num.shape}")
    seeds, items = a_num.shape
    rng = np.random.default_rng(rng_seed)
    seed_idx = rng.integers(0, seeds, size=(resamples, seeds))
    item_idx = rng.integers(0, items, size=(resamples, items))
    stats = _ratio_stat(a_num, a_den, seed_idx, item_idx) - _ratio_stat(b_num, b_den, seed_idx, item_idx)
    mean = a_num.sum() / a_den.sum() - b_num.sum() / b_den.sum()
    low, high = np.percentile(stats, [2.5, 97.5])
    return Interval(float(mean), float(low), float(high), seeds, items)


def mean_interval(num, den=None, resamples: int = 10_000, rng_seed: int = 0) -> Interval:
    """One arm's score with its 95% two-way bootstrap interval (for error bars)."""
    num = _as_grid(num, "scores")
    den = np.ones_like(num) if den is None else _as_grid(den, "denominators")
    seeds, items = num.shape
    rng = np.random.default_rng(rng_seed)
    stats = _ratio_stat(
        num, den, rng.integers(0, seeds, size=(resamples, seeds)), rng.integers(0, items, size=(resamples, items))
    )
    low, high = np.percentile(stats, [2.5, 97.5])
    return Interval(float(num.sum() / den.sum()), float(low), float(high), seeds, items)


def verdict(
    interval: Interval, better: str, worse: str, higher_is_better: bool = True, sesoi: float | None = None
) -> str:
    """The decision rule: which arm the whole interval favours. Otherwise, without a smallest effect
    of interest (sesoi, in the interval's units), "no difference resolved"; with one, "equivalent"
    when the interval lies inside (-sesoi, +sesoi) (a tie the data show) and "undecided" when it
    reaches past a bound (the data allow an effect that matters)."""
    low, high = (interval.low, interval.high) if higher_is_better else (-interval.high, -interval.low)
    if low > 0:
        return f"{better} better"
    if high < 0:
        return f"{worse} better"
    if sesoi is None:
        return "no difference resolved"
    return "equivalent" if -sesoi < low and high < sesoi else "undecided"
