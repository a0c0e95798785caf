"""Hand-computed cases for every rule of docs/algorithm.md sections 3 and 4.

The expected values in each test are worked out on paper in the comments next to them.
Quantiles use numpy's linear rule: Q_q of n sorted values sits at position q * (n - 1).
"""

import math

import pytest
import torch

from qtuning import ConfigError, QTuningConfig, ScoreError, plan_batch, select_samples
from qtuning.engine.selection import quantile_sorted, smoothed_token_ppl

# The pool of 8 used below: (PPL, Ent) per sample. Both axes take each of the values 1..8 once.
#   s0 (8, 1)  s1 (1, 8)  s2 (7, 7)  s3 (2, 2)  s4 (3, 3)  s5 (4, 6)  s6 (5, 4)  s7 (6, 5)
POOL_PPL = [8.0, 1.0, 7.0, 2.0, 3.0, 4.0, 5.0, 6.0]
POOL_ENT = [1.0, 8.0, 7.0, 2.0, 3.0, 6.0, 4.0, 5.0]


def _select(ppl, ent, valid=None, **cfg):
    ppl_t = torch.tensor(ppl, dtype=torch.float64)
    ent_t = torch.tensor(ent, dtype=torch.float64)
    valid_t = torch.ones(len(ppl), dtype=torch.bool) if valid is None else torch.tensor(valid)
    return select_samples(ppl_t, ent_t, valid_t, QTuningConfig(**cfg))


def test_quantile_matches_numpy_linear_rule():
    # positions q * 7 over 1..8: Q_0.245 at 1.715 -> 2.715; Q_0.755 at 5.285 -> 6.285
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert quantile_sorted(values, 0.245) == pytest.approx(2.715, abs=1e-12)
    assert quantile_sorted(values, 0.755) == pytest.approx(6.285, abs=1e-12)
    assert quantile_sorted(values, 0.0) == 1.0 and quantile_sorted(values, 1.0) == 8.0
    assert quantile_sorted([5.0], 0.3) == 5.0


def test_first_iterate_converges_at_quarter():
    # a = 0.245: ppl_lo = ent_lo = 2.715, ppl_hi = ent_hi = 6.285.
    # Q2 = PPL > 6.285 and Ent <= 2.715 -> s0 only; Q4 = PPL <= 2.715 and Ent > 6.285 -> s1 only.
    # f = 2/8 = 0.25 = r_s: stop after one iteration.
    sel = _select(POOL_PPL, POOL_ENT, sample_ratio=0.25)
    assert sel.iterations == 1 and sel.converged
    assert sel.alpha == pytest.approx(0.245) and sel.beta == pytest.approx(0.245)
    assert sel.ppl_lo == pytest.approx(2.715) and sel.ppl_hi == pytest.approx(6.285)
    assert sel.kept_role.tolist() == [2, 4, 0, 0, 0, 0, 0, 0]
    assert sel.supplemented.tolist() == [False] * 8
    assert sel.target_count == 2
    # Mid lines at (2.715 + 6.285) / 2 = 4.5 on both axes:
    # s0 Q2, s1 Q4, s2 (7,7) Q1, s3 (2,2) Q3, s4 (3,3) Q3, s5 (4,6) Q4, s6 (5,4) Q2, s7 (6,5) Q1
    assert sel.quadrant.tolist() == [2, 4, 1, 3, 3, 4, 2, 1]


def test_bisection_raises_the_levels_until_half_is_kept():
    # r_s = 0.5. it1 a = 0.245: f = 0.25 < 0.5 -> a_lo = 0.245.
    # it2 a = 0.3675: ppl_hi = Q_0.6325 (pos 4.4275) = 5.4275, ppl_lo = Q_0.3675 (pos 2.5725) = 3.5725;
    #   Q2 = {s0}, Q4 = {s1}: f = 0.25 -> a_lo = 0.3675.
    # it3 a = 0.42875: ppl_hi = 4.99875, ppl_lo = 4.00125 (same on the Ent axis);
    #   Q2 = PPL in {5..8} and Ent in {1..4} = {s0, s6}; Q4 = PPL in {1..4} and Ent in {5..8} = {s1, s5}.
    #   f = 0.5: converged at iteration 3.
    sel = _select(POOL_PPL, POOL_ENT, sample_ratio=0.5)
    assert sel.iterations == 3 and sel.converged
    assert sel.alpha == pytest.approx(0.42875)
    assert sel.kept_role.tolist() == [2, 4, 0, 0, 0, 4, 2, 0]
    assert not sel.supplemented.any()


def test_supplement_takes_the_samples_furthest_from_the_diagonal():
    # One iteration only (f = 0.25, not converged), r_s = 0.5 -> K = 4, two missing.
    # Normalised: p^ = (PPL - 1) / 7, e^ = (Ent - 1) / 7; distance = |PPL - Ent| / 7 over the non-kept:
    #   s2 0, s3 0, s4 0, s5 2/7, s6 1/7, s7 1/7  -> s5 first, then s6 and s7 tie (up to rounding).
    # s5: p^ = 3/7 < e^ = 5/7 -> Q4-like. Change s7 to (6, 6.5) to break the tie: distance 0.5/7.
    ent = list(POOL_ENT)
    ent[7] = 6.5
    sel = _select(POOL_PPL, ent, sample_ratio=0.5, bisection_max_iters=1)
    assert sel.iterations == 1 and not sel.converged
    assert sel.target_count == 4
    assert sel.supplemented.tolist() == [False, False, False, False, False, True, True, False]
    # s6: p^ = 4/7 >= e^ = 3/7 (on the 1..8 Ent scale) -> Q2-like.
    assert sel.kept_role.tolist() == [2, 4, 0, 0, 0, 4, 2, 0]


def test_supplement_ties_go_to_the_lower_index_and_collapse_is_reported():
    # Four identical samples: every quantile is 2 (PPL) and 1 (Ent). Q2 needs PPL > 2: never;
    # Q4 needs Ent > 1: never. f = 0 < r_s at every iterate, so a climbs for all 10 iterations:
    # a_10 = 0.489521484375, not converged. K = max(1, round(0.25 * 4)) = 1.
    # Constant axes normalise to 0: all distances 0, the tie goes to s0; p^ = e^ -> Q2-like.
    # Mid lines are 2 and 1: nobody is strictly above them -> all Q3 (the collapse).
    sel = _select([2.0] * 4, [1.0] * 4, sample_ratio=0.25)
    assert sel.iterations == 10 and not sel.converged
    assert sel.alpha == pytest.approx(0.489521484375)
    assert sel.kept_role.tolist() == [2, 0, 0, 0]
    assert sel.supplemented.tolist() == [True, False, False, False]
    assert sel.quadrant.tolist() == [3, 3, 3, 3]


def test_more_than_k_kept_removes_nothing():
    # (PPL, Ent): s0 (8, 1), s1 (1, 8), s2 (4, 4). n = 3, positions q * 2.
    # For any a in (0, 0.49): s0 is above Q_{1-a}(PPL) and at or below Q_a(Ent) -> Q2; s1 is the mirror
    # -> Q4; s2 sits in the middle band. f = 2/3 > r_s = 0.25 at every iterate, so a halves 10 times:
    # a_10 = 0.49 / 2**10. K = max(1, round(0.75)) = 1, but both corners stay kept.
    sel = _select([8.0, 1.0, 4.0], [1.0, 8.0, 4.0], sample_ratio=0.25)
    assert sel.iterations == 10 and not sel.converged
    assert sel.alpha == pytest.approx(0.49 / 2**10)
    assert sel.target_count == 1
    assert sel.kept_role.tolist() == [2, 4, 0]
    assert not sel.supplemented.any()


def test_the_last_iterate_is_the_result_not_the_best():
    # r_s = 0.3, K = round(2.4) = 2. Iterates: a = 0.245 (f 0.25), 0.3675 (f 0.25), 0.42875 (f 0.5,
    # too many: a_hi = 0.42875), then a stays in (0.3675, 0.42875), where ppl_hi > 5 and
    # ent_lo < 4: Q2 = {s0}, Q4 = {s1}, f = 0.25 to the end. The best iterate (0.25, |f - r_s| = 0.05)
    # ties with the last; what must hold is that the reported alpha is the 10th midpoint, not 0.245.
    sel = _select(POOL_PPL, POOL_ENT, sample_ratio=0.3)
    a_lo, a_hi = 0.0, 0.49
    for f in [0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]:
        a = (a_lo + a_hi) / 2
        a_lo, a_hi = (a, a_hi) if f < 0.3 else (a_lo, a)
    assert sel.iterations == 10 and not sel.converged
    assert sel.alpha == pytest.approx((a_lo + a_hi) / 2)
    assert sel.bisection_kept_fraction == 0.25
    assert sel.kept_role.tolist() == [2, 4, 0, 0, 0, 0, 0, 0]


def test_last_iterate_even_when_an_earlier_one_was_closer():
    # r_s = 0.4 over the same pool: it1 f = 0.25 (|.15|), it2 f = 0.25, it3 f = 0.5 (|0.1|, the best),
    # then a falls back below 0.42875 and every later iterate keeps 2 (f = 0.25, |0.15|).
    # K = round(3.2) = 3: the supplement adds one, by distance: s5 |4-6| = 2/7 (Q4-like).
    sel = _select(POOL_PPL, POOL_ENT, sample_ratio=0.4)
    assert sel.iterations == 10 and not sel.converged
    assert sel.bisection_kept_fraction == 0.25  # the last, not the best (0.5)
    assert sel.kept_role.tolist() == [2, 4, 0, 0, 0, 4, 0, 0]
    assert sel.supplemented.tolist() == [False, False, False, False, False, True, False, False]


@pytest.mark.parametrize("n, r_s, expected_k", [(2, 0.25, 1), (6, 0.25, 2), (10, 0.25, 2), (14, 0.25, 4), (3, 0.1, 1)])
def test_target_count_uses_pythons_round(n, r_s, expected_k):
    # round(0.5) = 0 -> max(1, 0) = 1; round(1.5) = 2; round(2.5) = 2 (half to even); round(3.5) = 4.
    sel = _select([float(i + 1) for i in range(n)], [float(n - i) for i in range(n)], sample_ratio=r_s)
    assert sel.target_count == expected_k
    assert int((sel.kept_role != 0).sum()) >= expected_k


def test_samples_without_a_response_take_no_part():
    # The pool of 8 plus two samples with no trainable position: the same selection as before,
    # the extra samples dropped, quadrant 0, scores 0 (never NaN).
    ppl = POOL_PPL + [0.0, 0.0]
    ent = POOL_ENT + [0.0, 0.0]
    sel = _select(ppl, ent, valid=[True] * 8 + [False, False], sample_ratio=0.25)
    assert sel.pool_size == 8
    assert sel.kept_role.tolist() == [2, 4, 0, 0, 0, 0, 0, 0, 0, 0]
    assert sel.quadrant.tolist() == [2, 4, 1, 3, 3, 4, 2, 1, 0, 0]


def test_sample_ratio_one_keeps_everything_with_a_response():
    sel = _select(POOL_PPL + [0.0], POOL_ENT + [0.0], valid=[True] * 8 + [False], sample_ratio=1.0)
    assert (sel.kept_role[:8] != 0).all() and sel.kept_role[8] == 0


def test_no_sample_with_a_response():
    sel = _select([0.0, 0.0], [0.0, 0.0], valid=[False, False])
    assert sel.pool_size == 0 and (sel.kept_role == 0).all() and (sel.quadrant == 0).all()


# ---------------------------------------------------------------- stage 2: tokens


def _one_q2_sample(token_ppls, prompt=1, pad=1):
    """B = 1 (kept by the supplement as Q2-like), `prompt` untrained positions, then the response."""
    T = prompt + len(token_ppls) + pad
    nll = torch.zeros(1, T, dtype=torch.float64)
    nll[0, prompt : prompt + len(token_ppls)] = torch.log(torch.tensor(token_ppls, dtype=torch.float64))
    mask = torch.zeros(1, T, dtype=torch.bool)
    mask[0, prompt : prompt + len(token_ppls)] = True
    return nll, torch.ones_like(nll), mask


# Token ppl [2, 10, 3, 1, 5] at positions 1..5; lam = 0.5, neighbours summed, edges count 0:
#   s1 = 1 + (0 + 10)/2 = 6;  s2 = 5 + (2 + 3)/2 = 7.5;  s3 = 1.5 + (10 + 1)/2 = 7
#   s4 = 0.5 + (3 + 5)/2 = 4.5;  s5 = 2.5 + (1 + 0)/2 = 3
TOKENS = [2.0, 10.0, 3.0, 1.0, 5.0]


def test_smoothed_scores_sum_the_neighbours():
    nll, _, mask = _one_q2_sample(TOKENS)
    s = smoothed_token_ppl(nll, mask, 0.5)
    assert s[0, 1:6].tolist() == pytest.approx([6.0, 7.5, 7.0, 4.5, 3.0])
    assert s[0, 0] == 0 and s[0, 6] == 0


@pytest.mark.parametrize(
    "token_ratio, smoothing, direction, kept_positions",
    [
        (0.5, 0.5, "high", [4, 5]),  # keep floor(2.5) = 2: prune s2 7.5, s3 7, s1 6
        (0.5, 0.0, "high", [1, 4]),  # lam 0: s = ppl -> prune 10, 5, 3 (positions 2, 5, 3)
        (0.5, 0.5, "low", [2, 3]),  # reversed: prune the lowest s: 3, 4.5, 6 (positions 5, 4, 1)
        (0.1, 0.5, "high", [5]),  # floor(0.5) = 0 -> at least one token survives: the lowest s
        (1.0, 0.5, "high", [1, 2, 3, 4, 5]),  # token_ratio 1: no pruning
    ],
)
def test_per_sample_token_budget(token_ratio, smoothing, direction, kept_positions):
    nll, ent, mask = _one_q2_sample(TOKENS)
    cfg = QTuningConfig(sample_ratio=0.25, token_ratio=token_ratio, smoothing=smoothing, prune_direction=direction)
    plan = plan_batch(nll, ent, mask, cfg)
    assert plan.kept_role.tolist() == [2] and plan.supplemented.tolist() == [True]  # B = 1
    assert plan.token_keep[0].nonzero().flatten().tolist() == kept_positions
    assert plan.num_pruned_tokens == 5 - len(kept_positions)


def test_single_token_response_is_never_emptied():
    nll, ent, mask = _one_q2_sample([7.0])
    plan = plan_batch(nll, ent, mask, QTuningConfig(token_ratio=0.5))
    assert plan.token_keep.tolist() == mask.tolist()
    # its smoothed score: (1 - 0.5) * 7 + 0.5 * (0 + 0) = 3.5
    assert plan.token_score[0, 1].item() == pytest.approx(3.5)


def _three_sample_pool():
    """s0: Q2 (PPL 8-ish, low Ent), 6 non-pad positions, response at 1..5 with TOKENS.
    s1: Q4 (low PPL, high Ent), 4 non-pad positions, response at 2..3.
    s2: the middle, dropped, 10 non-pad positions, response at 5..9."""
    T = 10
    nll = torch.zeros(3, T, dtype=torch.float64)
    ent = torch.zeros(3, T, dtype=torch.float64)
    mask = torch.zeros(3, T, dtype=torch.bool)
    attn = torch.zeros(3, T, dtype=torch.bool)
    nll[0, 1:6] = torch.log(torch.tensor(TOKENS, dtype=torch.float64))  # PPL = exp(mean) = 30**0.2 = 1.97
    ent[0, 1:6] = 0.1
    mask[0, 1:6] = True
    attn[0, :6] = True
    nll[1, 2:4] = 0.01  # PPL 1.01
    ent[1, 2:4] = 5.0
    mask[1, 2:4] = True
    attn[1, :4] = True
    nll[2, 5:10] = 0.5  # PPL 1.65, between the two
    ent[2, 5:10] = 2.0
    mask[2, 5:10] = True
    attn[2, :10] = True
    return nll, ent, mask, attn


@pytest.mark.parametrize(
    "token_ratio, kept_positions_s0",
    [
        # T_all = 6 + 4 + 10 = 20; dropped by samples = 10 (s2); prune = 20 - target - 10.
        (0.9, [1, 3, 4, 5]),  # target round(9.0) = 9 -> prune 1: s2 = 7.5 (position 2)
        (0.85, [1, 4, 5]),  # target round(8.5) = 8 (half to even, not 9) -> prune 2: positions 2, 3
        (0.95, [1, 2, 3, 4, 5]),  # target round(9.5) = 10 -> prune 0
        (0.5, []),  # target 5 -> prune min(5, 5 candidates): a Q2 sample can lose every token
    ],
)
def test_batch_token_budget(token_ratio, kept_positions_s0):
    nll, ent, mask, attn = _three_sample_pool()
    cfg = QTuningConfig(sample_ratio=0.5, token_ratio=token_ratio, token_budget="batch")
    plan = plan_batch(nll, ent, mask, cfg, attention_mask=attn)
    # Stage 1: f = 2/3 at every iterate (s0, s1 are the corners), K = round(1.5) = 2.
    assert plan.kept_role.tolist() == [2, 4, 0]
    assert plan.token_keep[0].nonzero().flatten().tolist() == kept_positions_s0
    assert plan.token_keep[1].tolist() == mask[1].tolist()  # Q4 kept whole
    assert not plan.token_keep[2].any()  # dropped sample


def test_entropy_over_all_positions():
    # Sample 0: prompt entropy 4 at positions 0..1, response entropy 1 at 2..3.
    # response: Ent = 1; all non-pad: (4 + 4 + 1 + 1) / 4 = 2.5.
    nll = torch.full((1, 5), 0.5, dtype=torch.float64)
    ent = torch.tensor([[4.0, 4.0, 1.0, 1.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[False, False, True, True, False]])
    attn = torch.tensor([[True, True, True, True, False]])
    resp = plan_batch(nll, ent, mask, QTuningConfig(entropy_positions="response"), attention_mask=attn)
    full = plan_batch(nll, ent, mask, QTuningConfig(entropy_positions="all"), attention_mask=attn)
    assert resp.sample_entropy.tolist() == [1.0]
    assert full.sample_entropy.tolist() == [2.5]
    assert resp.sample_ppl.item() == pytest.approx(math.exp(0.5))


def test_batch_budget_and_all_positions_need_the_attention_mask():
    nll, ent, mask, _ = _three_sample_pool()
    with pytest.raises(ScoreError, match="attention_mask"):
        plan_batch(nll, ent, mask, QTuningConfig(token_budget="batch"))
    with pytest.raises(ScoreError, match="attention_mask"):
        plan_batch(nll, ent, mask, QTuningConfig(entropy_positions="all"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_broken_scores_raise(bad):
    nll, ent, mask, attn = _three_sample_pool()
    nll[2, 7] = bad
    with pytest.raises(ScoreError, match=r"token_nll is not finite .* sample 2, position 7"):
        plan_batch(nll, ent, mask, QTuningConfig())
    nll[2, 7] = 0.5
    ent[1, 3] = bad
    with pytest.raises(ScoreError, match=r"token_entropy is not finite .* sample 1, position 3"):
        plan_batch(nll, ent, mask, QTuningConfig())


def test_garbage_outside_the_masks_is_ignored():
    nll, ent, mask, attn = _three_sample_pool()
    clean = plan_batch(nll, ent, mask, QTuningConfig(), attention_mask=attn)
    nll[~mask] = float("nan")
    ent[~mask] = float("inf")
    dirty = plan_batch(nll, ent, mask, QTuningConfig(), attention_mask=attn)
    assert torch.equal(clean.token_keep, dirty.token_keep) and torch.equal(clean.kept_role, dirty.kept_role)


def test_plan_does_not_depend_on_the_score_dtype():
    nll, ent, mask, attn = _three_sample_pool()
    a = plan_batch(nll.float(), ent.float(), mask, QTuningConfig())
    b = plan_batch(nll.float().double(), ent.float().double(), mask, QTuningConfig())
    assert torch.equal(a.token_keep, b.token_keep) and a.alpha == b.alpha


def test_stats_are_plain_scalars():
    nll, ent, mask, attn = _three_sample_pool()
    stats = plan_batch(nll, ent, mask, QTuningConfig()).stats()
    assert stats["num_kept"] == 2 and stats["pool_size"] == 3
    assert sum(stats[f"quadrant_{q}"] for q in range(1, 5)) == 3
    assert all(isinstance(v, (int, float, bool)) for v in stats.values())


def test_a_plan_is_its_parts_and_its_counts_are_derived():
    from qtuning import ROLE_DROPPED, ROLE_Q2, ROLE_Q4, Role
    from qtuning.engine.scoring import SampleScores
    from qtuning.engine.selection import SampleSelection

    nll, ent, mask, attn = _three_sample_pool()
    plan = plan_batch(nll, ent, mask, QTuningConfig(), attention_mask=attn)
    assert isinstance(plan.selection, SampleSelection) and isinstance(plan.scores, SampleScores)
    assert plan.kept_role is plan.selection.kept_role and plan.sample_ppl is plan.scores.ppl
    assert plan.alpha == plan.selection.alpha and plan.ppl_mid == (plan.ppl_lo + plan.ppl_hi) / 2
    assert torch.equal(plan.sample_keep, plan.kept_role != Role.DROPPED)
    assert plan.num_kept == int(plan.sample_keep.sum()) and plan.num_kept_tokens == int(plan.token_keep.sum())
    kept_tokens = int(mask[plan.sample_keep].sum())
    assert plan.num_trainable_tokens_kept_samples == kept_tokens
    assert plan.num_pruned_tokens == kept_tokens - plan.num_kept_tokens > 0
    assert (ROLE_DROPPED, ROLE_Q2, ROLE_Q4) == (Role.DROPPED, Role.Q2, Role.Q4) == (0, 2, 4) and Role.KEPT == 1
    assert set(plan.kept_role.tolist()) <= {int(r) for r in Role} and plan.kept_role.dtype == torch.int64


def test_the_threshold_scalars_are_declared_once_in_thresholds():
    import dataclasses
    import inspect

    from qtuning import SelectionPlan
    from qtuning.engine.history import select_with_history
    from qtuning.engine.selection import SampleSelection
    from qtuning.engine.thresholds import Thresholds

    nll, ent, mask, attn = _three_sample_pool()
    plan = plan_batch(nll, ent, mask, QTuningConfig(), attention_mask=attn)
    # the selection holds one Thresholds; the scalars are read-only attributes of the selection and the plan
    assert isinstance(plan.selection.thresholds, Thresholds) and plan.thresholds is plan.selection.thresholds
    assert not {f.name for f in dataclasses.fields(SampleSelection)} & set(Thresholds.SCALARS)
    assert plan.thresholds.scalars() == {name: getattr(plan, name) for name in Thresholds.SCALARS}
    assert plan.bisection_kept_fraction == plan.thresholds.kept_fraction
    with pytest.raises(AttributeError):
        plan.selection.alpha = 0.5
    # the logged order: the pool's counts, the thresholds, then the plan's counts
    scalars = list(Thresholds.SCALARS)
    assert list(SelectionPlan.SCALARS[2 : 2 + len(scalars)]) == scalars
    assert SelectionPlan.SCALARS[:2] == ("pool_size", "target_count")
    # the history takes its roles from Role, not from parameters
    assert not {"role_high", "role_low"} & set(inspect.signature(select_with_history).parameters)


def test_keep_all_is_full_data_training():
    from qtuning import Role, SelectionPlan

    mask = torch.tensor([[False, True, True, False], [False, False, False, False], [True, True, True, True]])
    plan = SelectionPlan.keep_all(mask)
    assert plan.sample_keep.tolist() == [True, False, True] and torch.equal(plan.token_keep, mask)
    assert plan.kept_role.tolist() == [Role.Q4, Role.DROPPED, Role.Q4] and plan.kept_role.dtype == torch.int64
    assert (plan.num_kept, plan.num_kept_tokens, plan.num_pruned_tokens, plan.pool_size, plan.target_count) == (
        2,
        6,
        0,
        2,
        2,
    )
    assert plan.converged and plan.bisection_kept_fraction == 1.0 and plan.num_trainable_tokens.tolist() == [2, 0, 4]
    part = plan.take(1, 3, width=3)
    assert part.num_kept == 1 and part.num_kept_tokens == 3 and part.pool_size == 2


# --------------------------------------------------------------------------- noise-aware ablations
# One pool of 8, worked by hand. (ppl, ent): 0 (9,1), 1 (8,2), 2 (7,6), 3 (6,3), 4 (5,5), 5 (4,4), 6 (3,8),
# 7 (2,7). Min-max normalised: p = (ppl-2)/7, e = (ent-1)/7; toward Q2 = p - e = [1, 5/7, 0, 2/7, -1/7,
# -1/7, -6/7, -6/7], toward Q4 = e - p. One bisection iterate (a = 0.245): ppl lines (3.715, 7.285), ent
# lines (2.715, 6.285); Q2 = {0, 1}, Q4 = {6, 7}: 4 of 8. r_s = 0.75: K = 6, the supplement adds 2.
NOISE_PPL = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]
NOISE_ENT = [1.0, 2.0, 6.0, 3.0, 5.0, 4.0, 8.0, 7.0]


def _noise_pool(**overrides):
    cfg = QTuningConfig(sample_ratio=0.75, bisection_max_iters=1, **overrides)
    return select_samples(
        torch.tensor(NOISE_PPL, dtype=torch.float64),
        torch.tensor(NOISE_ENT, dtype=torch.float64),
        torch.ones(8, dtype=torch.bool),
        cfg,
    )


def test_supplement_nearest_corner_is_the_paper_rule():
    # candidates' depth max(p - e, e - p): 2 -> 0, 3 -> 2/7, 4 -> 1/7, 5 -> 1/7: sample 3 (toward Q2), then
    # the tie 4/5 goes to the lower index, 4 (toward Q4)
    s = _noise_pool()
    assert s.kept_role.tolist() == [2, 2, 0, 2, 4, 0, 4, 4]
    assert s.supplemented.tolist() == [False, False, False, True, True, False, False, False]


def test_supplement_toward_low_ppl_adds_calibration_samples_only():
    # depth toward Q4 only: 2 -> 0, 3 -> -2/7, 4 -> 1/7, 5 -> 1/7: samples 4 and 5, both kept whole (Q4)
    s = _noise_pool(supplement_toward="low_ppl")
    assert s.kept_role.tolist() == [2, 2, 0, 0, 4, 4, 4, 4]
    assert s.supplemented.tolist() == [False, False, False, False, True, True, False, False]


def test_q2_share_cap_swaps_the_shallowest_q2_for_the_deepest_low_ppl_candidate():
    # paper rule keeps Q2 = {0, 1, 3} of 6; a cap of 0.34 allows floor(0.34 * 6) = 2: the shallowest Q2
    # (sample 3, p - e = 2/7) gives way to the not-kept sample deepest toward Q4 (5: 1/7 against 2: 0)
    s = _noise_pool(max_q2_share=0.34)
    assert s.kept_role.tolist() == [2, 2, 0, 0, 4, 4, 4, 4]
    assert s.supplemented.tolist() == [False, False, False, False, True, True, False, False]
    assert _noise_pool(max_q2_share=0.5).kept_role.tolist() == [2, 2, 0, 2, 4, 0, 4, 4]  # 3 allowed: no change


def test_history_thresholds_need_a_window():
    cfg = QTuningConfig(thresholds="history")
    with pytest.raises(ConfigError, match="history"):
        select_samples(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]), torch.ones(2, dtype=torch.bool), cfg)
