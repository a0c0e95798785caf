"""Odd data files, generated with hypothesis, and the promise each one is held to (issue 29, item 2).

tests/test_fuzz_data.py and benchmarks/reliability.py both run these. Every case writes one file (or a
`datasets` folder) and loads it the way `qtuning train` does: `load_records` -> `split_records` ->
`count_truncation` -> `to_dataset` with the real tokenizer. The promise (qtuning/data.py's docstring):
- it loads: every row is counted (rows read = rows in the file, rows used + rows skipped for an empty
  response = rows read), and when every row is well formed the skipped rows are exactly the blank ones;
- or it raises a QTuningError whose message is one line and names the file; where the file parsed into
  rows and a row is at fault, the message names that row ("row N: ", N one of the odd rows) and the field
  (or says why the whole row or line is unusable);
- never any other exception.
Cases whose outcome is decided (a truncated last line, bytes that are not UTF-8, a key twice, ...) must
give exactly that outcome (`Case.exact`, a regular expression the message must match).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qtuning.data import count_truncation, load_records, split_records, to_dataset
from qtuning.errors import QTuningError
from tests.helpers import run_cli

MAX_LENGTH = 64  # tokens: every case's tokenisation stays cheap, and long fields are truncated
FORMAT_KEYS = {
    "prompt",
    "completion",
    "response",
    "messages",
    "instruction",
    "input",
    "output",
    "id",
    "qtuning_token_keep",
}
ROW_REASONS = (  # what a row-level message says instead of a field, when the whole row or line is unusable
    "not valid JSON",
    "not valid UTF-8",
    "expected an object with named fields",
    "unrecognised row format with fields",
    "the model's chat template refuses",
    "the chat template does not render",
)


# ---------------------------------------------------------------------------------- what a case is


@dataclass
class Case:
    """One generated file and what it is held to."""

    kind: str
    path: Path
    rows: int | None  # rows in the file, when it parses into rows
    odd_rows: set[int] = field(default_factory=set)  # rows drawn odd: the only ones an error may blame
    blank_rows: set[int] = field(default_factory=set)  # well-formed rows whose response is blank
    exact: str | None = None  # a regular expression the error message must match (the case must be refused)
    must_load: bool = False
    long_rows: int = 0  # rows with a 100k-character field (loaded: truncated by max_length)
    parses: bool = False  # the file is known to parse into its rows: a refusal must then blame a row
    tokenizer: object = None  # None: the default (real) tokenizer


@dataclass
class Result:
    kind: str
    outcome: str  # "loaded", "refused" or "broken" (the promise not kept)
    exception: str  # the type raised ("" when loaded)
    detail: str  # the message, or what broke
    stage: str = ""  # where it was refused: "read" (load_records) or "tokenise"


TALLY: Counter = Counter()  # (kind, outcome) -> cases, over the session
EXCEPTIONS: Counter = Counter()  # exception type -> cases


def load_like_train(spec: str, tokenizer):
    """What `qtuning train` does with its data argument before the trainer exists."""
    records, report = load_records(spec)
    train, _ = split_records(records, 0.0, seed=0)
    count_truncation(tokenizer, train, MAX_LENGTH, report)
    to_dataset(train, tokenizer, MAX_LENGTH)
    return records, report


def attempt(case: Case, tokenizer) -> Result:
    """Load one case and judge it against the promise (module docstring)."""
    stage = "read"
    try:
        records, report = load_records(str(case.path))
        stage = "tokenise"
        train, _ = split_records(records, 0.0, seed=0)
        count_truncation(case.tokenizer or tokenizer, train, MAX_LENGTH, report)
        to_dataset(train, case.tokenizer or tokenizer, MAX_LENGTH)
    except QTuningError as exc:
        problem = judge_refusal(case, str(exc))
        result = Result(case.kind, "broken" if problem else "refused", type(exc).__name__, problem or str(exc), stage)
    except Exception as exc:  # noqa: BLE001 - any other type breaks the promise: that is what is counted
        result = Result(case.kind, "broken", type(exc).__name__, f"{type(exc).__name__}: {exc}"[:500], stage)
    else:
        problem = judge_load(case, records, report)
        result = Result(case.kind, "broken" if problem else "loaded", "", problem or f"{report.rows_used} rows used")
    TALLY[case.kind, result.outcome] += 1
    if result.exception:
        EXCEPTIONS[result.exception] += 1
    return result


def judge_refusal(case: Case, message: str) -> str:
    """Why a refusal breaks the promise ("" if it keeps it)."""
    if "\n" in message:
        return f"a message over several lines: {message[:300]!r}"
    if str(case.path) not in message:
        return f"the message does not name the file {case.path}: {message[:300]!r}"
    if case.exact is not None:
        return "" if re.search(case.exact, message) else f"expected /{case.exact}/, got {message[:300]!r}"
    if case.must_load:
        return f"well-formed rows refused: {message[:300]!r}"
    blamed = re.search(r": row (\d+)", message)
    if blamed is None:
        whole_file = "no rows" in message or "every row has an empty response" in message
        if case.parses and not whole_file:
            return f"the file parses into rows, but the message names none: {message[:300]!r}"
        return ""
    row = int(blamed.group(1))
    if case.rows is not None and row not in case.odd_rows:
        return f"blames row {row}, not one of the odd rows {sorted(case.odd_rows)}: {message[:300]!r}"
    after = message[blamed.end() :]
    if "field '" not in after and not any(reason in after for reason in ROW_REASONS):
        return f"names the row but neither a field nor why the row is unusable: {message[:300]!r}"
    return ""


def judge_load(case: Case, records: list, report) -> str:
    """Why a load breaks the promise ("" if it keeps it)."""
    if case.exact is not None:
        return f"expected a refusal matching /{case.exact}/, but it loaded ({report.rows_used} rows)"
    if case.rows is not None and report.rows_read != case.rows:
        return f"{report.rows_read} rows read, the file has {case.rows}"
    if report.rows_used + len(report.empty_response_rows) != report.rows_read or len(records) != report.rows_used:
        return (
            f"rows not counted: {report.rows_read} read, {report.rows_used} used, {report.empty_response_rows} skipped"
        )
    if report.empty_response_rows and f"skipped {len(report.empty_response_rows)} rows" not in "\n".join(
        report.lines()
    ):
        return f"skipped rows {report.empty_response_rows} not reported: {report.lines()}"
    if not case.odd_rows and set(report.empty_response_rows) != case.blank_rows:
        return f"skipped rows {report.empty_response_rows}, the blank ones are {sorted(case.blank_rows)}"
    if case.long_rows and report.truncated_rows < case.long_rows:
        return f"{case.long_rows} rows hold a 100k-character field, {report.truncated_rows} counted as truncated"
    return ""


# ---------------------------------------------------------------------------------- rows


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
WHITESPACE = st.text(st.sampled_from(" \t\n\r\u00a0\u2003\u3000"), max_size=5)
VISIBLE = st.characters(blacklist_categories=("Cs", "Cc", "Z")).filter(lambda c: not c.isspace())
NONBLANK = st.tuples(TEXT, VISIBLE, TEXT).map("".join)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)
ROLES = ("system", "user", "assistant", "tool", "", "Assistant", "narrator")
EXTRA_KEYS = st.one_of(st.sampled_from(["meta", "source", "score", "tags", "text", "answer"]), TEXT).filter(
    lambda k: k not in FORMAT_KEYS
)


def chance(draw, n: int) -> bool:
    """True about once in n draws. Not `integers(0, n - 1) == 0`: hypothesis favours 0 and the bounds."""
    return draw(st.integers(0, n - 1)) == n // 2


def message(role: str, content) -> dict:
    return {"role": role, "content": content}


@st.composite
def turns_before_answer(draw) -> list[dict]:
    """An optional system message, then user (and assistant, user) turns: a well-formed prompt."""
    out = [message("system", draw(TEXT))] if draw(st.booleans()) else []
    out.append(message("user", draw(TEXT)))
    for _ in range(draw(st.integers(0, 2))):
        out += [message("assistant", draw(TEXT)), message("user", draw(TEXT))]
    return out


@st.composite
def valid_rows(draw) -> tuple[dict, bool]:
    """(a well-formed row of one of the three formats, whether its response is blank)."""
    blank = chance(draw, 7)
    response = draw(WHITESPACE if blank else NONBLANK)
    form = draw(st.sampled_from(["prompt_text", "prompt_messages", "messages", "alpaca"]))
    if form == "prompt_text":
        row = {"prompt": draw(TEXT), "completion": response}
    elif form == "prompt_messages":
        row = {"prompt": draw(turns_before_answer()), "completion": [message("assistant", response)]}
    elif form == "messages":
        row = {"messages": draw(turns_before_answer()) + [message("assistant", response)]}
    else:
        row = {"instruction": draw(TEXT), "output": response}
        if draw(st.booleans()):
            row["input"] = draw(st.one_of(st.none(), TEXT))
    if draw(st.booleans()):
        row["id"] = draw(st.one_of(TEXT, st.integers(-(10**9), 10**9)))
    if chance(draw, 4):
        row[draw(EXTRA_KEYS)] = draw(JUNK)  # unknown fields are ignored
    return row, blank


def _paths(value, prefix=()) -> list[tuple]:
    """Every key path inside a row (dict keys and list positions)."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        out.append((*prefix, key))
        out += _paths(inner, (*prefix, key))
    return out


def _at(row, path):
    for key in path:
        row = row[key]
    return row


@st.composite
def odd_rows(draw) -> dict:
    """A well-formed row with one thing made odd: a type, a key, a role, a message, the row itself."""
    row, _ = draw(valid_rows())
    row = json.loads(json.dumps(row))  # a private copy
    mutation = draw(
        st.sampled_from(
            [
                "wrong_type",
                "drop_key",
                "rename_key",
                "not_object",
                "roles",
                "no_assistant",
                "assistant_first",
                "empty_list",
                "surrogate",
                "bad_id",
                "mask",
            ]
        )
    )
    conversation = row.get("messages") or (row["prompt"] if isinstance(row.get("prompt"), list) else None)
    if mutation == "wrong_type":
        path = draw(st.sampled_from(_paths(row)))
        _at(row, path[:-1])[path[-1]] = draw(JUNK)
    elif mutation == "drop_key":
        path = draw(st.sampled_from([p for p in _paths(row) if isinstance(_at(row, p[:-1]), dict)]))
        del _at(row, path[:-1])[path[-1]]
    elif mutation == "rename_key":
        key = draw(st.sampled_from(sorted(row)))
        row[key + draw(st.sampled_from(["s", "_", " ", "X"]))] = row.pop(key)
    elif mutation == "not_object":
        return draw(JUNK.filter(lambda v: not isinstance(v, dict)))
    elif mutation == "roles" and conversation:
        for m in conversation:
            m["role"] = draw(st.one_of(st.sampled_from(ROLES), JUNK))
    elif mutation == "no_assistant" and row.get("messages"):
        row["messages"] = row["messages"][:-1] or [message("user", "q")]
    elif mutation == "assistant_first" and conversation is not None:
        conversation.insert(0, message("assistant", draw(TEXT)))
    elif mutation == "empty_list":
        row[draw(st.sampled_from(["messages", "prompt", "completion"]))] = []
    elif mutation == "surrogate":
        texts = [p for p in _paths(row) if isinstance(_at(row, p), str)]
        if not texts:
            row["output"] = "\ud800"
        else:
            path = draw(st.sampled_from(texts))
            _at(row, path[:-1])[path[-1]] += "\ud800"
    elif mutation == "bad_id":
        row["id"] = draw(st.one_of(st.booleans(), st.lists(SCALARS, max_size=2), st.dictionaries(TEXT, SCALARS)))
    elif mutation == "mask":
        row["qtuning_token_keep"] = draw(JUNK)
    return row


@st.composite
def row_lists(draw, max_rows: int = 4) -> tuple[list, set[int], set[int]]:
    """(rows, indices of the odd ones, indices of the well-formed blank ones); at least one row."""
    rows, odd, blank = [], set(), set()
    for index in range(draw(st.integers(1, max_rows))):
        if chance(draw, 4):
            rows.append(draw(odd_rows()))
            odd.add(index)
        else:
            row, is_blank = draw(valid_rows())
            rows.append(row)
            if is_blank:
                blank.add(index)
    return rows, odd, blank


# ---------------------------------------------------------------------------------- JSON text


def dumps(value, duplicate_at: tuple | None = None, ascii_only: bool = True) -> str:
    """json.dumps, except that the object at `duplicate_at` (a key path) writes its first key twice
    (the first time with another value), as a hand-edited or concatenated file might."""

    def write(v, path):
        if isinstance(v, dict):
            parts = [f"{json.dumps(str(k), ensure_ascii=ascii_only)}: {write(x, (*path, k))}" for k, x in v.items()]
            if path == duplicate_at and v:
                first = next(iter(v))
                parts.insert(0, f'{json.dumps(first, ensure_ascii=ascii_only)}: "an earlier value"')
            return "{" + ", ".join(parts) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(write(x, (*path, i)) for i, x in enumerate(v)) + "]"
        return json.dumps(v, ensure_ascii=ascii_only)

    return write(value, ())


def _objects(value, path=()) -> list[tuple]:
    """Key paths of the non-empty objects inside a value (the value itself included)."""
    out = [path] if isinstance(value, dict) and value else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        out += _objects(inner, (*path, key))
    return out


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate becomes bytes that are not UTF-8


INVALID_UTF8 = (b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\x80")  # stray, cut short, a surrogate


# ---------------------------------------------------------------------------------- files


@st.composite
def jsonl_cases(draw, folder: Path, name: str) -> Case:
    """JSONL: odd rows, plus at most one odd thing about the bytes, with a BOM, CRLF line ends, blank lines
    and no final line end drawn independently (none of which changes the outcome). The first line with a
    fault decides, as the reader goes: bytes that are not UTF-8, then JSON (a cut last line), then a key twice."""
    rows, odd, blank = draw(row_lists())
    ascii_only = draw(st.booleans())  # False: a lone surrogate in a row is written raw, as bytes that are not UTF-8
    mutation = draw(st.sampled_from(["none", "none", "half_line", "invalid_utf8", "duplicate_key"]))
    target = draw(st.integers(0, len(rows) - 1))
    end = "\r\n" if draw(st.booleans()) else "\n"
    chunks: list[bytes] = [b"\xef\xbb\xbf"] if draw(st.booleans()) else []
    faults: list[str] = []
    line = 0
    for index, row in enumerate(rows):
        line += 1
        duplicate = None
        if mutation == "duplicate_key" and index == target and _objects(row):
            duplicate = draw(st.sampled_from(_objects(row)))
        data = _encode(dumps(row, duplicate_at=duplicate, ascii_only=ascii_only))
        if mutation == "invalid_utf8" and index == target:
            cut = draw(st.integers(0, len(data)))
            data = data[:cut] + draw(st.sampled_from(INVALID_UTF8)) + data[cut:]
        last = index == len(rows) - 1
        half = mutation == "half_line" and last
        if half:
            data = data[: draw(st.integers(1, len(data) - 1))]
        try:
            data.decode("utf-8")
            if half:
                faults.append(rf": row {index}: not valid JSON at line {line}, .*the file looks cut short")
            elif duplicate is not None:
                key = next(iter(_at(row, duplicate)))
                faults.append(rf": row {index}: field {re.escape(repr(key))} appears twice")
        except UnicodeDecodeError:
            faults.append(rf": row {index}: not valid UTF-8 at line {line},")
        chunks.append(data + (b"" if half or (last and draw(st.booleans())) else end.encode()))
        if not last and chance(draw, 5):
            line += 1
            chunks.append(draw(st.sampled_from(["", " ", "\t", "  \t "])).encode() + end.encode())
    path = folder / f"{name}.jsonl"
    path.write_bytes(b"".join(chunks))
    exact = faults[0] if faults else None
    return Case("jsonl", path, len(rows), odd, blank, exact, parses=not faults)


@st.composite
def json_cases(draw, folder: Path, name: str) -> Case:
    """A .json file: a list of rows, an object holding one list, or a top level that is not one; odd bytes."""
    rows, odd, blank = draw(row_lists())
    shape = draw(st.sampled_from(["list", "list", "wrapped", "two_lists", "no_list", "scalar", "empty"]))
    value: object = rows
    exact, n = None, len(rows)
    if shape == "wrapped":
        value = {"data": rows, "meta": {"note": draw(TEXT)}}
    elif shape == "two_lists":
        value, n = {"train": rows, "test": rows}, None
        exact = r"expected a JSON list of rows \(or an object holding one list\)"
    elif shape == "no_list":
        value, n = {"rows": draw(JUNK.filter(lambda v: not isinstance(v, list)))}, None
        exact = r"expected a JSON list of rows \(or an object holding one list\)"
    elif shape == "scalar":
        value, n = draw(JUNK.filter(lambda v: not isinstance(v, (list, dict)))), None
        exact = r"expected a JSON list of rows, got "
    elif shape == "empty":
        value, n, odd, blank = [], 0, set(), set()
        exact = r": no rows$"
    mutation = draw(st.sampled_from(["none", "none", "truncated", "invalid_utf8", "duplicate_key", "indent"]))
    text = dumps(value)
    if mutation == "indent":
        text = json.dumps(value, indent=draw(st.integers(0, 3)))
    elif mutation == "duplicate_key" and shape in ("list", "wrapped"):
        target = draw(st.integers(0, len(rows) - 1))
        objects = _objects(rows[target])
        if objects:
            at = draw(st.sampled_from(objects))
            key = next(iter(_at(rows[target], at)))
            text = dumps(value, duplicate_at=(("data",) if shape == "wrapped" else ()) + (target, *at))
            exact = rf": row {target}: field {re.escape(repr(str(key)))} appears twice"
    data = _encode(text)
    if mutation == "truncated" and isinstance(value, (list, dict)) and len(text) > 2:
        data = _encode(text[: draw(st.integers(1, len(text) - 1))])
        exact = r": not valid JSON at line \d+, column \d+"
    if mutation == "invalid_utf8":
        cut = draw(st.integers(0, len(data)))
        line = data.count(b"\n", 0, cut) + 1
        data = data[:cut] + draw(st.sampled_from(INVALID_UTF8)) + data[cut:]
        exact = rf": not valid UTF-8 at line {line} "
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    path = folder / f"{name}.json"
    path.write_bytes(data)
    return Case("json", path, n, odd, blank, exact, parses=exact is None)


def _arrow_types():
    import pyarrow as pa

    message_type = pa.struct([("role", pa.string()), ("content", pa.string())])
    return {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "null": pa.null(),
        "strings": pa.list_(pa.string()),
        "messages": pa.list_(message_type),
        "struct": pa.struct([("text", pa.string())]),
    }


def _arrow_values(kind: str):
    plain = {
        "string": st.one_of(NONBLANK, NONBLANK, WHITESPACE, TEXT),
        "int": st.integers(-(10**12), 10**12),
        "float": st.floats(),
        "bool": st.booleans(),
        "null": st.none(),
        "strings": st.lists(TEXT, max_size=3),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.one_of(st.sampled_from(ROLES), st.none()), "content": st.one_of(TEXT, st.none())}
            ),
            max_size=4,
        ),
        "struct": st.fixed_dictionaries({"text": st.one_of(TEXT, st.none())}),
    }[kind]
    return st.integers(0, 7).flatmap(lambda i: st.none() if i == 4 else plain)  # nulls (1 in 8), as Parquet allows


@st.composite
def _messages_column_value(draw):
    """Mostly a well-formed conversation (a user turn, then the answer), as a messages column holds."""
    if chance(draw, 4):
        return draw(_arrow_values("messages"))
    return draw(turns_before_answer()) + [message("assistant", draw(NONBLANK))]


@st.composite
def table_columns(draw) -> tuple[dict, int]:
    """Columns of a table: a format's columns, now and then one missing, extras added, now and then a
    column of another type than the format's."""
    formats = [["prompt", "completion"], ["messages"], ["instruction", "input", "output"]]
    wanted = [c for c in draw(st.sampled_from(formats)) if not chance(draw, 8)]
    wanted += draw(st.lists(st.sampled_from(["id", "text", "answer", "score", "prompt", "output"]), max_size=2))
    columns: dict = {}
    n = 0 if chance(draw, 12) else draw(st.integers(1, 4))
    for column in dict.fromkeys(wanted):
        natural = "messages" if column == "messages" else "int" if column == "score" else "string"
        kind = natural if not chance(draw, 6) else draw(st.sampled_from(sorted(_arrow_types())))
        if kind == "messages" and column == "messages":
            values = [draw(_messages_column_value()) for _ in range(n)]
        elif kind == "string" and column in ("completion", "output"):
            values = [draw(st.one_of(NONBLANK, NONBLANK, NONBLANK, WHITESPACE, st.none())) for _ in range(n)]
        else:
            values = [draw(_arrow_values(kind)) for _ in range(n)]
        columns[column] = (kind, values)
    return columns, n


def _table(columns: dict):
    import pyarrow as pa

    types = _arrow_types()
    if not columns:
        return pa.table({"score": pa.array([], pa.int64())})
    return pa.table({name: pa.array(values, types[kind]) for name, (kind, values) in columns.items()})


def _table_case(kind: str, path: Path, columns: dict, n: int, damaged: bool = False) -> Case:
    # which rows are well formed is the loader's to say: every row counts as possibly odd; a table
    # without rows must be refused as such; a damaged one may load or be refused, naming the file
    if damaged:
        return Case(kind, path, None, set(range(n)))
    return Case(kind, path, n, set(range(n)), exact=r"no rows" if n == 0 or not columns else None, parses=True)


@st.composite
def parquet_cases(draw, folder: Path, name: str) -> Case:
    import pyarrow.parquet as pq

    columns, n = draw(table_columns())
    path = folder / f"{name}.parquet"
    pq.write_table(_table(columns), path)
    if chance(draw, 10):  # a damaged file: cut short, or garbage after a valid start
        data = path.read_bytes()
        path.write_bytes(data[: draw(st.integers(0, len(data) - 1))] if draw(st.booleans()) else b"PAR1" + bytes(40))
        return Case("parquet", path, None, exact=r"no rows \(the file is empty\)|not a readable Parquet file")
    return _table_case("parquet", path, columns, n if columns else 0)


@st.composite
def saved_dataset_cases(draw, folder: Path, name: str) -> Case:
    """A `datasets` save_to_disk folder: wrong features, a DatasetDict with or without 'train', damage."""
    import pyarrow as pa
    from datasets import Dataset, DatasetDict
    from datasets.table import InMemoryTable
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    columns, n = draw(table_columns())
    path = folder / name
    dataset = Dataset(InMemoryTable(_table(columns)))
    layout = draw(st.sampled_from(["dataset", "dataset", "dataset", "train_split", "train_split", "no_train_split"]))
    if layout == "dataset":
        dataset.save_to_disk(str(path))
    else:
        split = "train" if layout == "train_split" else draw(st.sampled_from(["test", "validation"]))
        splits = {split: dataset}
        if draw(st.booleans()):  # another split, of 0 rows (saved without a data file) or of other columns
            other = {"text": pa.array([], pa.string())} if draw(st.booleans()) else {"score": pa.array([1, 2])}
            splits["validation" if split != "validation" else "test"] = Dataset(InMemoryTable(pa.table(other)))
        DatasetDict(splits).save_to_disk(str(path))
    if layout == "no_train_split":
        return Case("datasets", path, None, exact=r"a DatasetDict without a 'train' split")
    damage = draw(st.sampled_from(["none"] * 9 + ["no_arrow", "state", "info"]))
    if damage != "none":
        pattern = {"no_arrow": "*.arrow", "state": "state.json", "info": "dataset_info.json"}[damage]
        files = sorted(path.rglob(pattern))
        for f in files:
            if damage == "no_arrow":
                f.unlink()
            else:
                f.write_text(draw(st.sampled_from(["", "{", "[]", '{"_data_files": 5}'])))
        return _table_case("datasets", path, columns, n, damaged=True)
    return _table_case("datasets", path, columns, n if columns else 0)


STRICT_TEMPLATE = (  # a template that refuses roles out of order, as Llama 2's and Mistral's do
    "{%- set offset = 1 if messages and messages[0]['role'] == 'system' else 0 -%}"
    "{%- for m in messages -%}"
    "{%- if loop.index0 >= offset and m['role'] != ['user', 'assistant'][(loop.index0 - offset) % 2] -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


class StrictTemplate:
    """The tokenizer, rendering with STRICT_TEMPLATE."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def apply_chat_template(self, messages, **kwargs):
        return self.tokenizer.apply_chat_template(messages, chat_template=STRICT_TEMPLATE, **kwargs)


def alternates(roles: list[str]) -> bool:
    offset = 1 if roles and roles[0] == "system" else 0
    return all(r == ("user", "assistant")[(i - offset) % 2] for i, r in enumerate(roles) if i >= offset)


@st.composite
def conversation_cases(draw, folder: Path, name: str, tokenizer) -> Case:
    """One chat row with a drawn order of roles among well-formed rows; half of them with a template that
    refuses roles out of order. The outcome is decided by the roles (the module docstring of qtuning.data)."""
    if draw(st.booleans()):
        roles = draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=6))
    else:  # an alternating conversation, now and then with one role changed
        roles = (["system"] if draw(st.booleans()) else []) + ["user", "assistant"] * draw(st.integers(1, 3))
        if draw(st.booleans()):
            roles[draw(st.integers(0, len(roles) - 1))] = draw(st.sampled_from(ROLES))
    conversation = [message(r, draw(NONBLANK)) for r in roles]
    others = [draw(valid_rows())[0] for _ in range(draw(st.integers(0, 3)))]
    at = draw(st.integers(0, len(others)))
    rows = others[:at] + [{"messages": conversation}] + others[at:]
    strict = draw(st.booleans())
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the first check that fails decides: empty role, last turn, first turn, then the template
    empty = next((i for i, r in enumerate(roles) if not r.strip()), None)
    if empty is not None:
        exact = rf": row {at}: field 'messages'\[{empty}\] must be a"
    elif roles[-1] != "assistant":
        exact = rf": row {at}: field 'messages' must end with an assistant message"
    elif roles[0] == "assistant":
        exact = rf": row {at}: field 'messages' starts with an assistant message"
    elif strict and not alternates(roles):
        exact = rf": row {at}: the model's chat template refuses this conversation"
    else:
        exact = None
    blank = {i for i, r in enumerate(rows) if i != at and not _response(r).strip()}
    return Case(
        "conversations",
        path,
        len(rows),
        {at},
        blank,
        exact,
        must_load=exact is None,
        tokenizer=StrictTemplate(tokenizer) if strict else None,
        parses=True,
    )


def _response(row: dict) -> str:
    if "messages" in row:
        return row["messages"][-1]["content"]
    if "completion" in row:
        c = row["completion"]
        return c if isinstance(c, str) else "".join(m["content"] for m in c)
    return row["output"]


@st.composite
def long_field_cases(draw, folder: Path, name: str) -> Case:
    """Rows with a 100,000-character (or longer) prompt or response: loaded whole, truncated to max_length."""
    unit = draw(st.tuples(VISIBLE, TEXT).map("".join))
    long_text = (unit * (100_000 // len(unit) + 1))[: 100_000 + draw(st.integers(0, 100))]
    rows, long_rows = [], 0
    for _ in range(draw(st.integers(1, 3))):
        row, blank = draw(valid_rows())
        where = draw(st.sampled_from(["prompt", "response", "none"]))
        if where != "none":
            long_rows += 1
            if "messages" in row:
                row["messages"][0 if where == "prompt" else -1]["content"] = long_text
            elif "instruction" in row:
                row["instruction" if where == "prompt" else "output"] = long_text
            elif where == "prompt":
                row["prompt"] = long_text if isinstance(row["prompt"], str) else [message("user", long_text)]
            else:
                row["completion"] = long_text
        rows.append(row)
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    blank = {i for i, r in enumerate(rows) if not _response(r).strip()}
    if len(blank) == len(rows):
        return Case("long_fields", path, len(rows), set(), blank, exact="every row has an empty response")
    return Case("long_fields", path, len(rows), set(), blank, must_load=True, long_rows=long_rows, parses=True)


# ---------------------------------------------------------------------------------- files written by hand


def explicit_cases(folder: Path) -> list[Case]:
    """Odd files worth naming one by one: empty files, a BOM alone, the wrong JSON form for the suffix,
    nesting past the parser's limit, a 5,000-digit number, folders that are not datasets, other suffixes."""
    folder.mkdir(parents=True, exist_ok=True)
    row = json.dumps({"prompt": "q", "completion": "a"})
    files = {
        "empty.jsonl": (b"", r": no rows$"),
        "empty.json": (b"", r": no rows \(the file is empty\)"),
        "empty.parquet": (b"", r": no rows \(the file is empty\)"),
        "blank.jsonl": (b" \n\t\n\r\n", r": no rows$"),
        "blank.json": (b" \n\t ", r": no rows \(the file is empty\)"),
        "bom_only.jsonl": (b"\xef\xbb\xbf", r": no rows$"),
        "bom_only.json": (b"\xef\xbb\xbf\n", r": no rows \(the file is empty\)"),
        "jsonl_in.json": (
            (row + "\n" + row + "\n").encode(),
            r"not valid JSON at line 2, column 1 \(Extra data\); one JSON",
        ),
        "list_in.jsonl": (("[\n" + row + "\n]\n").encode(), r": row 0: not valid JSON at line 1,"),
        "deep.jsonl": (
            b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b', "completion": "a"}\n',
            r": row 0: not valid JSON: nested deeper",
        ),
        "deep.json": (b"[" * 100_000 + b"]" * 100_000, r": not valid JSON: nested deeper"),
        "digits.jsonl": (
            b'{"prompt": "q", "completion": "a", "score": ' + b"7" * 5000 + b"}\n",
            r": row 0: not valid JSON: a number",
        ),
        "nested_500.jsonl": (  # parses, and the message shows the value without recursing into it
            b'{"prompt": "q", "completion": ' + b"[" * 500 + b"]" * 500 + b"}\n",
            r": row 0: field 'completion'\[0\] must be a \{'role': str, 'content': str\} message, got \[\[",
        ),
        "garbage.parquet": (b"PAR1" + bytes(100) + b"PAR1", r"not a readable Parquet file"),
        "text.parquet": (b"prompt,completion\nq,a\n", r"not a readable Parquet file"),
        "rows.csv": (b"prompt,completion\nq,a\n", r"unsupported file type '.csv'"),
        "all_blank.jsonl": (
            b'{"prompt": "q", "completion": " "}\n{"instruction": "q", "output": "\\n\\t"}\n',
            r"every row has an empty response",
        ),
        "nul.jsonl": (b'{"prompt": "q\\u0000", "completion": "a\\u0000b"}\n', None),
        "cr_only.jsonl": ((row + "\r" + row + "\r").encode(), None),
        "bom_each_line.jsonl": (b"\xef\xbb\xbf" + row.encode() + b"\n\xef\xbb\xbf" + row.encode() + b"\n", None),
    }
    cases = []
    for name, (data, exact) in files.items():
        path = folder / name
        path.write_bytes(data)
        cases.append(Case("explicit", path, None, exact=exact, must_load=exact is None))
    for name in ("not_a_dataset.jsonl", "empty_folder"):
        (folder / name).mkdir(exist_ok=True)
        cases.append(Case("explicit", folder / name, None, exact=r"not a datasets save_to_disk folder"))
    return cases


# ---------------------------------------------------------------------------------- running


KINDS = {  # kind -> (strategy builder, examples in the test suite)
    "jsonl": (jsonl_cases, 800),
    "json": (json_cases, 450),
    "parquet": (parquet_cases, 300),
    "conversations": (conversation_cases, 420),
    "datasets": (saved_dataset_cases, 40),
    "long_fields": (long_field_cases, 8),
}


def run_kind(
    kind: str,
    examples: int,
    folder: Path,
    tokenizer,
    *,
    strict: bool = True,
    keep: Path | None = None,
    results: list | None = None,
    seed: int | None = None,
) -> list[Result]:
    """Generate `examples` cases of one kind and attempt each. strict: fail on the first broken promise
    (hypothesis then shrinks it to a minimal case); else only record it. keep: a folder to copy every
    refused file into (for the command-line test)."""
    build, _ = KINDS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    out = [] if results is None else results
    counter = iter(range(10**9))

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=seed is None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one(data):
        name = f"{kind}-{next(counter)}"
        args = (folder, name, tokenizer) if kind == "conversations" else (folder, name)
        case = data.draw(build(*args))
        result = attempt(case, tokenizer)
        out.append(result)
        if keep is not None and result.outcome == "refused" and result.stage == "read":
            target = keep / case.path.name
            (shutil.copytree if case.path.is_dir() else shutil.copy)(case.path, target)
            keep_messages[str(target)] = result.detail.replace(str(case.path), str(target))
        shutil.rmtree(case.path) if case.path.is_dir() else case.path.unlink()
        assert not strict or result.outcome != "broken", result.detail

    keep_messages: dict[str, str] = {}
    if seed is not None:
        from hypothesis import seed as seeded

        one = seeded(seed)(one)
    one()
    if keep is not None:
        KEPT.update(keep_messages)
    return out


KEPT: dict[str, str] = {}  # a kept refused file -> the message loading it gave
CLI_SHARE = {"jsonl": 16, "json": 12, "parquet": 8, "datasets": 6, "conversations": 6, "explicit": 8}


def refused_files(folder: Path, tokenizer, share: dict[str, int] = CLI_SHARE, seed: int | None = None) -> dict:
    """Files that `load_records` refuses, `share[kind]` of each kind, with the message for each."""
    keep = folder / "refused"
    keep.mkdir(parents=True, exist_ok=True)
    KEPT.clear()
    picked = {}
    for kind, wanted in share.items():
        before = set(KEPT)
        if kind == "explicit":
            for case in explicit_cases(folder / "explicit-cli"):
                result = attempt(case, tokenizer)
                if result.outcome == "refused" and result.stage == "read":
                    KEPT[str(case.path)] = result.detail
        else:
            run_kind(kind, wanted * 6, folder / f"cli-{kind}", tokenizer, keep=keep, seed=seed)
        picked.update({path: KEPT[path] for path in sorted(set(KEPT) - before)[:wanted]})
    return picked


def train_on(path: str, message: str, model: Path, output_dir: Path) -> str:
    """`qtuning train --data FILE --max_steps 1` on a refused file: "" if it exits 1 or 2 with exactly one
    `qtuning: error:` line, the message load_records gave, and no traceback; else what went wrong."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    argv = ["train", "--model", str(model), "--data", path, "--max_steps", "1", "--output_dir", str(output_dir)]
    proc = run_cli(*argv, timeout=600, env=env)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("qtuning: error:")]
    problems = []
    if proc.returncode not in (1, 2):
        problems.append(f"exit status {proc.returncode}")
    if "Traceback" in proc.stderr:
        problems.append("a traceback")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    elif lines[0] != f"qtuning: error: {message}":
        problems.append(f"another message than load_records': {lines[0][:200]!r} vs {message[:200]!r}")
    return f"{path}: {'; '.join(problems)}\n{proc.stderr[-1500:]}" if problems else ""


def summary() -> dict:
    """The session's tally: cases per kind and outcome, and the exception types seen."""
    kinds = sorted({k for k, _ in TALLY})
    return {
        "cases": sum(TALLY.values()),
        "per_kind": {k: {o: TALLY[k, o] for o in ("loaded", "refused", "broken") if TALLY[k, o]} for k in kinds},
        "exception_types": dict(EXCEPTIONS),
    }
