"""Scores of the Error-Uncertainty plane (docs/algorithm.md section 1). Pure torch, no model code.

Shapes: B samples, T positions, V vocabulary, H hidden size, N scored positions.

Alignment convention (the one every function here and in `selection` uses): scores live on the
(B, T) grid of the *inputs*, and position t holds the prediction of token t + 1, i.e. the causal
shift is applied to the labels, not to the logits (`shift_labels`). The last column therefore
never carries a score. Masks passed next to scores (loss mask, attention mask) are aligned the
same way: build them with `shift_labels(labels) != IGNORE_INDEX` and `shift_mask(attention_mask)`.

The per-token NLL and entropy are computed over the FULL vocabulary in fp32, in chunks of
positions, so the extra memory is O(chunk x V) and never a second (B, T, V) tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # the label of a position without a loss (prompt, pad), as in torch's cross_entropy
DEFAULT_CHUNK_SIZE = 512


@dataclass
class TokenScores:
    """Per-token scores on the (B, T) grid; 0 where a position was not scored.

    Attributes:
        nll: (B, T) fp32, -log p(target); 0 where not scored or the target is IGNORE_INDEX.
        entropy: (B, T) fp32, entropy of the predictive distribution; 0 where not scored.
    """

    nll: torch.Tensor
    entropy: torch.Tensor


@dataclass
class SampleScores:
    """Per-sample coordinates on the EU plane (float64).

    Attributes:
        ppl: (B,) exp(mean NLL over trainable positions); 0 where has_response is False.
        entropy: (B,) mean entropy over the chosen positions (`entropy_positions`); 0 where has_response
            is False.
        num_tokens: (B,) int64, trainable positions per sample.
        has_response: (B,) bool, at least one trainable position.
    """

    ppl: torch.Tensor
    entropy: torch.Tensor
    num_tokens: torch.Tensor
    has_response: torch.Tensor


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, T) labels -> (B, T) targets: targets[:, t] = labels[:, t + 1], last column ignored.

    Args:
        labels: (B, T) int labels of the input tokens, unshifted.
        ignore_index: The value of the last column (no next token to predict).

    Returns:
        (B, T) targets on the scores' grid: position t holds the token that position t predicts.
    """
    pad = torch.full_like(labels[:, :1], ignore_index)
    return torch.cat([labels[:, 1:], pad], dim=1)


def shift_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask of input tokens -> (B, T) mask of positions whose *target* token is set.

    Args:
        mask: (B, T) mask (bool or 0/1) of input tokens, e.g. the attention mask.

    Returns:
        (B, T) bool: mask[:, t + 1] at position t, False in the last column.
    """
    mask = mask.bool()
    return torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)


def nll_and_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX):
    """NLL and entropy of rows of logits, in fp32.

    Args:
        logits: (N, V), any float dtype.
        targets: (N,) int, `ignore_index` where there is no target.
        ignore_index: The target value that marks "no target".

    Returns:
        nll (N,) (0 at ignored targets) and entropy (N,), both fp32.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # (N,)
    has_target = targets != ignore_index
    safe_targets = torch.where(has_target, targets, torch.zeros_like(targets))
    nll = -log_probs.gather(1, safe_targets.long().unsqueeze(1)).squeeze(1)  # (N,)
    nll = torch.where(has_target, nll, torch.zeros_like(nll))
    return nll, entropy


def _scores_at_positions(
    rows_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    positions: torch.Tensor,
    chunk_size: int,
) -> TokenScores:
    """Evaluate `rows_at(batch_idx, time_idx) -> (c, V) logits` chunk by chunk at `positions`."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is not allowed: expected an integer >= 1")
    batch_idx, time_idx = positions.nonzero(as_tuple=True)  # (N,), (N,)
    nll = torch.zeros(positions.shape, dtype=torch.float32, device=positions.device)  # (B, T)
    entropy = torch.zeros_like(nll)
    for start in range(0, batch_idx.numel(), chunk_size):
        b = batch_idx[start : start + chunk_size]
        t = time_idx[start : start + chunk_size]
        chunk_nll, chunk_entropy = nll_and_entropy(rows_at(b, t), targets[b, t])
        nll[b, t] = chunk_nll
        entropy[b, t] = chunk_entropy
    return TokenScores(nll=nll, entropy=entropy)


def _default_positions(targets: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    if positions is None:
        return targets != IGNORE_INDEX
    if positions.shape != targets.shape:
        raise ValueError(f"positions has shape {tuple(positions.shape)}, expected {tuple(targets.shape)}")
    return positions.bool()


@torch.no_grad()
def token_scores_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    positions: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> TokenScores:
    """Per-token NLL and entropy from a causal LM's logits.

    Computed over the full vocabulary in fp32, `chunk_size` positions at a time.

    Args:
        logits: (B, T, V), unshifted, as the model returns them.
        labels: (B, T), unshifted, with IGNORE_INDEX on prompt and pad tokens.
        positions: Optional bool (B, T) on the shifted grid: the positions to score (default: trainable
            positions, `shift_labels(labels) != IGNORE_INDEX`).
        chunk_size: Positions scored at a time (>= 1); the extra memory is O(chunk_size x V).

    Returns:
        TokenScores on the shifted (B, T) grid, 0 where a position was not scored.

    Raises:
        ValueError: logits is not (B, T, V) with labels (B, T), positions is not (B, T), or
            chunk_size < 1.
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match: expected (B, T, V) and (B, T)"
        )
    targets = shift_labels(labels)
    positions = _default_positions(targets, positions)
    return _scores_at_positions(lambda b, t: logits[b, t], targets, positions, chunk_size)


@torch.no_grad()
def token_scores_from_hidden(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    positions: torch.Tensor | None = None,
    lm_head_bias: torch.Tensor | None = None,
    logit_softcap: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> TokenScores:
    """Per-token NLL and entropy from final hidden states and the output embedding.

    Logits are only ever formed for `chunk_size` positions at a time, in fp32 (even inside a bf16
    autocast region), so no (B, T, V) tensor exists. A sharded (FSDP2 DTensor) weight or bias is
    gathered whole first.

    Args:
        hidden_states: (B, T, H) final hidden states, unshifted.
        lm_head_weight: (V, H) output embedding.
        labels: (B, T), unshifted, with IGNORE_INDEX on prompt and pad tokens.
        positions: Optional bool (B, T) on the shifted grid: the positions to score (default: trainable
            positions, `shift_labels(labels) != IGNORE_INDEX`).
        lm_head_bias: (V,) output bias, or None.
        logit_softcap: If set, applies cap * tanh(logits / cap) (Gemma-style models).
        chunk_size: Positions scored at a time (>= 1); the extra memory is O(chunk_size x V).

    Returns:
        TokenScores on the shifted (B, T) grid, 0 where a position was not scored.

    Raises:
        ValueError: hidden_states is not (B, T, H) with labels (B, T), positions is not (B, T), or
            chunk_size < 1.
    """
    if hidden_states.dim() != 3 or hidden_states.shape[:2] != labels.shape:
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} and labels {tuple(labels.shape)} do not match: "
            "expected (B, T, H) and (B, T)"
        )
    weight = _full(lm_head_weight).float()  # (V, H): upcast once, not per chunk
    bias = None if lm_head_bias is None else _full(lm_head_bias).float()

    def rows_at(b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden_states.device.type, enabled=False):  # fp32 even inside a bf16 autocast region
            logits = hidden_states[b, t].float() @ weight.T  # (c, V)
        if bias is not None:
            logits = logits + bias
        if logit_softcap is not None:
            logits = logit_softcap * torch.tanh(logits / logit_softcap)
        return logits

    targets = shift_labels(labels)
    positions = _default_positions(targets, positions)
    return _scores_at_positions(rows_at, targets, positions, chunk_size)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP2 DTensor) parameter gathered whole; any other tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def sample_scores(
    token_nll: torch.Tensor,
    token_entropy: torch.Tensor,
    loss_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    entropy_positions: str = "response",
) -> SampleScores:
    """Per-sample PPL and Ent (docs/algorithm.md section 1), in float64.

    A sample with no trainable position gets ppl = entropy = 0 and has_response = False: it never
    becomes a NaN.

    Args:
        token_nll: (B, T) per-token NLL.
        token_entropy: (B, T) per-token entropy.
        loss_mask: Bool (B, T), trainable positions (aligned with the scores).
        attention_mask: Bool (B, T), non-pad positions (aligned with the scores); needed only with
            entropy_positions="all".
        entropy_positions: "response" (the entropy is averaged over loss_mask) or "all" (over
            attention_mask instead).

    Returns:
        SampleScores: ppl = exp(mean NLL over loss_mask), the mean entropy, the trainable positions
        per sample and whether there is at least one, each (B,).

    Raises:
        ValueError: entropy_positions is neither "response" nor "all", or is "all" without an
            attention_mask.
    """
    loss_mask = loss_mask.bool()
    nll = torch.where(loss_mask, token_nll.double(), 0.0)  # (B, T)
    num_tokens = loss_mask.sum(dim=1)  # (B,)
    has_response = num_tokens > 0
    denom = num_tokens.clamp(min=1).double()
    ppl = torch.where(has_response, torch.exp(nll.sum(dim=1) / denom), 0.0)  # (B,)

    if entropy_positions == "response":
        ent_mask = loss_mask
    elif entropy_positions == "all":
        if attention_mask is None:
            raise ValueError('entropy_positions="all" needs attention_mask (non-pad positions)')
        ent_mask = attention_mask.bool()
    else:
        raise ValueError(f"entropy_positions={entropy_positions!r} is not allowed: expected 'response' or 'all'")
    ent_sum = torch.where(ent_mask, token_entropy.double(), 0.0).sum(dim=1)
    ent = ent_sum / ent_mask.sum(dim=1).clamp(min=1).double()
    ent = torch.where(has_response, ent, 0.0)
    return SampleScores(ppl=ppl, entropy=ent, num_tokens=num_tokens, has_response=has_response)
