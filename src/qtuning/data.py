"""Training data: built-in real sets, local files and datasets folders, normalised to the
conversational prompt/completion form that TRL's SFTTrainer trains with completion-only loss.

A normalised record:
    {"id": "row-17", "prompt": [{"role": "user", "content": ...}, ...],
     "completion": [{"role": "assistant", "content": ...}]}

Accepted row formats (detected per row):
- `prompt` + `completion` (strings or message lists);
- `messages` (a conversation; the last assistant message is the completion, the rest the prompt;
  EVERY assistant turn carries a loss, as with TRL's assistant-only loss: such records are tokenised
  here, each assistant turn's tokens labelled, every other token at -100);
- Alpaca `instruction` (+ optional `input`) + `output`.
Malformed rows raise a DataError naming the file, the row and the field. Rows whose response is
empty are counted, reported and skipped; rows longer than max_length are truncated and counted.

Rows are numbered from 0 in file order (in JSONL, blank lines are not rows; errors about a line's
text also give its 1-based line number). What happens to odd input, on purpose (tests/test_fuzz_data.py
tries each kind; every refusal is a DataError, a QTuningError, whose one-line message names the file,
and the row and field where a row is at fault):
- a UTF-8 byte order mark: accepted (at the start of a .json file or of any JSONL line);
- bytes that are not UTF-8: refused, naming the line (and, in JSONL, the row);
- a line of a JSONL file that is not JSON: refused, naming the row and line; when it is the last line
  and has no line end (a file cut short while written), the message says so: nothing is skipped
  silently, since a truncated file usually means more rows are missing;
- a key twice in one object (`{"output": "a", "output": "b"}`): refused, naming the row and the key
  (JSON parsers keep the last value silently; which one was meant is not knowable);
- JSON nested deeper than the parser's limit, integers over Python's 4,300-digit limit: refused;
- text with a lone surrogate (a `\\ud800` escape, which no UTF-8 file can hold): refused, naming the field;
- wrong types (a number, null, a list or an object where text is expected; a message without a
  non-empty string role and a string content): refused, naming the row and the field (an `id` may be a string or a number; null
  or absent gives `row-N`); unknown extra fields are ignored;
- an empty or whitespace-only response: the row is skipped and listed in the DataReport; if every row
  is skipped, refused; 100,000-character (or longer) fields load as they are (max_length truncates them);
- chat messages (a `messages` list, or `prompt` + `completion` message lists taken together): the
  last must be an assistant message and the first must not be one (an assistant turn is trained as an
  answer, so something must come before it); other orders (two user turns in a row, a system message
  later on) are passed to the chat template, and a template that refuses one raises a DataError
  naming the file and row when the record is tokenised;
- Parquet or a `datasets` save_to_disk folder with missing columns: refused like a row without them
  (row 0 names the fields it has); extra columns are ignored; a file that is not Parquet, a folder
  that is not a save_to_disk folder (or a DatasetDict without a 'train' split): refused; a saved
  dataset of 0 rows (which `datasets` writes without a data file and cannot load back): "no rows";
  of a DatasetDict only the train split is read;
- a .json file whose top level is not a list (or an object holding exactly one list): refused;
- an empty file (or only whitespace) of any type, or no rows: refused ("no rows");
- a path that cannot be read (permissions): refused, naming it.

A row may carry a static token mask (what `qtuning select` writes): `qtuning_token_keep`, a list
of 0/1, one per response token (the tokens whose label is set, after the first position) of the
untruncated tokenisation with the tokenizer named in `qtuning_token_keep_model`; a 0 sets that
token's label to -100 (it stays in the input as context). Such records get a `token_keep` key,
and `to_dataset` then tokenises every record itself (input_ids + labels) so that TRL keeps them.
"""

from __future__ import annotations

import json
import os
import random
import reprlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .engine.scoring import IGNORE_INDEX
from .errors import DataError

MASK_FIELD = "qtuning_token_keep"  # 0/1 per response token: a static token mask (see `qtuning select`)
MASK_MODEL_FIELD = "qtuning_token_keep_model"  # the model (tokenizer) the mask was computed with
BOM = "\ufeff"


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


def _origin(record: dict) -> str:
    """Where a record came from, for messages: "FILE: row N" when known, else its id."""
    return getattr(record, "origin", None) or record.get("token_keep_origin") or f"record {record.get('id')!r}"


_SHORT = reprlib.Repr()  # values in messages: short, one line, and safe for deep nesting
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 80, 80, 3, 8, 4


def _short(value) -> str:
    return _SHORT.repr(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # library messages (pyarrow, datasets) may span lines


# ---------------------------------------------------------------------------------- reading


class _KeysTwice(dict):
    """A JSON object in which a key appeared twice (json keeps its last value); made only to find its row."""

    __slots__ = ("key",)


def _object_hook(duplicates: list[str]):
    """json's object_pairs_hook: the object json.loads would build, marked (and its key noted) if a key
    appears twice in it."""

    def build(pairs: list[tuple[str, object]]) -> dict:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        seen: set[str] = set()
        marked = _KeysTwice(obj)
        marked.key = next(k for k, _ in pairs if k in seen or seen.add(k))
        duplicates.append(marked.key)
        return marked

    return build


def _parse_error(exc: Exception, line: int = 1) -> str:
    """Why json could not parse a text that starts at `line` of its file, in words (where, then json's reason)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON at line {line + exc.lineno - 1}, column {exc.colno} ({exc.msg})"
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested deeper than the parser's limit (about 1,000 levels)"
    if "integer string conversion" in str(exc):
        return "not valid JSON: a number too long to read (over 4,300 digits)"
    return f"not valid JSON ({_one_line(exc)})"


def _read_jsonl(path: Path) -> list:
    rows: list = []
    duplicates: list[str] = []
    hook = _object_hook(duplicates)
    # surrogateescape: a byte that is not UTF-8 arrives as a lone surrogate, found below with its line
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.isascii():
                try:
                    line.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise DataError(
                        f"{path}: row {len(rows)}: not valid UTF-8 at line {line_number}, character {exc.start + 1}"
                    ) from None
                line = line.removeprefix(BOM)
            if not line.strip():
                continue
            try:
                row = json.loads(line.removesuffix("\n"), object_pairs_hook=hook)
            except (ValueError, RecursionError) as exc:
                message = f"{path}: row {len(rows)}: {_parse_error(exc, line_number)}"
                if not line.endswith("\n"):
                    message += "; it is the last line and has no line end: the file looks cut short"
                raise DataError(message) from None
            if duplicates:
                raise DataError(
                    f"{path}: row {len(rows)}: field {duplicates[0]!r} appears twice in one object at line {line_number} "
                    "(JSON keeps only the last value; which one is meant?)"
                )
            rows.append(row)
    return rows


def _find_duplicate_row(rows: list) -> int | None:
    """The first row (of a .json list) holding an object with a key twice."""
    for index, row in enumerate(rows):
        stack = [row]
        while stack:  # iterative: rows may nest as deep as the parser allows
            value = stack.pop()
            if isinstance(value, _KeysTwice):
                return index
            stack.extend(value.values() if isinstance(value, dict) else value if isinstance(value, list) else ())
    return None


def _read_json(path: Path) -> list:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: not valid UTF-8 at line {line} (byte {exc.start} of the file)") from None
    if not text.strip():
        raise DataError(f"{path}: no rows (the file is empty)")
    duplicates: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=_object_hook(duplicates))
    except (ValueError, RecursionError) as exc:
        hint = ""
        if isinstance(exc, json.JSONDecodeError) and exc.msg == "Extra data":
            hint = "; one JSON object per line is a .jsonl file"
        raise DataError(f"{path}: {_parse_error(exc)}{hint}") from None
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}-style wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(
                f"{path}: expected a JSON list of rows (or an object holding one list), got an object with "
                f"{len(lists)} lists (keys {_short(sorted(data))})"
            )
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}: {_short(data)}")
    if duplicates:
        row = _find_duplicate_row(data)
        where = f"row {row}: " if row is not None else ""
        raise DataError(
            f"{path}: {where}field {duplicates[0]!r} appears twice in one object "
            "(JSON keeps only the last value; which one is meant?)"
        )
    return data


def _read_parquet(path: Path) -> list:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DataError(f"{path}: no rows (the file is empty)")
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None


def _read_file(path: Path) -> list:
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
    if suffix not in readers:
        raise DataError(f"{path}: unsupported file type {suffix!r}: expected .json, .jsonl or .parquet")
    try:
        return readers[suffix](path)
    except OSError as exc:  # permissions, a device error: the file named, not a traceback
        raise DataError(f"{path}: cannot be read ({exc.strerror or _one_line(exc)})") from None


def _read_saved_dataset(path: Path) -> list:
    from datasets import load_from_disk

    # a DatasetDict: only its train split is read (another split that is empty or damaged is no reason
    # to refuse the data)
    splits = _saved_json(path / "dataset_dict.json").get("splits")
    if isinstance(splits, list) and "train" not in splits:
        raise DataError(f"{path}: a DatasetDict without a 'train' split (has {_short(splits)})")
    folder = path / "train" if isinstance(splits, list) else path
    try:
        dataset = load_from_disk(str(folder))
    except Exception as exc:  # datasets raises several types for a folder that is not one of its own
        if _saved_json(folder / "state.json").get("_data_files") == []:
            raise DataError(f"{path}: no rows (datasets saved 0 rows as no data file)") from None
        raise DataError(f"{path}: not a datasets save_to_disk folder ({_one_line(exc)})") from None
    if hasattr(dataset, "keys"):  # a DatasetDict whose dataset_dict.json could not be read
        if "train" not in dataset:
            raise DataError(f"{path}: a DatasetDict without a 'train' split (has {list(dataset.keys())})")
        dataset = dataset["train"]
    try:
        return dataset.to_list()
    except Exception as exc:  # an arrow file that is damaged or unreadable
        raise DataError(f"{path}: its rows cannot be read ({_one_line(exc)})") from None


def _saved_json(path: Path) -> dict:
    """A save_to_disk folder's own JSON file, or {} if it is missing or damaged."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_rows(spec: str) -> tuple[list, str]:
    """Rows of a data argument, and the name to use for it in messages."""
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise DataError(f"data must be a file, a folder or a built-in name, got {_short(spec)}")
    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            return _read_saved_dataset(path), str(path)
        if path.exists() or path.suffix.lower() in (".json", ".jsonl", ".parquet"):
            if not path.is_file():
                raise DataError(f"{path}: no such file (expected a .json, .jsonl or .parquet file)")
            return _read_file(path), str(path)
    except OSError as exc:  # e.g. a folder on the way that may not be searched
        raise DataError(f"{path}: cannot be read ({exc.strerror or _one_line(exc)})") from None
    from .builtin_data import BUILTIN_SOURCES, load_builtin_records

    if spec in BUILTIN_SOURCES:
        records = load_builtin_records(spec)
        return [{"id": r["id"], "instruction": r["prompt"], "output": r["response"]} for r in records], spec
    raise DataError(
        f"data {str(spec)!r} is neither a file, a folder nor a built-in data set; "
        f"built-in: {', '.join(sorted(BUILTIN_SOURCES))}"
    )


# ---------------------------------------------------------------------------------- normalising


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
    if "prompt" in row and "completion" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        prompt = _messages(prompt, source, index, "prompt")
        completion = _messages(completion, source, index, "completion")
        _check_turns(prompt, completion, source, index, ("prompt", "completion"))
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
        "'prompt' + 'completion', 'messages', or 'instruction' + 'output' (Alpaca)"
    )


def load_records(spec: str) -> tuple[list[Record], DataReport]:
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
