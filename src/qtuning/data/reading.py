"""Reading a data source into raw rows: JSONL, JSON, Parquet, a `datasets` save_to_disk folder, or a
built-in set's name. Every refusal is a DataError naming the file and, where a row is at fault, the row
and line (the rules: `qtuning.data`'s docstring)."""

from __future__ import annotations

import json
import os
import reprlib
from pathlib import Path

from ..errors import DataError

BOM = "\ufeff"

_SHORT = reprlib.Repr()  # values in messages: short, one line, and safe for deep nesting
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 80, 80, 3, 8, 4


def _short(value) -> str:
    return _SHORT.repr(value)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())  # library messages (pyarrow, datasets) may span lines


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
    from .builtin import BUILTIN_SOURCES, load_builtin_records

    if spec in BUILTIN_SOURCES:
        records = load_builtin_records(spec)
        return [{"id": r["id"], "instruction": r["prompt"], "output": r["response"]} for r in records], spec
    raise DataError(
        f"data {str(spec)!r} is neither a file, a folder nor a built-in data set; "
        f"built-in: {', '.join(sorted(BUILTIN_SOURCES))}"
    )
