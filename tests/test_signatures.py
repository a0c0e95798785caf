"""One rule for the failure signatures and one for derived seeds, shared by their callers."""

from qtuning.engine.signatures import collapsed_quadrants, failure_signatures

HEALTHY = dict(plans=4, converged=4, kept=10, supplemented=0)


def test_collapse_needs_two_quadrants_under_five_percent():
    assert collapsed_quadrants([0.5, 0.46, 0.04, 0.0]) == [3, 4]
    assert failure_signatures([0.5, 0.46, 0.04, 0.0], **HEALTHY)["collapse"]
    assert not failure_signatures([0.5, 0.26, 0.04, 0.2], **HEALTHY)["collapse"]  # one is not enough
    assert not failure_signatures([0.25, 0.25, 0.25, 0.25], **HEALTHY)["collapse"]
    assert not failure_signatures([0.45, 0.45, 0.05, 0.05], **HEALTHY)["collapse"]  # 5% itself is not under


def test_bisection_fires_when_more_than_half_of_the_plans_missed():
    shares = [0.25] * 4
    assert failure_signatures(shares, plans=4, converged=1, kept=10, supplemented=0)["bisection"]
    assert not failure_signatures(shares, plans=4, converged=2, kept=10, supplemented=0)["bisection"]  # half
    assert not failure_signatures(shares, plans=0, converged=0, kept=0, supplemented=0)["bisection"]


def test_supplement_fires_when_it_chose_more_than_half_of_the_kept():
    shares = [0.25] * 4
    assert failure_signatures(shares, plans=1, converged=1, kept=12, supplemented=8)["supplement"]
    assert not failure_signatures(shares, plans=1, converged=1, kept=12, supplemented=6)["supplement"]
    assert not failure_signatures(shares, plans=1, converged=1, kept=0, supplemented=0)["supplement"]
