"""The baselines (qtuning.engine.policies) and the Q-Tuning ablations, on hand-worked pools, plus their
trainer integration on the tiny model."""

import math

import pytest
import torch
import torch.nn.functional as F

from qtuning import QTuningConfig, plan_batch
from qtuning.engine.config import ConfigError
from qtuning.engine.policies import baseline_keep, needs_scores, target_count, token_priority
from qtuning.engine.scoring import IGNORE_INDEX, shift_labels
from qtuning.engine.selection import ROLE_KEPT, ROLE_Q2, ROLE_Q4, prepare_scores, select_pool
from qtuning.modeling.probe import backbone_and_head, forward_final_hidden, nll_sum
from tests.helpers import random_batch, tiny_llama
from tests.test_trainer import first_batch, make_trainer


def _keep(method, ppl=None, ent=None, tokens=None, valid=None, ratio=0.25, **kw):
    n = len(next(v for v in (ppl, ent, tokens) if v is not None))
    ppl = torch.tensor(ppl if ppl is not None else [1.0] * n, dtype=torch.float64)
    ent = torch.tensor(ent if ent is not None else [0.0] * n, dtype=torch.float64)
    tokens = torch.tensor(tokens if tokens is not None else [1] * n)
    valid = torch.tensor(valid if valid is not None else [True] * n)
    return baseline_keep(method, ppl, ent, tokens, valid, ratio, **kw)


def test_target_count_is_the_supplement_target():
    assert target_count(8, 0.25) == 2
    assert target_count(10, 0.25) == 2  # round(2.5) = 2, half to even
    assert target_count(14, 0.25) == 4  # round(3.5) = 4
    assert target_count(3, 0.01) == 1  # at least one
    assert target_count(0, 0.5) == 0


def test_longest_keeps_the_shortest_responses():
    # 5 valid samples, K = round(0.4 * 5) = 2: the two shortest (1 and 2 tokens); the invalid row never.
    keep, weight = _keep("longest", tokens=[5, 1, 3, 9, 2, 0], valid=[True] * 5 + [False], ratio=0.4)
    assert keep.tolist() == [False, True, False, False, True, False]
    assert torch.equal(weight, torch.ones(6, dtype=torch.float64))


def test_entropy_keeps_the_highest_entropy():
    keep, _ = _keep("entropy", ent=[0.5, 2.0, 1.0, 3.0, 0.1, 2.5, 0.2, 0.3], ratio=0.25)  # K = 2
    assert keep.nonzero().flatten().tolist() == [3, 5]


def test_random_keeps_k_valid_samples_reproducibly():
    valid = [True, False] * 8  # 8 valid
    draws = []
    for seed in (0, 0, 1):
        keep, _ = _keep(
            "random", tokens=[1] * 16, valid=valid, ratio=0.5, generator=torch.Generator().manual_seed(seed)
        )
        assert int(keep.sum()) == 4 and not keep[1::2].any()
        draws.append(keep)
    assert torch.equal(draws[0], draws[1])
    assert any(
        not torch.equal(
            draws[0],
            _keep("random", tokens=[1] * 16, valid=valid, ratio=0.5, generator=torch.Generator().manual_seed(s))[0],
        )
        for s in range(1, 6)
    )


def test_infobatch_keeps_above_mean_loss_and_rescales_the_drawn_ones():
    # losses (log ppl) 1..8, mean 4.5: above-mean {4,5,6,7} (losses 5..8), below-mean {0,1,2,3}.
    ppl = [math.exp(v) for v in range(1, 9)]
    g = torch.Generator().manual_seed(0)
    # K = 6 > 4 above-mean: all 4 kept with weight 1, 2 of the 4 below-mean drawn with weight 4 / 2 = 2
    keep, weight = _keep("infobatch", ppl=ppl, ratio=0.75, generator=g)
    assert keep[4:].all() and int(keep[:4].sum()) == 2
    assert weight[4:].tolist() == [1.0] * 4
    assert sorted(weight[:4][keep[:4]].tolist()) == [2.0, 2.0]
    # K = 2 < 4 above-mean: 2 of them drawn, weight 4 / 2 = 2; no below-mean sample
    keep, weight = _keep("infobatch", ppl=ppl, ratio=0.25, generator=g)
    assert not keep[:4].any() and int(keep[4:].sum()) == 2
    assert weight[keep].tolist() == [2.0, 2.0]
    # annealing: the last 12.5% of training keeps everything, unweighted
    keep, weight = _keep("infobatch", ppl=ppl, ratio=0.25, progress=0.9, infobatch_anneal=0.125)
    assert keep.all() and (weight == 1).all()
    keep, _ = _keep("infobatch", ppl=ppl, ratio=0.25, progress=0.8, infobatch_anneal=0.125, generator=g)
    assert int(keep.sum()) == 2


def test_token_priorities():
    nll = torch.tensor([[0.0, math.log(3.0), math.log(2.0), 0.5]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True]])
    ppl = token_priority("ppl", nll, mask)
    assert ppl[0, 0] == 0 and torch.allclose(ppl[0, 1:], torch.tensor([3.0, 2.0, math.exp(0.5)], dtype=torch.float64))
    ref = torch.tensor([[9.0, 0.5, 1.0, 0.5]], dtype=torch.float64)
    rho = token_priority("rho1", nll, mask, reference_nll=ref)
    # excess loss nll - ref = [., 0.599, -0.307, 0.0]; priority is its negative
    assert torch.allclose(rho[0, 1:], -(nll[0, 1:] - ref[0, 1:]))
    noise = token_priority("random", nll, mask, generator=torch.Generator().manual_seed(0))
    assert noise[0, 0] == 0 and ((noise[0, 1:] > 0) & (noise[0, 1:] < 1)).all()
    with pytest.raises(ValueError, match="reference"):
        token_priority("rho1", nll, mask)


def _corner_pool():
    """Four one-token samples at the corners of the plane: A=(PPL 100, Ent 5) Q1, B=(100, 1) Q2,
    C=(1, 1) Q3, D=(1, 5) Q4. With r_s = 0.5 the second bisection iterate (a = b = 0.3675) puts
    ppl_hi = 89.85, ppl_lo = 11.15, ent_lo = 1.41, ent_hi = 4.59: each corner holds its one sample."""
    nll = torch.tensor([[math.log(100.0)], [math.log(100.0)], [0.0], [0.0]], dtype=torch.float64)
    ent = torch.tensor([[5.0], [1.0], [1.0], [5.0]], dtype=torch.float64)
    mask = torch.ones(4, 1, dtype=torch.bool)
    return nll, ent, mask


@pytest.mark.parametrize(
    "corners, kept, roles",
    [
        ("q2_q4", [1, 3], [ROLE_Q2, ROLE_Q4]),
        ("q1_q4", [0, 3], [ROLE_Q2, ROLE_Q4]),  # the high-PPL corner is Q1 now
        ("q2_q3", [1, 2], [ROLE_Q2, ROLE_Q4]),  # the low-PPL corner is Q3 now
    ],
)
def test_kept_quadrants_ablation(corners, kept, roles):
    nll, ent, mask = _corner_pool()
    plan = plan_batch(nll, ent, mask, QTuningConfig(sample_ratio=0.5, kept_quadrants=corners))
    assert plan.converged and plan.iterations == 2
    assert plan.sample_keep.nonzero().flatten().tolist() == kept
    assert plan.kept_role[kept].tolist() == roles
    assert plan.quadrant.tolist() == [1, 2, 3, 4]


def test_supplement_follows_the_kept_corners():
    # r_s = 0.75 on the corner pool: the bisection keeps at most one per corner, K = 3, so the
    # supplement adds the sample closest to a kept corner. Normalised: A=(1,1) B=(1,0) C=(0,0) D=(0,1).
    # q1_q4: toward the Q1 corner p + e - 1 = [1, 0, -1, 0]; toward Q4 e - p = [0, -1, 0, 1]: A and D are
    # kept, B and C tie at 0; the stable sort takes B (lower index), as a Q1-slot (p + e - 1 = 0 >= -1).
    nll, ent, mask = _corner_pool()
    plan = plan_batch(nll, ent, mask, QTuningConfig(sample_ratio=0.75, kept_quadrants="q1_q4"))
    assert plan.num_kept == 3
    assert plan.supplemented.tolist() == [False, True, False, False]
    assert plan.kept_role.tolist() == [ROLE_Q2, ROLE_Q2, 0, ROLE_Q4]


def test_prune_tokens_in_q2_and_q4():
    # Two samples of 4 response tokens: B (high PPL, low Ent) is Q2, D (low PPL, high Ent) is Q4.
    nll = torch.tensor([[2.0, 3.0, 1.0, 0.5], [0.1, 0.4, 0.2, 0.3]], dtype=torch.float64)
    ent = torch.tensor([[0.1] * 4, [3.0] * 4], dtype=torch.float64)
    mask = torch.ones(2, 4, dtype=torch.bool)
    cfg = dict(sample_ratio=1.0, token_ratio=0.5, smoothing=0.0)
    only_q2 = plan_batch(nll, ent, mask, QTuningConfig(**cfg))
    both = plan_batch(nll, ent, mask, QTuningConfig(**cfg, prune_tokens_in="q2_q4"))
    assert only_q2.kept_role.tolist() == [ROLE_Q2, ROLE_Q4]
    # Q2 keeps its 2 lowest-ppl tokens (positions 2, 3); Q4 kept whole unless q2_q4 (then positions 0, 2)
    assert only_q2.token_keep.tolist() == [[False, False, True, True], [True, True, True, True]]
    assert both.token_keep.tolist() == [[False, False, True, True], [True, False, True, False]]


def test_baseline_sample_pruner_with_ppl_tokens_and_batch_budget():
    nll = torch.tensor([[2.0, 3.0, 1.0, 0.0], [0.1, 0.4, 0.2, 0.3], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    ent = torch.tensor([[1.0] * 4, [3.0] * 4, [2.0] * 4], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False], [True] * 4, [True, True, False, False]])
    cfg = QTuningConfig(sample_pruner="entropy", token_pruner="ppl", sample_ratio=0.67, token_ratio=0.5)
    plan = plan_batch(nll, ent, mask, cfg)
    # K = round(0.67 * 3) = 2: entropies 1, 3, 2 -> samples 1 and 2, both token-prunable (ROLE_KEPT)
    assert plan.kept_role.tolist() == [0, ROLE_KEPT, ROLE_KEPT]
    # per sample, floor(0.5 * n) kept: sample 1 keeps its 2 lowest-ppl tokens (0, 2), sample 2 one of its tied
    # pair (the stable sort prunes the earlier one first)
    assert plan.token_keep.tolist() == [[False] * 4, [True, False, True, False], [False, True, False, False]]
    # the batch budget: T_all = 9 (attention = loss mask here), target round(9 * 0.67 * 0.5) = round(3.015) = 3,
    # drop 6; the dropped sample 0 counts 3, so 3 more go: the 3 highest ppl among samples 1 and 2
    # (sample 2's two tokens at e^1, then sample 1's position 1 at e^0.4)
    attention = mask.clone()
    plan = plan_batch(
        nll,
        ent,
        mask,
        QTuningConfig(
            sample_pruner="entropy", token_pruner="ppl", sample_ratio=0.67, token_ratio=0.5, token_budget="batch"
        ),
        attention_mask=attention,
    )
    assert plan.num_kept_tokens == 3
    assert plan.token_keep.tolist() == [[False] * 4, [True, False, True, True], [False] * 4]


def test_token_pruner_none_and_random():
    nll = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ent = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 6, dtype=torch.bool)
    plan = plan_batch(nll, ent, mask, QTuningConfig(sample_pruner="none", token_pruner="none"))
    assert plan.sample_keep.all() and plan.token_keep.all()
    plan = plan_batch(nll, ent, mask, QTuningConfig(sample_pruner="none", token_pruner="random"))
    assert plan.token_keep.sum(dim=1).tolist() == [3, 3, 3, 3]


def test_unknown_pruners_are_refused():
    with pytest.raises(ConfigError, match="sample_pruner='longst'"):
        QTuningConfig(sample_pruner="longst")
    with pytest.raises(ConfigError, match="token_pruner"):
        QTuningConfig(token_pruner="rho2")
    with pytest.raises(ConfigError, match="kept_quadrants"):
        QTuningConfig(kept_quadrants="q1_q3")


def test_needs_scores():
    assert not needs_scores("random", "random") and not needs_scores("longest", "none")
    assert needs_scores("random", "ppl") and needs_scores("infobatch", "none") and needs_scores("qtuning", "none")


def test_select_pool_uses_the_baseline_and_its_weights():
    nll = torch.tensor([[float(v)] for v in range(1, 9)], dtype=torch.float64)
    batch = prepare_scores(
        nll, torch.zeros_like(nll), torch.ones(8, 1, dtype=torch.bool), QTuningConfig(sample_pruner="infobatch")
    )
    selection = select_pool(
        batch.scores, QTuningConfig(sample_pruner="infobatch", sample_ratio=0.75), torch.Generator().manual_seed(0)
    )
    assert (selection.kept_role != 0).sum() == 6 and selection.weight is not None
    assert selection.weight[selection.kept_role != 0].sum() == 4 * 1.0 + 2 * 2.0


def test_weighted_nll_sum_matches_per_row_weighting():
    model = tiny_llama()
    input_ids, attention_mask, labels = random_batch(B=3, T=10)
    weights = torch.tensor([2.0, 0.5, 1.0])
    with torch.no_grad():
        hidden = forward_final_hidden(model, input_ids, attention_mask)
        targets = shift_labels(labels)
        logits = backbone_and_head(model)[1](hidden).float()  # (B, T, V)
        per_token = F.cross_entropy(logits.flatten(0, 1), targets.flatten().clamp(min=0), reduction="none").view(3, -1)
        expected = (per_token * (targets != IGNORE_INDEX) * weights[:, None]).sum()
        for chunk in (0, 4):  # unchunked and checkpointed chunks
            got = nll_sum(model, hidden, targets, chunk, row_weight=weights)
            assert torch.allclose(got, expected, rtol=1e-5), (chunk, got, expected)


def test_trainer_random_pruner_skips_the_probe(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, sample_pruner="random", token_pruner="random", sample_ratio=0.25)
    calls = []
    monkeypatch.setattr(trainer, "_score_micro_batch", lambda batch: calls.append(1))
    batch = first_batch(trainer)
    batches, num_items = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    plan = batches[0]["qtuning_plan"]
    assert calls == [] and plan.num_kept == 2  # K = round(0.25 * 8)
    kept_rows = plan.sample_keep.nonzero().flatten()
    n = plan.num_trainable_tokens[kept_rows]
    assert plan.token_keep[kept_rows].sum(dim=1).tolist() == torch.clamp((n * 0.5).floor(), min=1).long().tolist()
    assert int(num_items) == plan.num_kept_tokens


def test_trainer_infobatch_applies_the_weights(tmp_path):
    trainer = make_trainer(tmp_path, sample_pruner="infobatch", token_pruner="none", sample_ratio=0.75, max_steps=1)
    batch = first_batch(trainer)
    batches, num_items = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    plan = batches[0]["qtuning_plan"]
    assert plan.sample_weight is not None and (plan.sample_weight[plan.sample_keep] > 1).any()
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, dict(batches[0]), num_items_in_batch=num_items)
    # reference: per-row CE sums over the kept rows, weighted, over the kept tokens
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = torch.where(plan.token_keep, shift_labels(batch["labels"]), IGNORE_INDEX)
        per_token = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view(targets.shape)
        expected = (per_token.sum(dim=1) * plan.sample_weight.float()).sum() / plan.num_kept_tokens
    assert torch.allclose(loss.detach(), expected, rtol=1e-4), (loss, expected)


@pytest.mark.parametrize("lora", [False, True])
def test_trainer_rho1_reference_is_the_initial_model(tmp_path, lora):
    # with LoRA the reference is the model with its adapters switched off; without, a frozen copy
    from peft import LoraConfig

    from qtuning.training.sft_config import QTuningSFTConfig
    from qtuning.training.trainer import QTuningSFTTrainer
    from tests.helpers import tiny_dataset, tiny_tokenizer

    cfg = QTuningSFTConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=2,
        report_to=[],
        learning_rate=0.5,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        probe_precision="same",
        token_pruner="rho1",
        sample_pruner="random",
    )
    peft = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM") if lora else None
    trainer = QTuningSFTTrainer(
        model=tiny_llama(),
        args=cfg,
        train_dataset=tiny_dataset(32),
        processing_class=tiny_tokenizer(),
        peft_config=peft,
    )
    assert (trainer._qt_reference is None) == lora
    batch = first_batch(trainer)
    before = trainer._reference_nll(batch)
    trainer.train()
    assert torch.allclose(before, trainer._reference_nll(batch), atol=1e-5)  # the reference did not move
    part = trainer._score_micro_batch(batch)
    assert part.reference_nll is not None
    assert not torch.allclose(part.token_nll, part.reference_nll, atol=1e-4)  # but the model did
