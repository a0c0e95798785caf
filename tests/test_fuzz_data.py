"""Fuzzed data (issue 29, item 2): over 2,000 odd rows and files through the data loading path, each
loaded (rows counted, skipped rows reported) or refused with a QTuningError that names the file and the
row; never another exception. Then refused files through `qtuning train` as subprocesses: exit status 1
or 2, one `qtuning: error:` line (the same message), no traceback. The cases: tests/fuzz_cases.py."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from qtuning.errors import DataError
from tests.fuzz_cases import KINDS, TALLY, attempt, explicit_cases, refused_files, run_kind, summary, train_on
from tests.helpers import tiny_tokenizer

MIN_CASES = 2_000


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_explicit_odd_files(folder, tokenizer):
    results = [attempt(case, tokenizer) for case in explicit_cases(folder / "explicit")]
    broken = [r.detail for r in results if r.outcome == "broken"]
    assert not broken, "\n".join(broken)


ROW = b'{"prompt": "q", "completion": "a"}'
DECIDED = [  # (file, its bytes, the error it gives, or None: it loads); qtuning/data.py's docstring says why
    ("bom.jsonl", b"\xef\xbb\xbf" + ROW + b"\n" + ROW + b"\n", None),
    ("bom.json", b"\xef\xbb\xbf[" + ROW + b"]", None),
    ("cut.jsonl", ROW + b"\n" + ROW[:20], r"cut.jsonl: row 1: not valid JSON at line 2, .* no line end: .*cut short"),
    ("blank_lines.jsonl", ROW + b"\n\n \n" + b'{"prompt": 5, "completion": "a"}\n', r"row 1: field 'prompt' must be"),
    (
        "latin1.jsonl",
        ROW + b"\n" + b'{"prompt": "caf\xe9", "completion": "a"}\n',
        r"row 1: not valid UTF-8 at line 2, character 16",
    ),
    ("latin1.json", b"[\n" + ROW + b',\n{"prompt": "caf\xe9"}]', r"latin1.json: not valid UTF-8 at line 3 "),
    (
        "twice.jsonl",
        b'{"prompt": "q", "completion": "a", "completion": "b"}\n',
        r"row 0: field 'completion' appears twice",
    ),
    (
        "twice.json",
        b'[{"prompt": "q", "completion": "a"}, {"messages": [{"role": "user", "role": "x", "content": "q"}]}]',
        r"twice.json: row 1: field 'role' appears twice",
    ),
    (
        "surrogate.jsonl",
        b'{"prompt": "q", "completion": "a\\ud800"}\n',
        r"row 0: field 'completion'\[0\] 'content' holds a lone",
    ),
    ("no_answer.jsonl", b'{"messages": [{"role": "user", "content": "q"}]}\n', r"must end with an assistant message"),
    (
        "answer_first.jsonl",
        b'{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}, '
        b'{"role": "assistant", "content": "a"}]}\n',
        r"row 0: field 'messages' starts with an assistant message",
    ),
    (
        "users_twice.jsonl",
        b'{"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}, '
        b'{"role": "assistant", "content": "a"}]}\n',
        None,
    ),  # the chat template decides; SmolLM2's renders it
    ("top_dict.json", b'{"rows": 3}', r"expected a JSON list of rows \(or an object holding one list\)"),
    ("top_number.json", b"3", r"expected a JSON list of rows, got int"),
]


@pytest.mark.parametrize("name, data, error", DECIDED, ids=[d[0] for d in DECIDED])
def test_each_odd_kind_has_its_decided_outcome(name, data, error, folder, tokenizer):
    from tests.fuzz_cases import load_like_train

    path = folder / "decided" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    if error is None:
        records, report = load_like_train(str(path), tokenizer)
        assert report.rows_read == report.rows_used == len(records) >= 1
    else:
        with pytest.raises(DataError, match=error) as raised:
            load_like_train(str(path), tokenizer)
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fuzzed_files_load_or_name_file_and_row(kind, folder, tokenizer):
    _, examples = KINDS[kind]
    results = run_kind(kind, examples, folder / kind, tokenizer)
    assert len(results) >= examples  # hypothesis ran every example (more only while shrinking a failure)
    assert {r.outcome for r in results} <= {"loaded", "refused"}


def test_the_fuzzing_counted_its_cases():
    """The total over this module (each kind, each outcome, the exception types), printed for the record."""
    kinds = {kind for kind, _ in TALLY}
    if not kinds >= {*KINDS, "explicit"}:
        pytest.skip(f"only {sorted(kinds)} ran: the total needs the whole module")
    tally = summary()
    print(f"\nfuzzed data: {tally}")
    assert tally["cases"] >= MIN_CASES, tally
    assert set(tally["exception_types"]) <= {"DataError"}, tally["exception_types"]
    assert all(TALLY[kind, "broken"] == 0 for kind in KINDS)
    assert sum(TALLY[kind, "loaded"] for kind in KINDS) > 200 and sum(TALLY[kind, "refused"] for kind in KINDS) > 200


@pytest.mark.slow
def test_refused_files_through_qtuning_train(folder, tokenizer, tmp_path_factory):
    """Each refused file as `qtuning train --data FILE --max_steps 1`, two at a time, on the tiny model."""
    from tests.helpers import make_tiny_model_dir

    tiny = make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
    files = refused_files(folder / "cli", tokenizer)
    assert len(files) >= 50, len(files)
    out = tmp_path_factory.mktemp("runs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = [(path, message, tiny, out / str(i)) for i, (path, message) in enumerate(files.items())]
        failures = [f for f in pool.map(lambda job: train_on(*job), jobs) if f]
    print(f"\nqtuning train on {len(files)} refused files: {len(files) - len(failures)} kept the promise")
    assert not failures, "\n\n".join(failures)
