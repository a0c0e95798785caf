"""Data arguments: formats, normalisation, and errors that name the file, the row and the field."""

import json

import pytest

from qtuning.data import DataError, load_records, normalise_row, split_records, to_dataset, tokenize_record


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_three_row_formats_normalise_alike(tmp_path):
    rows = [
        {"prompt": "What is 2+2?", "completion": "4"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ]
        },
        {"instruction": "Translate", "input": "chat", "output": "cat"},
    ]
    records = [normalise_row(r, i, "x.jsonl") for i, r in enumerate(rows)]
    assert records[0]["prompt"] == [{"role": "user", "content": "What is 2+2?"}]
    assert records[0]["completion"] == [{"role": "assistant", "content": "4"}]
    assert [m["role"] for m in records[1]["prompt"]] == ["system", "user"]
    assert records[2]["prompt"][0]["content"] == "Translate\n\nchat"
    assert [r["id"] for r in records] == ["row-0", "row-1", "row-2"]


def test_builtin_rows_train_as_they_are(tmp_path):
    """A built-in set's own rows (prompt + response, as `qtuning.data.builtin` writes them) load like
    prompt + completion rows, so a user can save a built-in set and train on the file unchanged."""
    from qtuning.data.procedural import arith_records

    built = arith_records(2)
    path = _jsonl(tmp_path / "builtin.jsonl", built)
    records, report = load_records(path)
    assert report.rows_used == 2
    for row, record in zip(built, records):
        assert record["prompt"] == [{"role": "user", "content": row["prompt"]}]
        assert record["completion"] == [{"role": "assistant", "content": row["response"]}]
    # "completion" wins when a row has both; a bad response names its own field
    both = normalise_row({"prompt": "q", "completion": "c", "response": "r"}, 0, "x.jsonl")
    assert both["completion"][0]["content"] == "c"
    with pytest.raises(DataError, match=r"x.jsonl: row 3: field 'response' must be a"):
        normalise_row({"prompt": "q", "response": 5}, 3, "x.jsonl")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"instruction": 5, "output": "x"}, r"bad.jsonl: row 1: field 'instruction' must be a string, got int"),
        ({"prompt": "q", "completion": [{"role": "assistant"}]}, r"row 1: field 'completion'\[0\] must be a"),
        ({"messages": [{"role": "user", "content": "q"}]}, r"row 1: field 'messages' must end with an assistant"),
        ({"question": "q", "answer": "a"}, r"row 1: unrecognised row format with fields \['answer', 'question'\]"),
    ],
)
def test_malformed_rows_name_file_row_and_field(tmp_path, row, message):
    path = _jsonl(tmp_path / "bad.jsonl", [{"instruction": "ok", "output": "fine"}, row])
    with pytest.raises(DataError, match=message):
        load_records(path)


def test_invalid_json_line_is_located(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(DataError, match=r"broken.jsonl: row 1: not valid JSON"):
        load_records(str(path))


def test_missing_empty_and_unsupported_sources(tmp_path):
    with pytest.raises(DataError, match=r"nothing.jsonl: no such file"):
        load_records(str(tmp_path / "nothing.jsonl"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: no rows"):
        load_records(str(tmp_path / "empty.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        load_records(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match=r"neither a file, a folder nor a built-in"):
        load_records("no-such-builtin")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder: not a datasets save_to_disk folder"):
        load_records(str(tmp_path / "folder"))


def test_empty_responses_are_counted_and_skipped(tmp_path):
    path = _jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": " \n"}, {"prompt": "e", "completion": "f"}],
    )
    records, report = load_records(path)
    assert len(records) == 2 and report.rows_read == 3 and report.empty_response_rows == [1]
    assert "skipped 1 rows with an empty response (rows 1)" in "\n".join(report.lines())


def test_json_parquet_and_save_to_disk_give_the_same_records(tmp_path):
    rows = [{"id": f"r{i}", "prompt": f"q{i}", "completion": f"a{i}"} for i in range(5)]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    dataset = to_dataset([normalise_row(r, i, "x") for i, r in enumerate(rows)])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    dataset.save_to_disk(str(tmp_path / "saved"))
    from_json, _ = load_records(str(tmp_path / "d.json"))
    from_parquet, _ = load_records(str(tmp_path / "d.parquet"))
    from_disk, _ = load_records(str(tmp_path / "saved"))
    assert from_json == from_parquet
    assert [r["completion"] for r in from_disk] == [r["completion"] for r in from_json]


def test_split_is_disjoint_and_seeded():
    records = [{"id": str(i)} for i in range(100)]
    train, held_out = split_records(records, 0.1, seed=3)
    assert len(held_out) == 10 and len(train) == 90
    assert not {r["id"] for r in train} & {r["id"] for r in held_out}
    assert split_records(records, 0.1, seed=3) == (train, held_out)
    assert split_records(records, 0.1, seed=4)[1] != held_out


def test_real_alpaca_tokenises_with_the_prompt_masked():
    from tests.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    records, report = load_records("alpaca-demo")
    assert report.rows_read == 999
    features = tokenize_record(tokenizer, records[0], max_length=512)
    labels, ids = features["labels"], features["input_ids"]
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(ids[first:]).strip().endswith("<|im_end|>")
    assert records[0]["completion"][0]["content"][:20] in tokenizer.decode(ids[first:])


THREE_TURNS = {
    "id": "chat-1",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
        {"role": "assistant", "content": "6, of course."},
    ],
}


def _labelled_spans(tokenizer, encoded):
    """The decoded runs of consecutive labelled tokens."""
    spans, current = [], []
    for token, label in zip(encoded["input_ids"], encoded["labels"]):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def test_every_assistant_turn_of_a_conversation_carries_a_loss(tmp_path):
    """A 3-turn conversation: the labelled tokens are exactly the three assistant replies, each with its
    end-of-turn token (as TRL labels a completion), and no system or user token."""
    from qtuning.data import is_multi_turn, load_records, to_dataset, tokenize_record
    from tests.helpers import tiny_tokenizer

    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(THREE_TURNS) + "\n")
    records, _ = load_records(str(path))
    assert is_multi_turn(records[0])
    tokenizer = tiny_tokenizer()
    encoded = tokenize_record(tokenizer, records[0], None)
    assert _labelled_spans(tokenizer, encoded) == ["Hello!<|im_end|>\n", "4<|im_end|>\n", "6, of course.<|im_end|>\n"]
    # the trainer gets the same ids and labels (TRL trains pre-tokenised rows as they are)
    row = to_dataset(records, tokenizer)[0]
    assert row["input_ids"] == encoded["input_ids"] and row["labels"] == encoded["labels"]
    # a single-turn record keeps TRL's completion labelling: only the last reply
    single = {
        "id": "s",
        "prompt": [{"role": "user", "content": "Hi"}],
        "completion": [{"role": "assistant", "content": "Hello!"}],
    }
    assert _labelled_spans(tokenizer, tokenize_record(tokenizer, single, None)) == ["Hello!<|im_end|>\n"]


def test_the_probe_scores_every_assistant_turn_as_response():
    """The EU plane's per-sample scores of a conversation average over all three replies' tokens."""
    from qtuning.data import collate, tokenize_record
    from qtuning.data.records import _normalise_fields
    from qtuning.engine.scoring import shift_labels
    from tests.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    encoded = tokenize_record(tokenizer, _normalise_fields(THREE_TURNS, 0, "test"), None)
    batch = collate([encoded], tokenizer.pad_token_id)
    loss_mask = shift_labels(batch["labels"]) != -100  # (1, T): the positions the probe and the loss use
    assert int(loss_mask.sum()) == sum(
        len(tokenizer(t)["input_ids"]) for t in ["Hello!<|im_end|>\n", "4<|im_end|>\n", "6, of course.<|im_end|>\n"]
    )
