"""Training data: built-in real sets, local files and datasets folders, normalised to the
conversational prompt/completion form that TRL's SFTTrainer trains with completion-only loss.

A normalised record:
    {"id": "row-17", "prompt": [{"role": "user", "content": ...}, ...],
     "completion": [{"role": "assistant", "content": ...}]}

Accepted row formats (detected per file, from its first row):
- `prompt` + `completion` (strings or message lists);
- `messages` (a conversation; the last assistant message is the completion, the rest the prompt;
  EVERY assistant turn carries a loss, as with TRL's assistant-only loss: such records are tokenised
  here, each assistant turn's tokens labelled, every other token at -100);
- Alpaca `instruction` (+ optional `input`) + `output`.
Malformed rows raise a DataError naming the file, the row and the field. Rows whose response is
empty are counted, reported and skipped; rows longer than max_length are truncated and counted.

A row may carry a static token mask (what `qtuning select` writes): `qtuning_token_keep`, a list
of 0/1, one per response token (the tokens whose label is set, after the first position) of the
untruncated tokenisation with the tokenizer named in `qtuning_token_keep_model`; a 0 sets that
token's label to -100 (it stays in the input as context). Such records get a `token_keep` key,
and `to_dataset` then tokenises every record itself (input_ids + labels) so that TRL keeps them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import DataError
from .scoring import IGNORE_INDEX

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


# ---------------------------------------------------------------------------------- reading


def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with open(path) as handle:
                for line_number, line in enumerate(handle):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{path}: row {line_number}: not valid JSON ({exc.msg})") from exc
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}-style wrappers
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise DataError(f"{path}: expected a JSON list of rows (or an object holding one list)")
                data = lists[0]
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
            return data
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    raise DataError(f"{path}: unsupported file type {suffix!r}: expected .json, .jsonl or .parquet")


def read_rows(spec: str) -> tuple[list[dict], str]:
    """Rows of a data argument, and the name to use for it in messages."""
    path = Path(spec).expanduser()
    if path.is_dir():
        from datasets import load_from_disk

        try:
            dataset = load_from_disk(str(path))
        except Exception as exc:  # datasets raises several types for a folder that is not one of its own
            raise DataError(f"{path}: not a datasets save_to_disk folder ({exc})") from exc
        if hasattr(dataset, "keys"):  # a DatasetDict: take the train split
            if "train" not in dataset:
                raise DataError(f"{path}: a DatasetDict without a 'train' split (has {list(dataset.keys())})")
            dataset = dataset["train"]
        return dataset.to_list(), str(path)
    if path.exists() or path.suffix.lower() in (".json", ".jsonl", ".parquet"):
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected a .json, .jsonl or .parquet file)")
        return _read_file(path), str(path)
    from .builtin_data import BUILTIN_SOURCES, load_builtin_records

    if spec in BUILTIN_SOURCES:
        records = load_builtin_records(spec)
        return [{"id": r["id"], "instruction": r["prompt"], "output": r["response"]} for r in records], spec
    raise DataError(
        f"data {spec!r} is neither a file, a folder nor a built-in data set; built-in: {', '.join(sorted(BUILTIN_SOURCES))}"
    )


# ---------------------------------------------------------------------------------- normalising


def _messages(value, source: str, row: int, field_name: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(
            f"{source}: row {row}: field {field_name!r} must be a non-empty list of messages, got {value!r:.80}"
        )
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{source}: row {row}: field {field_name!r}[{i}] must be a {{'role': str, 'content': str}} message, "
                f"got {message!r:.80}"
            )
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _text(row: dict, field_name: str, source: str, index: int, required: bool = True) -> str:
    value = row.get(field_name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(
            f"{source}: row {index}: field {field_name!r} must be a string, got {type(value).__name__}: {value!r:.80}"
        )
    return value


def normalise_row(row: dict, index: int, source: str) -> dict:
    """One row of any accepted format -> a normalised record (see the module docstring)."""
    if not isinstance(row, dict):
        raise DataError(f"{source}: row {index}: expected an object with named fields, got {type(row).__name__}")
    record = _normalise_fields(row, index, source)
    if row.get(MASK_FIELD) is not None:
        mask = row[MASK_FIELD]
        if not isinstance(mask, list) or not all(v in (0, 1) and not isinstance(v, float) for v in mask):
            raise DataError(
                f"{source}: row {index}: field {MASK_FIELD!r} must be a list of 0/1 (one per response "
                f"token), got {mask!r:.80}"
            )
        record["token_keep"] = [int(v) for v in mask]
        record["token_keep_origin"] = f"{source}: row {index}"
    return record


def _normalise_fields(row: dict, index: int, source: str) -> dict:
    row_id = str(row.get("id", f"row-{index}"))
    if "messages" in row:
        messages = _messages(row["messages"], source, index, "messages")
        if messages[-1]["role"] != "assistant":
            raise DataError(
                f"{source}: row {index}: field 'messages' must end with an assistant message, "
                f"ends with role {messages[-1]['role']!r}"
            )
        return {"id": row_id, "prompt": messages[:-1], "completion": messages[-1:]}
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        return {
            "id": row_id,
            "prompt": _messages(prompt, source, index, "prompt"),
            "completion": _messages(completion, source, index, "completion"),
        }
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
        f"{source}: row {index}: unrecognised row format with fields {sorted(row)}; expected 'prompt' + 'completion', "
        "'messages', or 'instruction' + 'output' (Alpaca)"
    )


def load_records(spec: str) -> tuple[list[dict], DataReport]:
    """Normalised records of a data argument; rows with an empty response are skipped and counted."""
    rows, source = read_rows(spec)
    if not rows:
        raise DataError(f"{source}: no rows")
    report = DataReport(source=source, rows_read=len(rows))
    records = []
    for index, row in enumerate(rows):
        record = normalise_row(row, index, source)
        if not "".join(m["content"] for m in record["completion"]).strip():
            report.empty_response_rows.append(index)
            continue
        records.append(record)
    report.rows_used = len(records)
    if not records:
        raise DataError(f"{source}: every row has an empty response")
    return records, report


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


# ---------------------------------------------------------------------------------- tokens


def _chat_ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
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
    full_ids = _chat_ids(tokenizer, messages, False)
    labels = [IGNORE_INDEX] * len(full_ids)
    turns = [k for k, m in enumerate(messages) if m["role"] == "assistant" and k >= len(record["prompt"])]
    if is_multi_turn(record):
        turns = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
    for k in turns:
        before = _chat_ids(tokenizer, messages[:k], True)
        through = full_ids if k == len(messages) - 1 else _chat_ids(tokenizer, messages[: k + 1], False)
        if through != full_ids[: len(through)]:
            raise DataError(
                f"{record.get('id', 'a record')}: the chat template does not render this conversation's turns as "
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
            f"{record.get('token_keep_origin', 'a record')}: field {MASK_FIELD!r} has {len(mask)} entries but the "
            f"response has {len(positions)} tokens with this tokenizer (value {mask!r:.60}); the mask must come from "
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


def to_dataset(records: list[dict], tokenizer=None, max_length: int | None = None, tokenize: bool = False):
    """A datasets.Dataset in TRL's conversational prompt/completion form (ids kept as 'source_id').

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
        return Dataset.from_list([{**tokenize_record(tokenizer, r, max_length), "source_id": r["id"]} for r in records])
    return Dataset.from_list(
        [{"prompt": r["prompt"], "completion": r["completion"], "source_id": r["id"]} for r in records]
    )


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
