"""Padding-free batches (TRL `padding_free=True`): one row of concatenated samples <-> a padded batch.

TRL's padding-free collator puts a micro-batch's samples end to end in one row (1, L), with
position_ids that restart at 0 where each sample begins and no attention mask; the attention code
keeps the samples apart (flash attention from the position_ids; sdpa and eager through a
block-diagonal mask that transformers builds from them). Q-Tuning scores and selects samples, so:

    padded = unpack(batch, pad_token_id)    # (1, L) -> (B, T): one row per sample, right-padded
    ... score, plan, apply_plan(padded, plan) as for any padded batch ...
    packed = pack(kept)                     # kept rows -> (1, L'): only the kept samples, end to end

so the selection sees exactly what the padded path sees, and the forward with grad runs over the
kept samples' tokens only, with no padding at all.
"""

from __future__ import annotations

import torch

from ..engine.scoring import IGNORE_INDEX
from .kept_batch import LOSS_WEIGHT_KEY

POSITION_IDS = "position_ids"


def segment_lengths(position_ids: torch.Tensor) -> list[int]:
    """Lengths of the samples in a packed row.

    Trailing zeros after the last sample (a pad_to_multiple_of tail) count as one-token segments of
    padding; `unpack` drops those whose input is entirely padding.

    Args:
        position_ids: (1, L), 0 where each sample starts.

    Returns:
        The segments' lengths, in order; they sum to L.

    Raises:
        ValueError: position_ids is not one row, or does not start a sample at position 0.
    """
    if position_ids.dim() != 2 or position_ids.shape[0] != 1:
        raise ValueError(f"a padding-free batch has one row; got position_ids of shape {tuple(position_ids.shape)}")
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        raise ValueError("a padding-free batch must start a sample at position 0 (position_ids[0, 0] == 0)")
    ends = starts[1:] + [position_ids.shape[1]]
    return [end - start for start, end in zip(starts, ends)]


def unpack(batch: dict, pad_token_id: int, num_samples: int | None = None) -> dict:
    """A padding-free batch as a right-padded batch, one row per sample, in order.

    Args:
        batch: input_ids, labels, position_ids (1, L).
        pad_token_id: The input id of the padding columns.
        num_samples: How many samples the collator received: extra zero-position segments at the
            end (the pad tail of pad_to_multiple_of) are dropped. None: keep every segment.

    Returns:
        input_ids, attention_mask, labels (B, T) on the batch's device, labels -100 at padding.

    Raises:
        ValueError: The packed row is malformed (`segment_lengths`) or holds fewer than
            `num_samples` samples.
    """
    lengths = segment_lengths(batch[POSITION_IDS])
    if num_samples is not None:
        if len(lengths) < num_samples:
            raise ValueError(f"the packed row holds {len(lengths)} samples, but the collator received {num_samples}")
        lengths = lengths[:num_samples]  # the rest is the pad tail of pad_to_multiple_of
    width = max(lengths)
    rows = len(lengths)
    input_ids = torch.full((rows, width), pad_token_id, dtype=batch["input_ids"].dtype)
    labels = torch.full((rows, width), IGNORE_INDEX, dtype=batch["labels"].dtype)
    attention = torch.zeros((rows, width), dtype=torch.long)
    start = 0
    for r, n in enumerate(lengths):
        input_ids[r, :n] = batch["input_ids"][0, start : start + n]
        labels[r, :n] = batch["labels"][0, start : start + n]
        attention[r, :n] = 1
        start += n
    device = batch["input_ids"].device
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "labels": labels.to(device)}


def pack(kept: dict) -> dict:
    """Right-padded rows end to end in one row, padding removed (`unpack` in reverse).

    Each sample's first label is set to -100 (never predict across a sample boundary).

    Args:
        kept: input_ids, attention_mask, labels (B', T'), optionally "loss_weight" (B',).

    Returns:
        input_ids, labels, position_ids (1, L'), L' = the rows' non-pad tokens; no attention mask
        (the position_ids separate the samples); a per-row loss weight becomes a per-token one (1, L').
    """
    used = kept["attention_mask"].bool()  # (B', T')
    lengths = used.sum(dim=1)  # (B',)
    positions = torch.cat([torch.arange(int(n), device=used.device) for n in lengths])  # (L',)
    packed = {
        "input_ids": kept["input_ids"][used].unsqueeze(0),
        "labels": kept["labels"][used].unsqueeze(0),
        POSITION_IDS: positions.unsqueeze(0),
    }
    packed["labels"][packed[POSITION_IDS] == 0] = IGNORE_INDEX  # never predict across a sample boundary
    if LOSS_WEIGHT_KEY in kept:  # per row (B',) -> per token (1, L'): each token carries its row's weight
        packed[LOSS_WEIGHT_KEY] = torch.repeat_interleave(kept[LOSS_WEIGHT_KEY], lengths).unsqueeze(0)
    return packed


def scatter_rows(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Packed per-token values back onto the padded grid of `pack`'s input (e.g. final hidden states).

    Args:
        values: (1, L', ...) per packed token.
        attention_mask: (B', T'), the attention mask of `pack`'s input.

    Returns:
        (B', T', ...), zeros at pad positions.
    """
    used = attention_mask.bool()
    out = values.new_zeros((*used.shape, *values.shape[2:]))
    out[used] = values[0]
    return out
