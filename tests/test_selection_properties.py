"""Property tests: invariants of a plan, and agreement with the naive reference in reference.py."""

import math

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qtuning import QTuningConfig, plan_batch
from qtuning.engine.selection import ROLE_Q2, ROLE_Q4
from tests.reference import reference_prune, reference_select

# Few distinct values on purpose: ties between samples and between tokens are the hard cases.
score_values = st.one_of(st.sampled_from([0.0, 0.25, 1.0, 2.0, 3.5]), st.floats(0.0, 6.0, allow_nan=False))


@st.composite
def batches(draw):
    B = draw(st.integers(1, 10))
    T = draw(st.integers(1, 9))
    nll = torch.tensor(
        draw(st.lists(st.lists(score_values, min_size=T, max_size=T), min_size=B, max_size=B)), dtype=torch.float64
    )
    ent = torch.tensor(
        draw(st.lists(st.lists(score_values, min_size=T, max_size=T), min_size=B, max_size=B)), dtype=torch.float64
    )
    # Right-padded rows: a prompt, a response (possibly empty), then padding.
    loss_mask = torch.zeros(B, T, dtype=torch.bool)
    attention = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        length = draw(st.integers(0, T))
        prompt = draw(st.integers(0, length))
        attention[b, :length] = True
        loss_mask[b, prompt:length] = True
    cfg = QTuningConfig(
        sample_ratio=draw(st.sampled_from([0.0625, 0.125, 0.25, 0.3, 0.5, 0.75, 1.0])),
        token_ratio=draw(st.sampled_from([0.1, 0.5, 0.7, 1.0])),
        smoothing=draw(st.sampled_from([0.0, 0.5, 1.0])),
        token_budget=draw(st.sampled_from(["per_sample", "batch"])),
        prune_direction=draw(st.sampled_from(["high", "low"])),
        entropy_positions=draw(st.sampled_from(["response", "all"])),
    )
    return nll, ent, loss_mask, attention, cfg


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(batches())
def test_plan_invariants(batch):
    nll, ent, loss_mask, attention, cfg = batch
    plan = plan_batch(nll, ent, loss_mask, cfg, attention_mask=attention)
    valid = loss_mask.any(dim=1)
    n = int(valid.sum())

    assert torch.equal(plan.sample_keep, plan.kept_role != 0)
    assert set(plan.kept_role.unique().tolist()) <= {0, ROLE_Q2, ROLE_Q4}
    assert not plan.sample_keep[~valid].any()  # no response: never kept
    assert (plan.quadrant[~valid] == 0).all() and (plan.quadrant[valid] >= 1).all()
    assert torch.isfinite(plan.sample_ppl).all() and torch.isfinite(plan.sample_entropy).all()
    assert not (plan.supplemented & ~plan.sample_keep).any()
    if n:
        k = min(n, max(1, round(cfg.sample_ratio * n)))
        assert plan.target_count == k and plan.num_kept >= k
        assert 1 <= plan.iterations <= cfg.bisection_max_iters
        assert 0 < plan.alpha < cfg.bisection_upper
    if cfg.sample_ratio == 1.0:
        assert torch.equal(plan.sample_keep, valid)

    # tokens: a subset of the loss mask, nothing on dropped samples, Q4 whole
    assert not (plan.token_keep & ~loss_mask).any()
    assert not plan.token_keep[~plan.sample_keep].any()
    q4 = plan.kept_role == ROLE_Q4
    assert torch.equal(plan.token_keep[q4], loss_mask[q4])
    q2 = plan.kept_role == ROLE_Q2
    kept_per_sample = plan.token_keep.sum(dim=1)
    trainable = loss_mask.sum(dim=1)
    if cfg.token_ratio == 1.0:
        assert torch.equal(plan.token_keep, loss_mask & plan.sample_keep.unsqueeze(1))
    elif cfg.token_budget == "per_sample":
        for b in q2.nonzero().flatten().tolist():
            assert kept_per_sample[b] == max(1, math.floor(cfg.token_ratio * int(trainable[b])))
    else:
        total = int(attention.sum())
        target = round(total * cfg.sample_ratio * cfg.token_ratio)
        dropped = int(attention[~plan.sample_keep].sum())
        expected = min(max(0, total - target - dropped), int(trainable[q2].sum()))
        assert plan.num_pruned_tokens == expected
    assert plan.num_kept_tokens == int(plan.token_keep.sum())


@SETTINGS
@given(batches())
def test_plan_matches_the_naive_reference(batch):
    nll, ent, loss_mask, attention, cfg = batch
    plan = plan_batch(nll, ent, loss_mask, cfg, attention_mask=attention)
    valid = loss_mask.any(dim=1).tolist()
    # Stage 1 from the same per-sample scores (so that summation order cannot differ).
    ref = reference_select(plan.sample_ppl.tolist(), plan.sample_entropy.tolist(), valid, cfg.sample_ratio)
    assert plan.kept_role.tolist() == ref["kept_role"]
    assert plan.supplemented.tolist() == ref["supplemented"]
    assert plan.quadrant.tolist() == ref["quadrant"]
    assert plan.iterations == ref["iterations"] and plan.converged == ref["converged"]
    assert plan.alpha == ref["alpha"]
    token_ppl = torch.exp(torch.where(loss_mask, nll, 0.0)).tolist()
    keep = reference_prune(
        token_ppl,
        loss_mask.tolist(),
        attention.tolist(),
        ref["kept_role"],
        cfg.sample_ratio,
        cfg.token_ratio,
        cfg.smoothing,
        cfg.token_budget,
        cfg.prune_direction,
    )
    assert plan.token_keep.tolist() == keep


@SETTINGS
@given(batches(), st.randoms(use_true_random=False))
def test_permuting_the_batch_permutes_the_plan(batch, rnd):
    nll, ent, loss_mask, attention, cfg = batch
    # Distinct sample scores, so that no tie is broken by the batch order.
    B = nll.shape[0]
    nll = nll + torch.arange(B, dtype=torch.float64).unsqueeze(1) * 1e-3
    ent = ent + torch.arange(B, dtype=torch.float64).flip(0).unsqueeze(1) * 1e-3
    perm = list(range(B))
    rnd.shuffle(perm)
    perm_t = torch.tensor(perm)
    a = plan_batch(nll, ent, loss_mask, cfg, attention_mask=attention)
    assume(not _supplement_has_ties(a, loss_mask.any(dim=1)))  # ties go to the lower index, by rule
    b = plan_batch(nll[perm_t], ent[perm_t], loss_mask[perm_t], cfg, attention_mask=attention[perm_t])
    assert torch.equal(a.kept_role[perm_t], b.kept_role)
    if cfg.token_budget == "per_sample":  # the batch budget's global top-k breaks token ties by batch order
        assert torch.equal(a.token_keep[perm_t], b.token_keep)


def _supplement_has_ties(plan, valid) -> bool:
    if not plan.supplemented.any():
        return False

    def norm(x):
        lo, hi = x[valid].min(), x[valid].max()
        return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)

    distance = (norm(plan.sample_ppl) - norm(plan.sample_entropy)).abs()
    candidates = valid & ~(plan.sample_keep & ~plan.supplemented)
    values = distance[candidates].tolist()
    return len({round(v, 9) for v in values}) < len(values)


@SETTINGS
@given(batches(), st.integers(1, 4))
def test_a_pool_of_parts_plans_like_their_concatenation(batch, n_parts):
    from qtuning.engine.selection import concat_scored, plan_pool, prepare_scores

    nll, ent, loss_mask, attention, cfg = batch
    B = nll.shape[0]
    cuts = sorted({0, B, *[(B * k) // n_parts for k in range(1, n_parts)]})
    parts = []
    for start, stop in zip(cuts[:-1], cuts[1:]):
        # each part trimmed to its own width, as micro-batches collated apart would be
        used = attention[start:stop].any(dim=0).nonzero()
        width = int(used.max()) + 1 if used.numel() else 1
        parts.append(
            prepare_scores(
                nll[start:stop, :width],
                ent[start:stop, :width],
                loss_mask[start:stop, :width],
                cfg,
                attention[start:stop, :width],
            )
        )
    whole = plan_batch(nll, ent, loss_mask, cfg, attention_mask=attention)
    plans = plan_pool(parts, cfg)
    for i, (start, stop) in enumerate(zip(cuts[:-1], cuts[1:])):
        width = parts[i].loss_mask.shape[1]
        assert torch.equal(plans[i].kept_role, whole.kept_role[start:stop])
        assert torch.equal(plans[i].token_keep, whole.token_keep[start:stop, :width])
        assert not whole.token_keep[start:stop, width:].any()
        assert plans[i].alpha == whole.alpha and plans[i].iterations == whole.iterations
    assert sum(p.num_kept_tokens for p in plans.values()) == whole.num_kept_tokens
    assert concat_scored(parts).scores.ppl.shape == whole.sample_ppl.shape
