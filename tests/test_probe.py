"""The probe (backbone + chunked head) gives the scores that the model's own logits give."""

import pytest
import torch

from qtuning import QTuningConfig, plan_batch, token_scores_from_logits
from qtuning.modeling.probe import score_batch
from tests.helpers import random_batch, tiny_llama


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("entropy_positions", ["response", "all"])
def test_probe_matches_full_logits(tie, entropy_positions):
    model = tiny_llama(tie=tie)
    input_ids, attention_mask, labels = random_batch()
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
    scores, loss_mask, attention = score_batch(
        model, input_ids, attention_mask, labels, entropy_positions, chunk_size=5
    )
    positions = attention if entropy_positions == "all" else loss_mask
    ref = token_scores_from_logits(logits, labels, positions=positions)
    torch.testing.assert_close(scores.nll, ref.nll, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.entropy, ref.entropy, atol=1e-5, rtol=0)
    # and the plan is built from them without complaint
    plan = plan_batch(
        scores.nll,
        scores.entropy,
        loss_mask,
        QTuningConfig(entropy_positions=entropy_positions),
        attention_mask=attention,
    )
    assert plan.num_kept >= 1


def test_probe_sample_ppl_equals_the_models_own_loss():
    model = tiny_llama()
    input_ids, attention_mask, labels = random_batch(B=3)
    scores, loss_mask, _ = score_batch(model, input_ids, attention_mask, labels)
    plan = plan_batch(scores.nll, scores.entropy, loss_mask, QTuningConfig())
    for b in range(3):
        with torch.no_grad():
            out = model(
                input_ids=input_ids[b : b + 1], attention_mask=attention_mask[b : b + 1], labels=labels[b : b + 1]
            )
        assert plan.sample_ppl[b].item() == pytest.approx(out.loss.exp().item(), rel=1e-5)


def test_probe_works_through_peft():
    peft = pytest.importorskip("peft")
    model = tiny_llama()
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    input_ids, attention_mask, labels = random_batch()
    scores, loss_mask, _ = score_batch(lora, input_ids, attention_mask, labels)
    with torch.no_grad():
        logits = lora(input_ids=input_ids, attention_mask=attention_mask).logits
    ref = token_scores_from_logits(logits, labels)
    torch.testing.assert_close(scores.nll, ref.nll, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sub_batch_size", [1, 3])
def test_length_sorted_sub_batches_give_the_same_scores(sub_batch_size):
    model = tiny_llama()
    input_ids, attention_mask, labels = random_batch(B=7, T=14)
    whole, _, _ = score_batch(model, input_ids, attention_mask, labels)
    grouped, _, _ = score_batch(model, input_ids, attention_mask, labels, sub_batch_size=sub_batch_size)
    torch.testing.assert_close(grouped.nll, whole.nll, atol=1e-5, rtol=0)
    torch.testing.assert_close(grouped.entropy, whole.entropy, atol=1e-5, rtol=0)


def test_probe_switches_to_eval_only_when_the_model_has_dropout(monkeypatch):
    from qtuning.modeling.probe import has_dropout, score_batch

    input_ids, attention_mask, labels = random_batch(B=3, T=10)
    plain = tiny_llama()
    plain.train()
    assert not has_dropout(plain)
    calls = []
    monkeypatch.setattr(type(plain), "train", lambda self, mode=True: calls.append(mode) or self)
    score_batch(plain, input_ids, attention_mask, labels)
    assert calls == []  # no walk over every module on each step
    monkeypatch.undo()

    dropping = tiny_llama()
    dropping.config.attention_dropout = 0.5
    dropping.__dict__.pop("_qtuning_has_dropout", None)
    dropping.train()
    assert has_dropout(dropping)
    first, _, _ = score_batch(dropping, input_ids, attention_mask, labels)
    second, _, _ = score_batch(dropping, input_ids, attention_mask, labels)
    assert torch.equal(first.nll, second.nll)  # eval mode: attention dropout off, the same plan every time
    assert dropping.training  # and the training mode is restored


def test_a_model_that_returns_no_logits_is_refused_with_what_to_set():
    """Unsloth returns empty logits unless UNSLOTH_RETURN_LOGITS=1: one clear error, not a shape crash."""
    import types

    from qtuning.errors import ModelSpecError
    from qtuning.modeling.probe import check_head_path

    model = tiny_llama()
    original = model.forward

    def empty_logits(self, *args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = torch.empty(0)
        return out

    model.forward = types.MethodType(empty_logits, model)
    with pytest.raises(ModelSpecError, match="UNSLOTH_RETURN_LOGITS=1"):
        check_head_path(model)
    model.forward = original
    check_head_path(model)  # the same model with its logits passes
