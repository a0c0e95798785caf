"""qtuning.evaluation.bootstrap: the paired two-way bootstrap (seeds x items) and the decision rule, against
hand-worked cases."""

import numpy as np
import pytest

from qtuning.evaluation.bootstrap import Interval, mean_interval, paired_difference, verdict


def test_a_constant_paired_difference_has_a_zero_width_interval():
    a = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], dtype=float)
    b = a - 0.25  # every item 0.25 lower, every seed
    interval = paired_difference(a, b, resamples=500)
    assert interval.mean == pytest.approx(0.25)
    assert interval.low == pytest.approx(0.25) and interval.high == pytest.approx(0.25)
    assert (interval.seeds, interval.items) == (2, 4)


def test_the_mean_is_the_plain_difference_and_the_interval_covers_it():
    rng = np.random.default_rng(1)
    a = (rng.random((5, 200)) < 0.6).astype(float)
    b = (rng.random((5, 200)) < 0.5).astype(float)
    interval = paired_difference(a, b, resamples=2000)
    assert interval.mean == pytest.approx(a.mean() - b.mean())
    assert interval.low < interval.mean < interval.high
    # the two-way interval is wider than an items-only one when the seeds disagree
    shifted = a + np.array([0.3, -0.3, 0.2, -0.2, 0.0])[:, None]
    assert (
        paired_difference(shifted, b, resamples=2000).high - paired_difference(shifted, b, resamples=2000).low
        > interval.high - interval.low
    )


def test_a_single_baseline_row_pairs_with_every_seed():
    a = np.array([[1.0, 1.0], [1.0, 0.0]])
    zero_shot = np.array([[0.0, 0.0]])
    assert paired_difference(a, zero_shot, resamples=100).mean == pytest.approx(0.75)


def test_ratio_of_sums_for_nll():
    # item NLL sums and token counts: the set's NLL is sum / sum, not the mean of per-item means
    num = np.array([[2.0, 10.0]])
    den = np.array([[1.0, 4.0]])
    assert mean_interval(num, den, resamples=100).mean == pytest.approx(12.0 / 5.0)
    diff = paired_difference(num, np.array([[1.0, 4.0]]), den, np.array([[1.0, 4.0]]), resamples=100)
    assert diff.mean == pytest.approx(12.0 / 5.0 - 1.0)


def test_unpaired_shapes_and_bad_values_are_refused():
    with pytest.raises(ValueError, match="paired"):
        paired_difference(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        paired_difference(np.array([[np.nan, 1.0]]), np.ones((1, 2)))


@pytest.mark.parametrize(
    "low, high, higher_is_better, expected",
    [
        (0.01, 0.05, True, "A better"),
        (-0.05, -0.01, True, "B better"),
        (-0.01, 0.05, True, "no difference resolved"),
        (-0.05, -0.01, False, "A better"),  # lower is better (NLL): a negative difference favours A
    ],
)
def test_decision_rule(low, high, higher_is_better, expected):
    assert verdict(Interval(0.0, low, high, 5, 100), "A", "B", higher_is_better) == expected


@pytest.mark.parametrize(
    "low, high, higher_is_better, expected",
    [
        (-0.5, 1.5, True, "equivalent"),  # inside +-2
        (-0.5, 2.5, True, "undecided"),  # crosses 0 and reaches past +2
        (-2.0, 1.0, True, "undecided"),  # touching a bound is not inside it
        (0.5, 1.5, True, "A better"),  # excludes 0: the direction is decided even inside the bounds
        (-1.5, -0.5, False, "A better"),  # lower is better
        (-1.5, 0.5, False, "equivalent"),
    ],
)
def test_decision_rule_with_a_smallest_effect_of_interest(low, high, higher_is_better, expected):
    assert verdict(Interval(0.0, low, high, 5, 100), "A", "B", higher_is_better, sesoi=2.0) == expected
