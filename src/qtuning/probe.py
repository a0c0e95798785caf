"""The only code that runs a model to score a batch: a no-grad forward of the backbone, then
NLL and entropy from the final hidden states, chunked, only where they are needed.

The LM head is never applied to the whole (B, T, H) batch: at SmolLM2's 49k vocabulary the
(B, T, V) logits would dominate both the time and the memory of the pass.
"""

from __future__ import annotations

import torch

from .scoring import TokenScores, shift_labels, shift_mask, token_scores_from_hidden


def backbone_and_head(model):
    """(backbone returning last_hidden_state, output embedding module) of a causal LM (PEFT-aware)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings()
    backbone = getattr(inner, inner.base_model_prefix, None)
    if head is None or backbone is None:
        raise TypeError(f"{type(inner).__name__} has no separate backbone and output embedding to score with")
    return backbone, head


@torch.no_grad()
def score_batch(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    entropy_positions: str = "response",
    chunk_size: int = 512,
) -> tuple[TokenScores, torch.Tensor, torch.Tensor]:
    """Score a batch with the current model.

    input_ids, attention_mask, labels: (B, T), unshifted. Returns the token scores and the
    loss mask and attention mask on the shifted grid, ready for `plan_batch`.
    """
    backbone, head = backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    loss_mask = shift_labels(labels) != -100  # (B, T)
    shifted_attention = shift_mask(attention_mask)  # (B, T)
    positions = shifted_attention if entropy_positions == "all" else loss_mask
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    scores = token_scores_from_hidden(
        hidden, head.weight, labels, positions=positions, lm_head_bias=getattr(head, "bias", None),
        logit_softcap=softcap, chunk_size=chunk_size,
    )
    return scores, loss_mask, shifted_attention
