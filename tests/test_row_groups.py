"""group_field: each training row's group (source, task, family), logged once and joined with the plan log
by `qtuning report` into per-group kept shares."""

import json
from collections import Counter

import pytest

from qtuning.data.row_groups import NO_GROUP, read_groups, row_groups, write_groups
from qtuning.errors import ConfigError, DataError, ReportError
from qtuning.insight.run_reading import kept_by_group, kept_share_by_group_over_steps
from qtuning.training.sft_config import QTuningSFTConfig
from tests.helpers import make_tiny_model_dir, run_cli


def _plans():
    # rows 0-3: groups a a b c (row 3 is never scored below)
    return [
        {"step": 1, "samples": {"id": [0, 1], "role": [2, 0], "trainable_tokens": [10, 6], "kept_tokens": [5, 6]}},
        {"step": 1, "samples": {"id": [2, 0], "role": [4, 0], "trainable_tokens": [4, 10], "kept_tokens": [4, 10]}},
        {"step": 2, "samples": {"id": [1, 2], "role": [4, 0], "trainable_tokens": [6, 4], "kept_tokens": [6, 4]}},
    ]


def test_kept_by_group_by_hand():
    table = {g["group"]: g for g in kept_by_group(_plans(), ["a", "a", "b", "c"])}
    a, b, c = table["a"], table["b"], table["c"]
    # a: scored 4 times (rows 0, 1, 0, 1), kept twice (0 as Q2 at step 1, 1 as Q4 at step 2)
    assert (a["rows"], a["rows_trained"], a["samples_scored"]) == (2, 2, 4)
    assert (a["kept_share"], a["q2_share"], a["q4_share"]) == (0.5, 0.25, 0.25)
    # b: row 2 scored twice, kept once as Q4
    assert (b["rows"], b["rows_trained"], b["samples_scored"], b["kept_share"]) == (1, 1, 2, 0.5)
    # tokens scored: a 10+6+10+6 = 32, b 4+4 = 8 of 40; trained (kept rows only): a 5+6 = 11, b 4 of 15
    assert (a["tokens_scored_share"], b["tokens_scored_share"]) == (0.8, 0.2)
    assert (a["tokens_trained_share"], b["tokens_trained_share"]) == (round(11 / 15, 3), round(4 / 15, 3))
    # c: in the data, never scored
    assert (c["rows"], c["samples_scored"], c["kept_share"], c["tokens_trained_share"]) == (1, 0, None, 0.0)
    assert [g["group"] for g in kept_by_group(_plans(), ["a", "a", "b", "c"])] == ["a", "b", "c"]  # largest first


def test_kept_share_over_steps_by_hand():
    ends, series = kept_share_by_group_over_steps(_plans(), ["a", "a", "b", "c"], bins=10)
    assert ends == [1, 2]  # no more ranges than steps
    # step 1: a scored 3 times (rows 0, 1, 0), kept once; b once, kept. Step 2: a kept 1 of 1, b 0 of 1
    assert series["a"] == [1 / 3, 1.0] and series["b"] == [1.0, 0.0]
    assert "c" not in series  # never scored: no line


def test_a_row_id_outside_the_groups_is_refused():
    with pytest.raises(ReportError, match="row id 2.*cover 2 rows.*not from the same run"):
        kept_by_group(_plans(), ["a", "a"])


def test_row_groups_from_a_dataset_and_its_errors():
    from datasets import Dataset

    data = Dataset.from_list([{"text": "x", "source": "gsm8k"}, {"text": "y", "source": None}])
    assert row_groups(data, "source") == ["gsm8k", NO_GROUP]
    assert row_groups(Dataset.from_list([{"task": 3}, {"task": 7}]), "task") == ["3", "7"]
    with pytest.raises(ConfigError, match=r"no column 'origin'; its columns are \['source', 'text'\]"):
        row_groups(data, "origin")
    with pytest.raises(ConfigError, match="row 0 holds list"):
        row_groups(Dataset.from_list([{"s": ["a"]}, {"s": ["b", "c"]}]), "s")
    with pytest.raises(
        ConfigError, match=r"needs a training set that is a datasets.Dataset \(its rows get ids\); got list"
    ):
        row_groups([{"source": "a"}], "source")


def test_groups_file_round_trip_and_a_broken_one(tmp_path):
    assert read_groups(tmp_path) == (None, None)
    write_groups(tmp_path, "source", ["a", "b"])
    assert read_groups(tmp_path) == ("source", ["a", "b"])
    (tmp_path / "qtuning_groups.json").write_text('{"field": "source", "groups": [1, 2]}')
    with pytest.raises(ReportError, match="qtuning_groups.json: expected"):
        read_groups(tmp_path)


def test_group_field_needs_the_plan_log():
    with pytest.raises(ConfigError, match="group_field='source' is not allowed with plan_log=False"):
        QTuningSFTConfig(output_dir="unused", group_field="source", plan_log=False)


def test_the_trainer_refuses_a_column_it_does_not_have(tmp_path):
    from tests.test_trainer import make_trainer

    with pytest.raises(
        ConfigError, match="no column 'source'; its columns are \\['input_ids', 'labels', 'qtuning_id'\\]"
    ):
        make_trainer(tmp_path, group_field="source")


def _rows(n):
    # the group is written into the row itself ("family k"), so the test can tell which row got which group
    families = ["math", "chat", "code"]
    return [
        {
            "instruction": f"Row of family {families[i % 3]}: say {i}.",
            "output": f"The answer is {i}. " * (1 + i % 4),
            "family": families[i % 3],
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def grouped_run(tmp_path_factory):
    """`qtuning train --group_field family` on a tiny random model: 3 steps of 8 of 24 rows, 50% x 50%."""
    root = tmp_path_factory.mktemp("grouped")
    model = make_tiny_model_dir(root / "model")
    rows = _rows(24)
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = root / "run"
    proc = run_cli(
        "train", "--model", str(model), "--data", str(root / "data.jsonl"), "--output_dir", str(out),
        "--group_field", "family", "--lora_r", "0", "--eval_fraction", "0", "--max_steps", "3",
        "--per_device_train_batch_size", "8", "--sample_ratio", "0.5", "--token_ratio", "0.5",
        "--max_length", "128", "--save_strategy", "no", "--report_to", "none", "--probe_precision", "same",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "  kept, by group          " in proc.stdout
    return root, rows, out


def test_a_run_logs_each_row_id_with_its_own_group(grouped_run):
    from transformers import AutoTokenizer

    from qtuning.data.plan_log import read_plan_log

    root, rows, out = grouped_run
    field_name, groups = read_groups(out)
    assert field_name == "family" and Counter(groups) == Counter(r["family"] for r in rows)
    # every logged Q2 sample's decoded response belongs to the row its id names: find that row by its
    # response, and its group must be the one the groups file gives the id
    tokenizer = AutoTokenizer.from_pretrained(out)
    by_answer = {r["output"].strip(): r["family"] for r in rows}
    q2 = [t for plan in read_plan_log(out / "qtuning_plans.jsonl") for t in plan["tokens"]]
    assert q2
    for entry in q2:
        text = tokenizer.decode(entry["token_ids"]).replace("<|im_end|>", "").strip()
        assert by_answer[text] == groups[entry["id"]]


def test_the_report_shows_the_groups(grouped_run, tmp_path):
    from qtuning.data.plan_log import read_plan_log
    from qtuning.insight.run_report import ReportConfig, write_run_report

    _, rows, out = grouped_run
    page = write_run_report(ReportConfig(run_dir=str(out), output=str(tmp_path / "r.html"))).read_text()
    assert "Which samples it kept, by family" in page and "Kept share by family" in page
    table = kept_by_group(read_plan_log(out / "qtuning_plans.jsonl"), read_groups(out)[1])
    assert sum(g["samples_scored"] for g in table) == 24  # 3 steps x 8 rows
    assert sum(g["rows"] for g in table) == 24 and {g["group"] for g in table} == {"math", "chat", "code"}
    assert sum(g["kept_share"] * g["samples_scored"] for g in table) == pytest.approx(12, abs=0.01)  # 50%
    for g in table:
        assert f"<td>{g['group']}</td>" in page
    # the run's summary counted the same shares as it trained, and printed them
    summary = json.loads((out / "qtuning_summary.json").read_text())
    assert summary["kept_share_by_group"] == pytest.approx({g["group"]: g["kept_share"] for g in table}, abs=5e-4)
    assert list(summary["kept_share_by_group"]) == [
        g["group"] for g in sorted(table, key=lambda g: -g["samples_scored"])
    ]


def test_a_row_without_the_group_field_is_refused_by_name(tmp_path):
    model = make_tiny_model_dir(tmp_path / "model")
    rows = _rows(6)
    del rows[4]["family"]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    proc = run_cli(
        "train", "--model", str(model), "--data", str(tmp_path / "data.jsonl"), "--output_dir", str(tmp_path / "o"),
        "--group_field", "family", "--max_steps", "1",
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # a data error (errors.py: exit 1)
    assert "data.jsonl: row 4: field 'family' (group_field) has no such field" in proc.stderr


def test_a_group_field_that_names_a_trainer_column_is_refused():
    from qtuning.data.tokens import to_dataset

    records = [
        {
            "id": 0,
            "prompt": [{"role": "user", "content": "q"}],
            "completion": [{"role": "assistant", "content": "a"}],
            "group": "x",
        }
    ]
    with pytest.raises(DataError, match="group_field='prompt' names a column the trainer reads itself"):
        to_dataset(records, group_column="prompt")
    assert to_dataset(records, group_column="family")["family"] == ["x"]


def test_analyze_by_group_against_its_own_score_table(tmp_path, monkeypatch, capsys):
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtuning import QTuningConfig
    from qtuning.insight.analyze import run_analyze
    from qtuning.insight.analyze_config import AnalyzeConfig

    folder = make_tiny_model_dir(tmp_path / "model")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    rows = _rows(12)
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    settings = dict(model=str(folder), data=str(tmp_path / "data.jsonl"), output=str(tmp_path / "a"), max_length=64)
    settings.update(pool_sizes="4,all", shuffles=1, batch_size=4)
    result = run_analyze(
        AnalyzeConfig(**settings, group_field="family"), QTuningConfig(sample_ratio=0.5), model=model,
        tokenizer=tokenizer, progress=False,
    )  # fmt: skip
    table = pd.read_parquet(tmp_path / "a" / "scores.parquet")
    assert table["group"].tolist() == [rows[i]["family"] for i in table["index"]]
    assert result["group_field"] == "family" and [g["samples"] for g in result["by_group"]] == [4, 4, 4]
    for g in result["by_group"]:
        mine = table[table["group"] == g["group"]]
        for label, column in (("4", "role_p4"), ("all", "role_all")):
            assert g["kept_share"][label] == round(float((mine[column] != "dropped").mean()), 3)
        quadrants = mine.loc[mine["has_response"], "quadrant_all"]
        assert g["quadrant_shares"] == [round(float((quadrants == q).mean()), 3) for q in range(1, 5)]
    printed = capsys.readouterr().out
    assert "[qtuning] by family: samples, Q1-Q4 (whole dataset), kept per pool size:" in printed
    assert "By family" in (tmp_path / "a" / "summary.md").read_text()
    # `qtuning select` on that analysis says what each group keeps, as its subset file holds
    from qtuning.insight.static_select import SelectConfig, run_select

    subset = tmp_path / "subset.jsonl"
    counts = run_select(
        SelectConfig(scores=str(tmp_path / "a" / "scores.parquet"), output=str(subset)), QTuningConfig(sample_ratio=0.5)
    )
    written = Counter(json.loads(line)["family"] for line in subset.read_text().splitlines())
    assert counts["kept_by_group"] == {g: written.get(g, 0) for g in ("math", "chat", "code")}
    assert "[qtuning] kept by group: " in capsys.readouterr().out

    # the groups are not part of the scores' fingerprint: the same folder without them rescored nothing
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every shard is on disk")

    monkeypatch.setattr("qtuning.data.models.load_model_and_tokenizer", no_model)
    again = run_analyze(AnalyzeConfig(**settings), QTuningConfig(sample_ratio=0.5), progress=False)
    assert again["complete"] and "by_group" not in again


def test_group_totals_sum_over_ranks_into_the_summary():
    import torch

    from qtuning.training.run_metrics import RunMetrics

    ranks = [RunMetrics(), RunMetrics()]
    for metrics in ranks:
        metrics.start_groups(["a", "b"])
    ranks[0].add_groups(["a"], [True])  # rank 0 never sees group b
    ranks[1].add_groups(["b", "b", "a"], [False, True, False])
    assert not any(k.startswith("group:") for m in ranks for k in m.window)  # counted in the totals only
    keys = ranks[1]._keys(with_groups=True)  # what rank 1 sends, in the order every rank sends
    other = torch.tensor([ranks[1].totals.get(k, 0.0) for k in keys], dtype=torch.float64)
    fields = dict(wall_clock_s=1.0, optimizer_steps=1, scoring_mode="probe", output_dir="o", plan_log=None)
    summary = ranks[0].summary(lambda t: t + other, "cpu", **fields)
    assert summary["kept_share_by_group"] == {"b": 0.5, "a": 0.5}  # b scored 2 (kept 1), a 2 (kept 1)
    assert list(summary["kept_share_by_group"]) == ["a", "b"]  # equal counts: by name
    assert "kept_share_by_group" not in RunMetrics().summary(None, "cpu", **fields)  # no groups: no key


def test_every_count_the_trainer_adds_is_summed_over_ranks():
    """The all-reduce sends COUNT_KEYS on every rank: a count outside it would stay one rank's own."""
    import re
    from pathlib import Path

    import qtuning.training as training
    from qtuning.training.run_metrics import COUNT_KEYS

    added = set()
    for path in Path(training.__file__).parent.glob("*.py"):
        text = path.read_text()
        for call in re.findall(r"_qt_metrics\.add\((.*?)\)\n", text, flags=re.S):
            added |= set(re.findall(r"(\w+)=", call))
        if path.name == "run_metrics.py":
            block = text[text.index("counts = {") : text.index("self.add(**counts)")]
            added |= set(re.findall(r'"(\w+)":', block)) | {f"q{q}" for q in range(1, 5)}
    assert added and added <= set(COUNT_KEYS), sorted(added - set(COUNT_KEYS))


def test_ranks_that_counted_different_things_send_the_same_keys():
    import torch

    from qtuning.training.run_metrics import RunMetrics

    sent = []

    def reduce(values: torch.Tensor) -> torch.Tensor:
        sent.append(values.numel())
        return values * 2  # two ranks that counted alike, as far as the sums go

    ranks = [RunMetrics(), RunMetrics()]
    ranks[0].add(non_finite_rows=1, probed_positions=10)  # rank 1 dropped nothing and probed nothing
    ranks[1].add(step_s=0.5)
    for metrics in ranks:
        metrics.start_groups(["a", "b"])
    ranks[0].add_groups(["a"], [True])
    windows = [m.take_window(reduce, "cpu") for m in ranks]
    totals = [m.summed_totals(reduce, "cpu") for m in ranks]
    assert sent[0] == sent[1] and sent[2] == sent[3] == sent[0] + 4  # + scored/kept of a and b
    assert windows[0]["non_finite_rows"] == 2 and "non_finite_rows" not in windows[1]  # summed 0 there: left out
    assert totals[0]["group:kept:a"] == 2


def test_a_resumed_run_drops_the_groups_of_another_group_field():
    from qtuning.training.run_metrics import RunMetrics

    metrics = RunMetrics()
    metrics.load_totals({"samples": 8, "group:scored:old": 4, "group:kept:old": 1, "group:scored:a": 2})
    metrics.start_groups(["a", "b"])
    assert sorted(k for k in metrics.totals if k.startswith("group:")) == ["group:scored:a"]
    metrics.start_groups([])  # resumed without group_field: no groups in its summary
    assert not any(k.startswith("group:") for k in metrics.totals) and metrics.totals["samples"] == 8


def test_row_groups_follow_the_row_ids_and_class_label_names():
    from datasets import ClassLabel, Dataset

    data = Dataset.from_list(
        [{"qtuning_id": 2, "src": "c"}, {"qtuning_id": 0, "src": "a"}, {"qtuning_id": 1, "src": "b"}]
    )
    assert row_groups(data, "src") == ["a", "b", "c"]  # by id, not by position
    labelled = Dataset.from_list([{"task": 1}, {"task": 0}]).cast_column("task", ClassLabel(names=["math", "chat"]))
    assert row_groups(labelled, "task") == ["chat", "math"]


def test_a_resumed_run_counts_its_groups_on(tmp_path):
    """2 steps with a checkpoint, then resumed to 4: the summary's shares are those of the whole plan log."""
    from qtuning.data.plan_log import read_plan_log

    model = make_tiny_model_dir(tmp_path / "model")
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(24)))
    out = tmp_path / "run"
    common = (
        "train", "--model", str(model), "--data", str(tmp_path / "data.jsonl"), "--output_dir", str(out),
        "--group_field", "family", "--lora_r", "0", "--eval_fraction", "0", "--per_device_train_batch_size", "4",
        "--max_length", "128", "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
        "--probe_precision", "same", "--lr_scheduler_type", "constant", "--sample_ratio", "0.5",
    )  # fmt: skip
    first = run_cli(*common, "--max_steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_cli(*common, "--max_steps", "4", "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "qtuning_summary.json").read_text())
    table = kept_by_group(read_plan_log(out / "qtuning_plans.jsonl"), read_groups(out)[1])
    assert summary["samples_scored"] == sum(g["samples_scored"] for g in table) == 16
    assert summary["kept_share_by_group"] == pytest.approx({g["group"]: g["kept_share"] for g in table}, abs=5e-4)
