"""Score-history thresholds (qtuning.engine.history): window handling, a naive reference, hand-worked pools,
hypothesis invariants, and exact resume from the window's state."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qtuning.engine.history import ScoreWindow, select_with_history
from qtuning.engine.thresholds import bisect_thresholds

KW = dict(max_iters=10, tolerance=0.01, upper=0.49)


def reference_history(pools, r_s, capacity, max_iters=10, tol=0.01, upper=0.49):
    """Loops, numpy.quantile and plain lists: every pool's kept roles and supplemented flags, in order.
    pools: list of (ppl list, ent list, valid list)."""
    window_p, window_e, out = [], [], []
    for ppl, ent, valid in pools:
        pool = [i for i in range(len(ppl)) if valid[i]]
        window_p += [ppl[i] for i in pool]
        window_e += [ent[i] for i in pool]
        window_p, window_e = window_p[-capacity:], window_e[-capacity:]
        role, supp = [0] * len(ppl), [False] * len(ppl)
        if not pool:
            out.append((role, supp))
            continue
        P, E = np.array(window_p), np.array(window_e)
        lo, hi = 0.0, upper
        for _ in range(max_iters):
            a = (lo + hi) / 2
            p_hi, p_lo, e_lo, e_hi = np.quantile(P, 1 - a), np.quantile(P, a), np.quantile(E, a), np.quantile(E, 1 - a)
            f = sum((p > p_hi and e <= e_lo) or (p <= p_lo and e > e_hi) for p, e in zip(P, E)) / len(P)
            if abs(f - r_s) < tol:
                break
            lo, hi = (a, hi) if f < r_s else (lo, a)
        pn = lambda v, P=P: (v - P.min()) / (P.max() - P.min()) if P.max() > P.min() else 0.0  # noqa: E731
        en = lambda v, E=E: (v - E.min()) / (E.max() - E.min()) if E.max() > E.min() else 0.0  # noqa: E731
        q2 = {i for i in pool if ppl[i] > p_hi and ent[i] <= e_lo}
        q4 = {i for i in pool if ppl[i] <= p_lo and ent[i] > e_hi}
        depth = {i: max(pn(ppl[i]) - en(ent[i]), en(ent[i]) - pn(ppl[i])) for i in pool}
        ranked = sorted(pool, key=lambda i: (i not in q2 | q4, -depth[i], i))
        k = min(len(pool), max(1, round(r_s * len(pool))))
        for i in ranked[:k]:
            if i in q2:
                role[i] = 2
            elif i in q4:
                role[i] = 4
            else:
                supp[i] = True
                role[i] = 2 if pn(ppl[i]) - en(ent[i]) >= en(ent[i]) - pn(ppl[i]) else 4
        out.append((role, supp))
    return out


def run(pools, r_s, capacity):
    window = ScoreWindow(capacity)
    out = []
    for ppl, ent, valid in pools:
        s = select_with_history(
            torch.tensor(ppl, dtype=torch.float64),
            torch.tensor(ent, dtype=torch.float64),
            torch.tensor(valid),
            window,
            r_s,
            **KW,
        )
        out.append((s.kept_role.tolist(), s.supplemented.tolist()))
    return out, window


def test_window_keeps_the_newest_points_in_order():
    window = ScoreWindow(capacity=4)
    window.extend(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    window.extend(torch.tensor([4.0, 5.0]), torch.tensor([0.4, 0.5], dtype=torch.float64))
    assert window.ppl == [2.0, 3.0, 4.0, 5.0] and window.ent == [0.2, 0.3, 0.4, 0.5]
    assert ScoreWindow.from_state_dict(window.state_dict()) == window


def test_only_valid_samples_enter_the_window_and_none_is_kept():
    window = ScoreWindow(capacity=10)
    s = select_with_history(
        torch.tensor([5.0, 9.0, 1.0, 3.0]),
        torch.tensor([1.0, 0.5, 2.0, 1.5]),
        torch.tensor([True, False, True, True]),
        window,
        0.5,
        **KW,
    )
    assert window.ppl == [5.0, 1.0, 3.0]
    assert s.kept_role[1] == 0 and s.quadrant[1] == 0
    assert int((s.kept_role != 0).sum()) == 2  # K = round(0.5 * 3) = 2 (half to even)


def test_hand_worked_pool_trims_the_shallowest_corner_sample():
    """A window of 8 points; the pool holds 3 corner samples but K = 2.

    Window = 4 earlier points + the pool's 4: PPL values 1..8 and entropies 1..8 (each once). The
    first iterate a = 0.245 gives, by linear interpolation at position 0.245 * 7 = 1.715, the lines
    ppl (lo, hi) = (2.715, 6.285) and ent (lo, hi) = (2.715, 6.285). Window points in the corners:
    Q2 (ppl > 6.285, ent <= 2.715): (8, 1), (7, 2); Q4 (ppl <= 2.715, ent > 6.285): (2, 7), (1, 8):
    4 of 8 = 0.5, converged at once. The pool's corner samples: (8, 1), (7, 2) in Q2 and (1, 8) in
    Q4. K = round(0.5 * 4) = 2. Depth on the plane normalised over 1..8: (8, 1) -> 1 - 0 = 1,
    (1, 8) -> 1 - 0 = 1, (7, 2) -> 6/7 - 1/7 = 5/7: (7, 2) is trimmed.
    """
    window = ScoreWindow(capacity=8)
    window.extend(torch.tensor([2.0, 3.0, 4.0, 6.0]), torch.tensor([7.0, 3.0, 4.0, 6.0]))
    s = select_with_history(
        torch.tensor([8.0, 7.0, 1.0, 5.0]),
        torch.tensor([1.0, 2.0, 8.0, 5.0]),
        torch.ones(4, dtype=torch.bool),
        window,
        0.5,
        **KW,
    )
    assert s.kept_role.tolist() == [2, 0, 4, 0]
    assert s.trimmed == 1 and not s.supplemented.any()
    assert s.thresholds.converged and s.thresholds.iterations == 1 and s.thresholds.kept_fraction == 0.5
    assert (s.thresholds.ppl_lo, s.thresholds.ppl_hi) == pytest.approx((2.715, 6.285))


def test_empty_corners_are_filled_by_the_supplement():
    # the window says the pool's points all sit in the middle: nobody is in a corner
    window = ScoreWindow(capacity=16)
    window.extend(torch.tensor([1.0, 1.0, 9.0, 9.0, 1.0, 9.0]), torch.tensor([9.0, 9.5, 1.0, 0.5, 8.0, 2.0]))
    s = select_with_history(
        torch.tensor([5.0, 6.0, 4.0, 5.5]),
        torch.tensor([5.0, 4.0, 6.0, 5.2]),
        torch.ones(4, dtype=torch.bool),
        window,
        0.5,
        **KW,
    )
    assert int((s.kept_role != 0).sum()) == 2 and bool(s.supplemented[s.kept_role != 0].all())
    # deepest toward a corner: (6, 4) toward Q2 and (4, 6) toward Q4
    assert s.kept_role.tolist() == [0, 2, 4, 0]


pools_strategy = st.lists(
    st.integers(min_value=1, max_value=12).flatmap(
        lambda b: st.tuples(
            st.lists(st.floats(1.0, 50.0, allow_nan=False), min_size=b, max_size=b),
            st.lists(st.floats(0.0, 8.0, allow_nan=False), min_size=b, max_size=b),
            st.lists(st.booleans(), min_size=b, max_size=b),
        )
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(pools=pools_strategy, r_s=st.sampled_from([0.125, 0.25, 0.5, 0.75]), capacity=st.integers(1, 40))
def test_matches_the_naive_reference_and_holds_the_invariants(pools, r_s, capacity):
    ours, window = run(pools, r_s, capacity)
    assert ours == reference_history(pools, r_s, capacity)
    for (_ppl, _ent, valid), (role, supp) in zip(pools, ours):
        n = sum(valid)
        kept = [r != 0 for r in role]
        assert sum(kept) == (min(n, max(1, round(r_s * n))) if n else 0)  # held to the budget exactly
        assert all(r in (0, 2, 4) for r in role)
        assert not any(k and not v for k, v in zip(kept, valid))  # no sample without a response kept
        assert all(k for k, s in zip(kept, supp) if s)
    assert len(window) == min(capacity, sum(sum(v) for _, _, v in pools))


def test_resume_from_the_window_state_selects_exactly_as_without_a_stop():
    rng = np.random.default_rng(0)
    pools = [(rng.uniform(1, 30, 16).tolist(), rng.uniform(0, 6, 16).tolist(), [True] * 16) for _ in range(8)]
    straight, _ = run(pools, 0.25, 64)
    first, window = run(pools[:5], 0.25, 64)
    restored = ScoreWindow.from_state_dict(window.state_dict())  # what a checkpoint stores
    rest = []
    for ppl, ent, valid in pools[5:]:
        s = select_with_history(torch.tensor(ppl), torch.tensor(ent), torch.tensor(valid), restored, 0.25, **KW)
        rest.append((s.kept_role.tolist(), s.supplemented.tolist()))
    assert first + rest == straight


def test_bisection_over_one_pool_matches_the_paper_selection():
    """With a window that holds exactly the pool, the thresholds are the paper's."""
    from qtuning import QTuningConfig, select_samples

    rng = np.random.default_rng(3)
    ppl = torch.tensor(rng.uniform(1, 20, 16))
    ent = torch.tensor(rng.uniform(0, 5, 16))
    paper = select_samples(ppl, ent, torch.ones(16, dtype=torch.bool), QTuningConfig(sample_ratio=0.25))
    t = bisect_thresholds(ppl, ent, 0.25, kept_quadrants="q2_q4", **KW)
    assert (t.alpha, t.ppl_lo, t.ppl_hi, t.ent_lo, t.ent_hi, t.iterations) == pytest.approx(
        (paper.alpha, paper.ppl_lo, paper.ppl_hi, paper.ent_lo, paper.ent_hi, paper.iterations)
    )
    assert math.isclose(t.kept_fraction, paper.bisection_kept_fraction)


@settings(max_examples=150, deadline=None)
@given(
    pools=pools_strategy,
    r_s=st.sampled_from([0.25, 0.5]),
    thresholds=st.sampled_from(["pool", "history"]),
    toward=st.sampled_from(["nearest", "low_ppl"]),
    cap=st.sampled_from([1.0, 0.5, 0.0]),
)
def test_noise_options_hold_the_budget_and_the_cap(pools, r_s, thresholds, toward, cap):
    """History thresholds keep exactly K valid samples (the paper's pool thresholds at least K: its last
    bisection iterate may keep more); the Q2 share respects the cap whenever enough not-kept samples
    exist to swap in."""
    from qtuning import QTuningConfig
    from qtuning.engine.selection import select_samples

    cfg = QTuningConfig(
        sample_ratio=r_s, thresholds=thresholds, history_window=24, supplement_toward=toward, max_q2_share=cap
    )
    window = ScoreWindow(24) if thresholds == "history" else None
    for ppl, ent, valid in pools:
        s = select_samples(torch.tensor(ppl), torch.tensor(ent), torch.tensor(valid), cfg, window)
        n = sum(valid)
        role = s.kept_role.tolist()
        kept = sum(r != 0 for r in role)
        k = min(n, max(1, round(r_s * n))) if n else 0
        assert kept == k if thresholds == "history" else kept >= k
        assert not any(r != 0 and not v for r, v in zip(role, valid))
        q2 = sum(r == 2 for r in role)
        if n - kept >= kept:  # enough candidates for every swap
            assert q2 <= math.floor(cap * kept)


def test_fixed_budget_ceiling_by_hand():
    """benchmarks/selection_quality.py's ceiling: each pool keeps min(reference rows in it, K)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from selection_quality import fixed_budget_ceiling

    order = [0, 1, 2, 3, 4, 5, 6, 7]
    # pools {0,1,2,3} (2 reference rows, K = 1 -> 1) and {4,5,6,7} (1 -> 1): overlap 2 of kept 2,
    # reference 3: Jaccard 2 / (2 + 3 - 2)
    assert fixed_budget_ceiling(order, 4, 1, {0, 1, 4}) == pytest.approx(2 / 3)
    # K = 2: overlap 2 + 1 = 3 of kept 4: 3 / (4 + 3 - 3)
    assert fixed_budget_ceiling(order, 4, 2, {0, 1, 4}) == pytest.approx(3 / 4)
    # reference rows spread one per pool with K = 1 reach 1.0
    assert fixed_budget_ceiling(order, 4, 1, {2, 6}) == 1.0
