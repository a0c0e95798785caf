"""Normalised records -> token ids and labels (completion-only loss; every assistant turn of a
conversation), the static token mask of `qtuning select`, the datasets TRL trains on, and the padding
collator."""

from __future__ import annotations

import torch

from ..engine.scoring import IGNORE_INDEX
from ..errors import DataError
from .reading import _one_line, _short
from .records import MASK_FIELD, DataReport
from .row_ids import ID_KEY, TOKEN_ID_KEY


def _origin(record: dict) -> str:
    """Where a record came from, for messages: "FILE: row N" when known, else its id."""
    return getattr(record, "origin", None) or record.get("token_keep_origin") or f"record {record.get('id')!r}"


def _chat_ids(tokenizer, messages: list[dict], generation_prompt: bool, record: dict | None = None) -> list[int]:
    from jinja2 import TemplateError

    try:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    except TemplateError as exc:  # a template that refuses an order of roles (`raise_exception` in jinja)
        where = _origin(record) if record is not None else "a conversation"
        raise DataError(f"{where}: the model's chat template refuses this conversation ({_one_line(exc)})") from None
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # some tokenizers return a BatchEncoding


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def is_multi_turn(record: dict) -> bool:
    """A conversation with an assistant turn before its last one."""
    return any(m["role"] == "assistant" for m in record["prompt"])


def tokenize_record(tokenizer, record: dict, max_length: int | None) -> dict[str, list[int]]:
    """input_ids and labels (IGNORE_INDEX on the prompt), as TRL tokenises a conversational prompt/completion.

    In a multi-turn conversation every assistant turn is labelled: turn k's labels are the tokens that
    rendering messages[:k + 1] adds to messages[:k] rendered with the generation prompt (the same rule
    as for the last turn), located in the whole conversation's ids."""
    messages = record["prompt"] + record["completion"]
    full_ids = _chat_ids(tokenizer, messages, False, record)
    labels = [IGNORE_INDEX] * len(full_ids)
    turns = [k for k, m in enumerate(messages) if m["role"] == "assistant" and k >= len(record["prompt"])]
    if is_multi_turn(record):
        turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    for k in turns:
        before = _chat_ids(tokenizer, messages[:k], True, record)
        through = full_ids if k == len(messages) - 1 else _chat_ids(tokenizer, messages[: k + 1], False, record)
        if through != full_ids[: len(through)]:
            raise DataError(
                f"{_origin(record)}: the chat template does not render this conversation's turns as "
                f"prefixes of the whole conversation, so assistant turn {k} cannot be located; "
                "use prompt/completion rows instead"
            )
        start = _common_prefix(before, through)
        labels[start : len(through)] = full_ids[start : len(through)]
    if record.get("token_keep") is not None:
        labels = _apply_token_mask(labels, record)
    if max_length is not None:
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    return {"input_ids": list(full_ids), "labels": labels}


def _apply_token_mask(labels: list[int], record: dict) -> list[int]:
    """Labels with IGNORE_INDEX where the record's static mask is 0 (one entry per response token)."""
    mask = record["token_keep"]
    positions = [j for j in range(1, len(labels)) if labels[j] != IGNORE_INDEX]
    if len(mask) != len(positions):
        raise DataError(
            f"{_origin(record)}: field {MASK_FIELD!r} has {len(mask)} entries but the "
            f"response has {len(positions)} tokens with this tokenizer (value {_short(mask)}); the mask must come from "
            "the same model/tokenizer (see its qtuning_token_keep_model field) and the untruncated response"
        )
    labels = list(labels)
    for j, keep in zip(positions, mask):
        if not keep:
            labels[j] = IGNORE_INDEX
    return labels


def count_truncation(tokenizer, records: list[dict], max_length: int | None, report: DataReport) -> None:
    """Fill the report's truncation counts (what TRL's truncation will do to these records)."""
    if max_length is None:
        return
    for record in records:
        full = tokenize_record(tokenizer, record, None)
        if len(full["input_ids"]) > max_length:
            report.truncated_rows += 1
            if all(label == IGNORE_INDEX for label in full["labels"][:max_length]):
                report.no_response_after_truncation += 1


# columns TRL or qtuning read or rename in a training set: a group column may not take one of these names
TRAINER_COLUMNS = (
    *("input_ids", "labels", "attention_mask", "completion_mask", "assistant_masks", "position_ids"),
    *("seq_lengths", "messages", "text", "conversations", "prompt", "completion", "source_id", ID_KEY, TOKEN_ID_KEY),
)


def to_dataset(
    records: list[dict], tokenizer=None, max_length: int | None = None, tokenize: bool = False, group_column: str = ""
):
    """A datasets.Dataset in TRL's conversational prompt/completion form (ids kept as 'source_id'; with
    `group_column`, each record's "group" (load_records' group_field) as that column).

    Records with a static token mask (`token_keep`) or several assistant turns need the tokenizer: then
    every record is tokenised here (input_ids + labels, pruned or non-assistant tokens at -100), a form
    TRL trains on as it is. tokenize=True does that for every data set (padding-free training: TRL
    does not truncate such rows itself, so they are truncated to max_length here).
    """
    from datasets import Dataset

    if tokenize or any(r.get("token_keep") is not None or is_multi_turn(r) for r in records):
        if tokenizer is None:
            raise ValueError(
                f"records carry {MASK_FIELD!r} masks or several assistant turns: to_dataset needs the tokenizer"
            )
        rows = [{**tokenize_record(tokenizer, r, max_length), "source_id": r["id"]} for r in records]
    else:
        rows = [{"prompt": r["prompt"], "completion": r["completion"], "source_id": r["id"]} for r in records]
    if group_column:
        if rows and group_column in {*rows[0], *TRAINER_COLUMNS}:
            raise DataError(
                f"group_field={group_column!r} names a column the trainer reads itself "
                f"({sorted({*rows[0], *TRAINER_COLUMNS})}); name the groups' field something else"
            )
        for row, record in zip(rows, records):
            row[group_column] = record["group"]
    return Dataset.from_list(rows)


def collate(features: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row: input_ids, attention_mask, labels, each (B, T)."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[row, :n] = torch.tensor(f["input_ids"])
        labels[row, :n] = torch.tensor(f["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
