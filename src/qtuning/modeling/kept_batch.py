"""The kept batch: what one selection plan trains on, and its loss. Used by the trainer and by QTuner.

    kept = apply_plan(batch, plan)                     # kept rows, pad trimmed, pruned labels -100
    loss = loss_on_kept(model, kept, num_items=None)   # sum of CE over kept tokens / num_items

`kept` is an ordinary batch (input_ids, attention_mask, labels), plus "loss_weight" when the plan
carries sample weights (InfoBatch's rescaling).
"""

from __future__ import annotations

import torch

from ..engine.scoring import IGNORE_INDEX, shift_labels
from ..engine.selection import SelectionPlan
from .probe import forward_final_hidden, nll_sum

LOSS_WEIGHT_KEY = "loss_weight"


def apply_plan(batch: dict, plan: SelectionPlan) -> dict:
    """The kept rows of a right-padded batch, trailing all-pad columns trimmed, pruned labels set to -100.

    The plan's token_keep lives on the shifted grid (position t decides the label of token t + 1). A
    pool in which no row is kept returns row 0 with every label masked, so that a forward/backward
    still happens (collectives in distributed training stay in step) and contributes zero.

    Args:
        batch: input_ids, attention_mask, labels (B, T), unshifted and right-padded.
        plan: The batch's SelectionPlan (`plan_batch`, `QTuner.plan`): sample_keep (B,), token_keep
            (B, T) on the shifted grid, and sample weights where the policy sets them.

    Returns:
        The kept batch: input_ids, attention_mask, labels (B', T'), on the batch's device, T' the
        last column that a kept row uses + 1. A plan with sample weights adds "loss_weight" (B',)
        float32: `loss_on_kept` applies it (a plain `model(**kept)` would not accept it).

    Raises:
        KeyError: `batch` lacks input_ids, attention_mask or labels.
    """
    labels = batch["labels"]
    token_keep = plan.token_keep.to(labels.device)  # (B, T), shifted grid
    masked = torch.full_like(labels, IGNORE_INDEX)
    masked[:, 1:] = torch.where(token_keep[:, :-1], labels[:, 1:], IGNORE_INDEX)
    rows = plan.sample_keep.nonzero().flatten().to(labels.device)  # (B',)
    if rows.numel() == 0:
        rows = torch.zeros(1, dtype=torch.long, device=labels.device)
        masked[0] = IGNORE_INDEX
    attention = batch["attention_mask"][rows]
    used = attention.sum(dim=0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 1
    kept = {
        "input_ids": batch["input_ids"][rows, :width],
        "attention_mask": attention[:, :width],
        "labels": masked[rows, :width],
    }
    if plan.sample_weight is not None:  # InfoBatch's rescaling, per kept row (B',)
        kept[LOSS_WEIGHT_KEY] = plan.sample_weight.to(labels.device)[rows].float()
    return kept


def kept_token_count(batch: dict) -> int:
    """Positions of a (kept) batch that carry a loss.

    Args:
        batch: A batch with labels (B, T), unshifted.

    Returns:
        The number of shifted labels that are not -100.
    """
    return int((shift_labels(batch["labels"]) != IGNORE_INDEX).sum())


def loss_on_kept(
    model: torch.nn.Module,
    kept: dict,
    num_items: int | torch.Tensor | None = None,
    chunk_size: int = 4096,
    return_hidden: bool = False,
):
    """Sum of cross-entropy over the kept batch's loss positions, divided by `num_items`.

    One forward of the model (its own top-level call, `logits_to_keep=1`); the LM head and the loss
    then run, with grad, only at the positions whose shifted label is set, weighted by "loss_weight"
    when `kept` carries it (per row, or per token in a packed row).

    Args:
        model: The causal LM being trained (a Hugging Face model with a separate backbone and output
            embedding; DDP/FSDP and PEFT wrappers are unwrapped).
        kept: input_ids, attention_mask, labels (B', T') as `apply_plan` returns them (optionally
            "loss_weight" (B',)), or a padding-free row from `padding_free.pack`: input_ids, labels,
            position_ids (1, L), no attention mask (optionally "loss_weight" (1, L)).
        num_items: The denominator (e.g. the kept tokens of a whole optimizer step). None: the loss
            positions of `kept` itself. Clamped to at least 1.
        chunk_size: Above this many loss positions, the head and the loss run in checkpointed chunks
            of this size. 0: never chunk.
        return_hidden: Also return the final hidden states (B', T', H) ((1, L, H) for a packed row),
            detached (scoring="stale" reads them).

    Returns:
        The loss, a scalar float32 tensor with grad; with return_hidden, (loss, hidden).

    Raises:
        KeyError: `kept` lacks input_ids or labels.
        ModelSpecError: The model has no separate backbone and output embedding.
        RuntimeError: The backbone's forward hook did not fire (no final hidden states).
    """
    # (B', T', H); a padding-free batch (qtuning.modeling.padding_free.pack) has position_ids and no attention mask
    hidden = forward_final_hidden(model, kept["input_ids"], kept.get("attention_mask"), kept.get("position_ids"))
    total = nll_sum(model, hidden, shift_labels(kept["labels"]), chunk_size, kept.get(LOSS_WEIGHT_KEY))
    denominator = kept_token_count(kept) if num_items is None else num_items
    loss = total / torch.as_tensor(denominator, device=total.device).clamp(min=1)
    return (loss, hidden.detach()) if return_hidden else loss
