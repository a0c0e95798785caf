"""Chunked scoring agrees with a naive full-softmax computation; per-sample PPL/Ent by hand."""

import math

import pytest
import torch

from qtuning import (
    IGNORE_INDEX,
    sample_scores,
    shift_labels,
    shift_mask,
    token_scores_from_hidden,
    token_scores_from_logits,
)


def naive_scores(logits, labels):
    """Full (B, T, V) softmax in float64: the definition, with no chunking and no tricks."""
    logits = logits[:, :-1].double()
    targets = labels[:, 1:]
    log_probs = torch.log_softmax(logits, dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    mask = targets != IGNORE_INDEX
    nll = -log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    pad = torch.zeros(labels.shape[0], 1, dtype=torch.float64)
    return torch.cat([torch.where(mask, nll, 0.0), pad], 1), torch.cat([torch.where(mask, entropy, 0.0), pad], 1)


def _batch(B=3, T=11, V=97, H=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g)
    weight = torch.randn(V, H, generator=g) * 0.5
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :4] = IGNORE_INDEX  # prompt
    labels[1, 8:] = IGNORE_INDEX  # padding
    labels[2, :] = IGNORE_INDEX  # no response at all
    return hidden, weight, labels


def test_shift_helpers():
    labels = torch.tensor([[-100, 5, 6, -100]])
    assert shift_labels(labels).tolist() == [[5, 6, -100, -100]]
    assert shift_mask(torch.tensor([[1, 1, 1, 0]])).tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_logits_path_matches_naive_full_softmax(chunk_size):
    hidden, weight, labels = _batch()
    logits = hidden @ weight.T  # (B, T, V)
    ref_nll, ref_ent = naive_scores(logits, labels)
    got = token_scores_from_logits(logits, labels, chunk_size=chunk_size)
    mask = shift_labels(labels) != IGNORE_INDEX
    assert got.nll.dtype == torch.float32
    torch.testing.assert_close(got.nll.double(), ref_nll, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.entropy.double()[mask], ref_ent[mask], atol=1e-5, rtol=0)
    assert (got.entropy[~mask] == 0).all()


@pytest.mark.parametrize("chunk_size", [2, 512])
def test_hidden_path_matches_naive_full_softmax(chunk_size):
    hidden, weight, labels = _batch()
    bias = torch.randn(weight.shape[0]) * 0.1
    ref_nll, ref_ent = naive_scores(hidden @ weight.T + bias, labels)
    got = token_scores_from_hidden(hidden, weight, labels, lm_head_bias=bias, chunk_size=chunk_size)
    mask = shift_labels(labels) != IGNORE_INDEX
    torch.testing.assert_close(got.nll.double(), ref_nll, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.entropy.double()[mask], ref_ent[mask], atol=1e-5, rtol=0)


def test_bf16_inputs_are_scored_in_fp32():
    hidden, weight, labels = _batch()
    hidden, weight = hidden.bfloat16(), weight.bfloat16()
    # the reference sees the same bf16 values, upcast: only the arithmetic precision differs
    ref_nll, ref_ent = naive_scores(hidden.double() @ weight.double().T, labels)
    got = token_scores_from_hidden(hidden, weight, labels)
    assert got.nll.dtype == torch.float32
    mask = shift_labels(labels) != IGNORE_INDEX
    torch.testing.assert_close(got.nll.double(), ref_nll, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.entropy.double()[mask], ref_ent[mask], atol=1e-5, rtol=0)


def test_explicit_positions_score_the_prompt_too():
    hidden, weight, labels = _batch()
    logits = hidden @ weight.T
    attention = torch.ones(labels.shape, dtype=torch.long)
    positions = shift_mask(attention)
    got = token_scores_from_logits(logits, labels, positions=positions)
    full_ent = -(torch.log_softmax(logits.double(), -1).exp() * torch.log_softmax(logits.double(), -1)).sum(-1)
    torch.testing.assert_close(got.entropy.double()[positions], full_ent[positions], atol=1e-5, rtol=0)
    # no target at the prompt: NLL stays 0 there
    assert (got.nll[:, :3] == 0).all()


def test_softcap_is_applied_before_the_softmax():
    hidden, weight, labels = _batch()
    cap = 2.0
    ref_nll, _ = naive_scores(cap * torch.tanh((hidden @ weight.T) / cap), labels)
    got = token_scores_from_hidden(hidden, weight, labels, logit_softcap=cap)
    torch.testing.assert_close(got.nll.double(), ref_nll, atol=1e-5, rtol=0)


def test_uniform_distribution_has_log_v_entropy():
    V = 50
    logits = torch.zeros(1, 3, V)
    labels = torch.tensor([[-100, 7, 9]])
    got = token_scores_from_logits(logits, labels)
    assert got.entropy[0, :2].tolist() == pytest.approx([math.log(V)] * 2, abs=1e-5)
    assert got.nll[0, :2].tolist() == pytest.approx([math.log(V)] * 2, abs=1e-5)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        token_scores_from_logits(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        token_scores_from_logits(torch.zeros(1, 3, 7), torch.zeros(1, 3, dtype=torch.long), chunk_size=0)


def test_sample_scores_by_hand():
    # sample 0: NLLs 1 and 3 -> PPL = exp(2); entropies 0.5 and 1.5 -> Ent 1.0
    # sample 1: no trainable position -> 0, 0, has_response False (never NaN)
    # sample 2: one token, NLL log 4 -> PPL 4; entropy over "all" = (2 + 6) / 2 = 4
    nll = torch.tensor([[0.0, 1.0, 3.0], [9.0, 9.0, 9.0], [0.0, math.log(4.0), 0.0]])
    ent = torch.tensor([[7.0, 0.5, 1.5], [9.0, 9.0, 9.0], [2.0, 6.0, 0.0]])
    loss = torch.tensor([[False, True, True], [False, False, False], [False, True, False]])
    attn = torch.tensor([[True, True, True], [True, True, False], [True, True, False]])
    s = sample_scores(nll, ent, loss)
    assert s.ppl.tolist() == pytest.approx([math.exp(2.0), 0.0, 4.0])
    assert s.entropy.tolist() == pytest.approx([1.0, 0.0, 6.0])
    assert s.num_tokens.tolist() == [2, 0, 1]
    assert s.has_response.tolist() == [True, False, True]
    assert s.ppl.dtype == torch.float64
    s_all = sample_scores(nll, ent, loss, attn, entropy_positions="all")
    assert s_all.entropy.tolist() == pytest.approx([(7.0 + 0.5 + 1.5) / 3, 0.0, 4.0])


def test_head_stays_fp32_inside_a_bf16_autocast_region():
    hidden, weight, labels = _batch()
    ref_nll, _ = naive_scores(hidden.double() @ weight.double().T, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = token_scores_from_hidden(hidden, weight, labels)
    torch.testing.assert_close(got.nll.double(), ref_nll, atol=1e-5, rtol=0)
