"""Raw rows -> normalised records (conversational prompt/completion), with a DataReport of what was
skipped; the row formats accepted: `qtuning.data`'s docstring."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import DataError
from .reading import _short, read_rows

MASK_FIELD = "qtuning_token_keep"  # 0/1 per response token: a static token mask (see `qtuning select`)
MASK_MODEL_FIELD = "qtuning_token_keep_model"  # the model (tokenizer) the mask was computed with


@dataclass
class DataReport:
    """What happened to the rows of one data source."""

    source: str
    rows_read: int = 0
    rows_used: int = 0
    empty_response_rows: list[int] = field(default_factory=list)  # skipped
    truncated_rows: int = 0  # longer than max_length: cut at the end
    no_response_after_truncation: int = 0  # the prompt alone filled max_length: dropped by TRL

    def lines(self) -> list[str]:
        out = [f"{self.source}: {self.rows_read} rows read, {self.rows_used} used"]
        if self.empty_response_rows:
            shown = ", ".join(str(r) for r in self.empty_response_rows[:10])
            more = "" if len(self.empty_response_rows) <= 10 else ", ..."
            out.append(f"  skipped {len(self.empty_response_rows)} rows with an empty response (rows {shown}{more})")
        if self.truncated_rows:
            out.append(f"  truncated {self.truncated_rows} rows longer than max_length")
        if self.no_response_after_truncation:
            out.append(
                f"  {self.no_response_after_truncation} of them lost their whole response and are not trained on"
            )
        return out


class Record(dict):
    """A normalised record (a plain dict to every reader) that remembers where it came from ("FILE: row N"),
    for errors raised when it is tokenised. Kept off the dict's keys so that the same rows from two files
    still compare equal and hash alike (analysis fingerprints)."""

    __slots__ = ("origin",)


def _check_text(text: str, source: str, row: int, where: str) -> str:
    """Text that can be written as UTF-8: a lone surrogate (a "\\ud800" escape) would fail later, in arrow."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(
                f"{source}: row {row}: {where} holds a lone surrogate {text[exc.start]!r} at character "
                f"{exc.start + 1}, which is not text (no UTF-8 file can hold it)"
            ) from None
    return text


def _messages(value, source: str, row: int, field_name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(
            f"{source}: row {row}: field {field_name!r} must be a non-empty list of messages, got {_short(value)}"
        )
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not message["role"].strip()
            or not isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{source}: row {row}: field {field_name!r}[{i}] must be a {{'role': str, 'content': str}} message, "
                f"got {_short(message)}"
            )
        _check_text(message["role"], source, row, f"field {field_name!r}[{i}] 'role'")
        _check_text(message["content"], source, row, f"field {field_name!r}[{i}] 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _text(row: dict, field_name: str, source: str, index: int, required: bool = True) -> str:
    value = row.get(field_name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(
            f"{source}: row {index}: field {field_name!r} must be a string, got {type(value).__name__}: {_short(value)}"
        )
    return _check_text(value, source, index, f"field {field_name!r}")


def _row_id(row: dict, index: int, source: str) -> str:
    value = row.get("id")
    if value is None:
        return f"row-{index}"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(
            f"{source}: row {index}: field 'id' must be a string or a number, got {type(value).__name__}: "
            f"{_short(value)}"
        )
    return _check_text(str(value), source, index, "field 'id'")


def _check_turns(prompt: list[dict], completion: list[dict], source: str, index: int, fields: tuple[str, str]) -> None:
    """The conversation ends with an assistant turn and does not start with one (see the module docstring);
    fields: the names of the fields holding its first and its last message."""
    first, last = (prompt + completion)[0]["role"], completion[-1]["role"]
    if last != "assistant":
        raise DataError(
            f"{source}: row {index}: field {fields[1]!r} must end with an assistant message, ends with role {last!r}"
        )
    if first == "assistant":
        raise DataError(
            f"{source}: row {index}: field {fields[0]!r} starts with an assistant message: every assistant turn is "
            "trained as an answer, so a user (or system) message must come before it"
        )


def normalise_row(row: dict, index: int, source: str) -> Record:
    """One row of any accepted format -> a normalised record (see the module docstring)."""
    if not isinstance(row, dict):
        raise DataError(
            f"{source}: row {index}: expected an object with named fields, got {type(row).__name__}: {_short(row)}"
        )
    record = Record(_normalise_fields(row, index, source))
    record.origin = f"{source}: row {index}"
    if row.get(MASK_FIELD) is not None:
        mask = row[MASK_FIELD]
        if not isinstance(mask, list) or not all(v in (0, 1) and not isinstance(v, float) for v in mask):
            raise DataError(
                f"{source}: row {index}: field {MASK_FIELD!r} must be a list of 0/1 (one per response "
                f"token), got {_short(mask)}"
            )
        record["token_keep"] = [int(v) for v in mask]
        record["token_keep_origin"] = f"{source}: row {index}"
    return record


def _normalise_fields(row: dict, index: int, source: str) -> dict:
    row_id = _row_id(row, index, source)
    if "messages" in row:
        messages = _messages(row["messages"], source, index, "messages")
        _check_turns(messages[:-1], messages[-1:], source, index, ("messages", "messages"))
        return {"id": row_id, "prompt": messages[:-1], "completion": messages[-1:]}
    if "prompt" in row and ("completion" in row or "response" in row):
        # "response": the built-in sets' own rows (qtuning.data.builtin), read as prompt + completion
        prompt = row["prompt"]
        completion = row["completion"] if "completion" in row else row["response"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        prompt = _messages(prompt, source, index, "prompt")
        completion_field = "completion" if "completion" in row else "response"
        completion = _messages(completion, source, index, completion_field)
        _check_turns(prompt, completion, source, index, ("prompt", completion_field))
        return {"id": row_id, "prompt": prompt, "completion": completion}
    if "instruction" in row and "output" in row:
        instruction = _text(row, "instruction", source, index)
        extra = _text(row, "input", source, index, required=False)
        user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
        return {
            "id": row_id,
            "prompt": [{"role": "user", "content": user}],
            "completion": [{"role": "assistant", "content": _text(row, "output", source, index)}],
        }
    raise DataError(
        f"{source}: row {index}: unrecognised row format with fields {_short(sorted(map(str, row)))}; expected "
        "'prompt' + 'completion' (or 'response'), 'messages', or 'instruction' + 'output' (Alpaca)"
    )


def load_records(spec: str, group_field: str = "") -> tuple[list[Record], DataReport]:
    """Normalised records of a data argument; rows with an empty response are skipped and counted.

    group_field: a field every row must hold (text or a number); its value is kept as record["group"]
    (the trainer's group_field, for per-group kept shares)."""
    rows, source = read_rows(spec)
    if not rows:
        raise DataError(f"{source}: no rows")
    report = DataReport(source=source, rows_read=len(rows))
    records = []
    for index, row in enumerate(rows):
        record = normalise_row(row, index, source)
        if group_field:
            record["group"] = _group(row, group_field, index, source)
        if not "".join(m["content"] for m in record["completion"]).strip():
            report.empty_response_rows.append(index)
            continue
        records.append(record)
    report.rows_used = len(records)
    if not records:
        raise DataError(f"{source}: every row has an empty response")
    return records, report


def _group(row: dict, field_name: str, index: int, source: str) -> str:
    value = row.get(field_name)
    if value is None or isinstance(value, (list, dict)):
        got = "has no such field" if field_name not in row else f"holds {_short(value)}"
        raise DataError(
            f"{source}: row {index}: field {field_name!r} (group_field) {got}; expected a group name (text or "
            f"a number) on every row; the row's fields: {_short(sorted(map(str, row)))}"
        )
    return str(value)


def split_records(
    records: list[dict], eval_fraction: float, seed: int, max_train: int | None = None, max_eval: int | None = None
) -> tuple[list[dict], list[dict]]:
    """Shuffle once with `seed`, hold out `eval_fraction` (at least one row when > 0)."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(eval_fraction * len(records))) if eval_fraction > 0 else 0
    eval_rows = [records[i] for i in order[:n_eval]]
    train_rows = [records[i] for i in order[n_eval:]]
    return train_rows[:max_train] if max_train else train_rows, eval_rows[:max_eval] if max_eval else eval_rows
