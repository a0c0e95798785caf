"""Dataset row ids, carried through the collator: the plan log names each sample, `scoring: stale` caches by it.

    dataset = with_row_ids(dataset)              # a datasets.Dataset gets the column ID_KEY = row index
    collator = CollatorWithIds(collator)         # each batch gets ID_KEY (B,): the ids of its samples

Packed rows (TRL's `packing: true`) carry TOKEN_ID_KEY instead, the row id on every token (TRL's
packing keeps list columns only); the collator turns it back into one id per packed segment.
Datasets that are not a `datasets.Dataset` (a torch Dataset, an IterableDataset) get no ids: the
plan log names each sample by its position in the micro-batch instead, and `scoring: stale` is
refused (it caches scores by id).
"""

from __future__ import annotations

from itertools import accumulate

import torch

ID_KEY = "qtuning_id"  # dataset row index, carried through the collator for the plan log
# packing: the row id repeated on every token, so that it survives TRL's packing (which keeps list
# columns only); the collator turns it back into one id per packed segment
TOKEN_ID_KEY = "qtuning_token_row_id"


class CollatorWithIds:
    """Wraps a collator so that each batch also carries the dataset row index of its samples."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        ids = [ex.pop(ID_KEY) for ex in examples] if examples and ID_KEY in examples[0] else None
        if examples and TOKEN_ID_KEY in examples[0]:  # packed rows: one id per segment, in order
            ids = [i for ex in examples for i in segment_ids(ex.pop(TOKEN_ID_KEY), ex.get("seq_lengths"))]
        batch = self.inner(examples)
        if ids is not None:
            batch[ID_KEY] = torch.tensor(ids, dtype=torch.long)
        return batch


def segment_ids(token_ids: list[int], seq_lengths: list[int] | None) -> list[int]:
    """The row id of each segment of a packed row: the id on the segment's first token."""
    lengths = seq_lengths or [len(token_ids)]
    return [token_ids[start] for start in accumulate(lengths[:-1], initial=0)]


def with_row_ids(dataset):
    """Add the row index as a column, so the plan log can name each sample (datasets.Dataset only)."""
    if not has_row_ids_support(dataset):
        return dataset
    if ID_KEY in dataset.column_names:
        return dataset
    return dataset.add_column(ID_KEY, list(range(len(dataset))))


def has_row_ids_support(dataset) -> bool:
    """True for a dataset that with_row_ids gives an id column (a map-style datasets.Dataset)."""
    if dataset is None or isinstance(dataset, dict):
        return False
    return hasattr(dataset, "add_column") and hasattr(dataset, "__len__")


def carries_row_ids(dataset) -> bool:
    """True if the rows of `dataset` carry their ids (after with_row_ids, or packed by QTuningSFTTrainer)."""
    columns = getattr(dataset, "column_names", None) or []
    return ID_KEY in columns or TOKEN_ID_KEY in columns
