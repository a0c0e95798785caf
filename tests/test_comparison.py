"""`qtuning compare`: paired differences of two recipes' evaluations, over seeds x items, with the
evidence suite's bootstrap; clear errors that name the file; and `qtuning eval -o` writing what it reads."""

import json

import pytest

from qtuning.cli import main
from qtuning.errors import UsageError
from qtuning.evaluation.bootstrap import paired_difference
from qtuning.evaluation.compare import compare_runs, expand_paths, load_item_scores
from tests.helpers import make_tiny_model_dir

IDS = ["q1", "q2", "q3", "q4"]


def write_eval(path, scores, task="arith", ids=IDS, metric="exact_match"):
    """A file as `qtuning eval --engine native -o` writes it: the table and each item's scores."""
    samples = [{"id": i, "output": "...", metric: s} for i, s in zip(ids, scores)]
    table = {metric: sum(scores) / len(scores), f"{metric}_stderr": 0.1, "n": len(scores)}
    path.write_text(json.dumps({"tasks": {task: table}, "samples": {task: samples}}))
    return str(path)


A = [[1, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 0]]  # seeds x items
B = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0]]


def test_compare_pairs_by_position_and_matches_the_bootstrap(tmp_path):
    a = [write_eval(tmp_path / f"a_s{s}.json", row) for s, row in enumerate(A)]
    b = [write_eval(tmp_path / f"b_s{s}.json", row) for s, row in enumerate(B)]
    (row,) = compare_runs(a, b, resamples=2000)
    expected = paired_difference(A, B, resamples=2000)
    assert (row.task, row.metric) == ("arith", "exact_match")
    assert row.a_mean == pytest.approx(75.0) and row.b_mean == pytest.approx(100 * 4 / 12)  # 9 / 12, 4 / 12
    assert row.difference.mean == pytest.approx(100 * 5 / 12)
    assert row.difference.low == pytest.approx(100 * expected.low)
    assert row.difference.high == pytest.approx(100 * expected.high)
    assert (row.difference.seeds, row.difference.items) == (3, 4)
    assert row.verdict == ("A better" if expected.low > 0 else "no difference resolved")
    # swapping the arms mirrors the estimate
    (mirror,) = compare_runs(b, a, resamples=2000)
    assert mirror.difference.mean == pytest.approx(-row.difference.mean)


def test_one_b_file_pairs_with_every_a_run(tmp_path):
    a = [write_eval(tmp_path / f"a_s{s}.json", row) for s, row in enumerate(A)]
    base = write_eval(tmp_path / "untrained.json", [0, 0, 0, 0])
    (row,) = compare_runs(a, [base], resamples=500)
    assert row.difference.mean == pytest.approx(75.0) and row.difference.seeds == 3
    assert row.verdict == "A better"  # every resample keeps A's items at or above B's zeros, and 9 of 12 hit


def test_globs_expand_in_natural_order_and_the_cli_prints_the_pairs(tmp_path, capsys):
    for s in (2, 10):
        write_eval(tmp_path / f"qt_s{s}.json", A[0])
        write_eval(tmp_path / f"rnd_s{s}.json", B[0])
    assert expand_paths(str(tmp_path / "qt_s*.json"), "--a") == [
        str(tmp_path / "qt_s2.json"),
        str(tmp_path / "qt_s10.json"),
    ]
    out_json = tmp_path / "cmp" / "out.json"
    code = main(
        [
            "compare",
            "--a",
            str(tmp_path / "qt_s*.json"),
            "--b",
            str(tmp_path / "rnd_s*.json"),
            "--name-a",
            "qtuning",
            "--name-b",
            "random",
            "--resamples",
            "500",
            "-o",
            str(out_json),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert f"{tmp_path / 'qt_s2.json'}  <->  {tmp_path / 'rnd_s2.json'}" in printed
    assert "qtuning - random" in printed and "+50.00" in printed  # 3 of 4 against 1 of 4, both seeds
    saved = json.loads(out_json.read_text())
    assert saved["a"]["name"] == "qtuning" and len(saved["b"]["files"]) == 2
    (entry,) = saved["comparisons"]
    assert entry["difference"] == 50.0 and entry["seeds"] == 2 and entry["items"] == 4
    assert entry["verdict"] in ("qtuning better", "no difference resolved")


def test_errors_name_the_file_and_what_is_wrong(tmp_path, capsys):
    good = write_eval(tmp_path / "good.json", A[0])
    with pytest.raises(UsageError, match="missing.json: no such evaluation file"):
        load_item_scores(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UsageError, match="broken.json: not JSON"):
        load_item_scores(tmp_path / "broken.json")
    (tmp_path / "lm_eval.json").write_text(json.dumps({"tasks": {"arith": {"exact_match": 0.5, "n": 4}}}))
    with pytest.raises(UsageError, match="lm_eval.json: no per-item scores .*--engine native"):
        load_item_scores(tmp_path / "lm_eval.json")
    bad_value = tmp_path / "bad_value.json"
    write_eval(bad_value, [1, 0, 1, 1])
    data = json.loads(bad_value.read_text())
    data["samples"]["arith"][2]["exact_match"] = None
    bad_value.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="bad_value.json: task arith, item q3: metric 'exact_match' is None"):
        load_item_scores(bad_value)
    other = write_eval(tmp_path / "other_items.json", A[1], ids=["q1", "q2", "q9", "q4"])
    with pytest.raises(UsageError, match="other_items.json: task arith scored other items .* item 2: q9 vs q3"):
        compare_runs([good], [other])
    with pytest.raises(UsageError, match="--a has 2 files and --b 3"):
        compare_runs([good, good], [good, good, good])
    squad = write_eval(tmp_path / "squad.json", A[0], task="squad")
    with pytest.raises(UsageError, match="share no task"):
        compare_runs([good], [squad])
    with pytest.raises(UsageError, match="none of the metrics f1; it has exact_match"):
        compare_runs([good], [good], metrics=["f1"])
    with pytest.raises(UsageError, match="matches no file"):
        expand_paths(str(tmp_path / "nothing_*.json"), "--a")
    # through the command: one line, no traceback, argparse's exit status
    with pytest.raises(SystemExit) as stop:
        main(["compare", "--a", good, "--b", str(tmp_path / "missing.json")])
    assert stop.value.code == 2 and "missing.json: no such evaluation file" in capsys.readouterr().err


def test_eval_output_carries_the_per_item_scores_compare_reads(tmp_path):
    """`qtuning eval --engine native -o` on a tiny model and two records: the file compares with itself."""
    model_dir = make_tiny_model_dir(tmp_path / "model")
    records = tmp_path / "held.jsonl"
    rows = [
        {"id": "r1", "prompt": "Who wrote it?", "response": "x", "answers": ["nobody"]},
        {"id": "r2", "prompt": "Where is it?", "response": "x", "answers": ["here"]},
    ]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval.json"
    args = ["eval", "--model", str(model_dir), "--tasks", f"squad={records},nll={records}", "--engine", "native"]
    assert main([*args, "--batch-size", "2", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["model"] == str(model_dir.resolve())  # compare finds it anywhere
    scores = load_item_scores(out)
    ids, metrics = scores["squad"]
    assert ids == ["r1", "r2"] and set(metrics) == {"exact_match", "f1"}
    nll_ids, nll_metrics = scores["nll"]
    assert nll_ids == ["r1", "r2"] and set(nll_metrics) == {"nll"}
    assert all(t >= 1 for t in nll_metrics["nll"][1])  # each item's response tokens, the ratio's weights
    rows_out = compare_runs([str(out)], [str(out)], resamples=200)
    assert {r.metric for r in rows_out} == {"exact_match", "f1", "nll"}
    assert all(r.difference.mean == 0 and r.verdict == "no difference resolved" for r in rows_out)


def write_nll_eval(path, sums, tokens, ids=IDS):
    """A file as `qtuning eval --tasks nll=FILE -o` writes it: per item the summed NLL and its tokens."""
    samples = [{"id": i, "nll": v, "nll_tokens": t} for i, v, t in zip(ids, sums, tokens)]
    table = {"nll": sum(sums) / sum(tokens), "nll_tokens": sum(tokens), "n": len(ids)}
    path.write_text(json.dumps({"tasks": {"nll": table}, "samples": {"nll": samples}}))
    return str(path)


TOKENS = [[2, 4, 6, 8]] * 3  # per item, the same reference responses for every run
A_NLL = [[1.0, 2.0, 3.0, 4.0], [1.2, 2.0, 2.8, 4.4], [0.8, 2.2, 3.0, 3.6]]  # summed NLL, seeds x items
B_NLL = [[1.4, 2.6, 3.2, 4.8], [1.6, 2.4, 3.6, 4.6], [1.2, 2.8, 3.4, 4.4]]


def test_nll_is_a_token_weighted_ratio_where_lower_is_better(tmp_path, capsys):
    a = [write_nll_eval(tmp_path / f"qt_s{s}.json", row, TOKENS[s]) for s, row in enumerate(A_NLL)]
    b = [write_nll_eval(tmp_path / f"rnd_s{s}.json", row, TOKENS[s]) for s, row in enumerate(B_NLL)]
    (row,) = compare_runs(a, b, resamples=2000)
    expected = paired_difference(A_NLL, B_NLL, TOKENS, TOKENS, resamples=2000)
    # hand: A sums to 30.0 nats over 3 x 20 tokens (0.5 nats/token), B to 36.0 (0.6)
    assert row.a_mean == pytest.approx(0.5) and row.b_mean == pytest.approx(0.6)
    assert row.difference.mean == pytest.approx(-0.1) and row.scale == 1 and row.lower_is_better
    assert (row.difference.low, row.difference.high) == pytest.approx((expected.low, expected.high))
    assert expected.high < 0 and row.verdict == "A better"  # lower NLL: A's
    main(["compare", "--a", ",".join(a), "--b", ",".join(b), "--name-a", "qt", "--name-b", "rnd", "--resamples", "500"])
    printed = capsys.readouterr().out
    assert "nll (lower is better)" in printed and "0.5000" in printed and "-0.1000" in printed
    assert "qt better" in printed and "indicative only" not in printed  # 3 paired seeds


def test_sesoi_gives_four_outcomes_and_bad_values_are_named(tmp_path, capsys):
    same = [write_nll_eval(tmp_path / f"a_s{s}.json", row, TOKENS[s]) for s, row in enumerate(A_NLL)]
    near = [  # B = A + 0.001 nats on each item: a tie well inside a SESOI of 0.01 nats/token
        write_nll_eval(tmp_path / f"b_s{s}.json", [v + 0.001 * t for v, t in zip(row, TOKENS[s])], TOKENS[s])
        for s, row in enumerate(A_NLL)
    ]
    (tie,) = compare_runs(same, near, resamples=1000, sesoi={"nll": 0.01})
    assert tie.difference.mean == pytest.approx(-0.001) and tie.verdict == "A better"  # every resample: A lower
    (loose,) = compare_runs(same, same[::-1], resamples=1000, sesoi={"nll": 0.01})  # other seeds' runs as B
    assert loose.verdict in ("equivalent", "undecided") and loose.sesoi == 0.01
    bound = max(abs(loose.difference.low), abs(loose.difference.high))
    assert compare_runs(same, same[::-1], resamples=1000, sesoi={"nll": bound * 1.01})[0].verdict == "equivalent"
    assert compare_runs(same, same[::-1], resamples=1000, sesoi={"nll": bound * 0.99})[0].verdict == "undecided"
    em_a = [write_eval(tmp_path / f"em_a_s{s}.json", row) for s, row in enumerate(A[:2])]
    em_b = [write_eval(tmp_path / f"em_b_s{s}.json", row) for s, row in enumerate(A[:2])]
    out_json = tmp_path / "cmp.json"
    args = ["compare", "--a", ",".join(em_a), "--b", ",".join(em_b), "--resamples", "300"]
    assert main([*args, "--sesoi", "exact_match=2", "-o", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "equivalent (SESOI 2)" in printed and "'equivalent' needs it inside +-SESOI" in printed
    assert "2 paired run(s): indicative only" in printed
    (entry,) = json.loads(out_json.read_text())["comparisons"]
    assert entry["verdict"] == "equivalent" and entry["sesoi"] == 2 and entry["units"] == "score x100"
    for bad, message in [
        ("exact_match", "'exact_match' is not METRIC=VALUE"),
        ("exact_match=-1", "'exact_match=-1' is not METRIC=VALUE with a positive number"),
        ("exact_match=two", "'exact_match=two' is not METRIC"),
        ("f1=2", "--sesoi names f1, which no comparison has; compared: exact_match"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main([*args, "--sesoi", bad])
        assert stop.value.code == 2 and message in capsys.readouterr().err, bad


def test_nll_items_without_a_token_count_are_named(tmp_path):
    path = tmp_path / "nll.json"
    write_nll_eval(path, A_NLL[0], TOKENS[0])
    data = json.loads(path.read_text())
    data["samples"]["nll"][1]["nll_tokens"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="nll.json: task nll, item q2: nll_tokens is 0 \\(a positive count\\)"):
        load_item_scores(path)


def test_compare_reproduces_the_evidence_suites_primary_comparison(tmp_path):
    """The committed arith cells of qtuning_25x50 and random_25x50 (5 seeds), written as eval files:
    `qtuning compare` must give evidence.json's difference and interval exactly (same bootstrap)."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    files = {}
    for arm in ("qtuning_25x50", "random_25x50"):
        for seed in range(5):
            cell = json.loads((results / "evidence_cells" / f"arith__{arm}__s{seed}.json").read_text())
            path = tmp_path / f"{arm}_s{seed}.json"
            write_eval(path, cell["per_item"], ids=cell["item_ids"])
            files.setdefault(arm, []).append(str(path))
    (row,) = compare_runs(files["qtuning_25x50"], files["random_25x50"])
    expected = json.loads((results / "evidence.json").read_text())["tasks"]["arith"]["paired"]
    pair = expected["qtuning_25x50-random_25x50"]
    assert round(row.difference.mean, 3) == pair["mean"]
    assert [round(row.difference.low, 3), round(row.difference.high, 3)] == pair["ci95"]


def _with_settings(path, config=None, versions=None):
    """Add `qtuning eval`'s record of how the file was scored to a written file."""
    result = json.loads(open(path).read())
    result.update(config={"engine": "native", "dtype": "float32", "device": "cpu", "batch_size": 8, **(config or {})})
    result.update(versions={"torch": "2.13.0", **(versions or {})})
    open(path, "w").write(json.dumps(result))
    return path


def test_files_scored_differently_are_refused_and_other_differences_noted(tmp_path, capsys):
    a = [_with_settings(write_eval(tmp_path / f"a_s{s}.json", row)) for s, row in enumerate(A)]
    b = [write_eval(tmp_path / f"b_s{s}.json", row) for s, row in enumerate(B)]
    _with_settings(b[0], {"max_new_tokens": {"arith": 256}})
    _with_settings(b[1], {"dtype": "bfloat16", "max_new_tokens": {"arith": 256}}, {"torch": "2.14.1"})
    _with_settings(b[2], {"max_new_tokens": {"arith": 256}})
    # A's files hold no max_new_tokens: only what every file that has the field says is compared
    with pytest.raises(UsageError) as refused:
        compare_runs(a, b, resamples=200)
    message = str(refused.value)
    assert f"dtype: float32 in {a[0]} (+4 more); bfloat16 in {b[1]}" in message
    assert "--allow_mixed_settings true" in message and "max_new_tokens" not in message
    (row,) = compare_runs(a, b, resamples=200, allow_mixed_settings=True)
    assert row.difference.seeds == 3
    # through the command: refused in one line; allowed, it warns and records every difference
    with pytest.raises(SystemExit) as stop:
        main(["compare", "--a", ",".join(a), "--b", ",".join(b), "--resamples", "200"])
    assert stop.value.code == 2 and "scored under different settings" in capsys.readouterr().err
    out = tmp_path / "cmp.json"
    args = ["compare", "--a", ",".join(a), "--b", ",".join(b), "--resamples", "200", "-o", str(out)]
    main([*args, "--allow_mixed_settings", "true"])
    printed = capsys.readouterr().out
    assert "WARNING: scored differently: dtype" in printed
    assert f"note: the files differ in: versions.torch: 2.13.0 in {a[0]} (+4 more); 2.14.1 in {b[1]}" in printed
    recorded = {d["setting"]: d for d in json.loads(out.read_text())["settings_differences"]}
    assert set(recorded) == {"dtype", "versions.torch"} and recorded["dtype"]["changes_scores"]
    assert not recorded["versions.torch"]["changes_scores"]
    # another generation length on one task is a scoring difference too
    _with_settings(a[0], {"max_new_tokens": {"arith": 64}})
    for path in (*a[1:], *b):
        _with_settings(path, {"max_new_tokens": {"arith": 256}})
    with pytest.raises(
        UsageError, match=r"max_new_tokens\[arith\]: 64 in .*a_s0.json; 256 in .*a_s1.json \(\+4 more\)"
    ):
        compare_runs(a, b, resamples=200)


def test_models_trained_with_other_software_are_noted(tmp_path, capsys):
    """Where the evaluated model is a `qtuning train` folder, its summary's environment is compared too
    (noted, not refused: the recipes may differ in it on purpose)."""
    files = []
    for name, row, torch_version in [("a", A[0], "2.13.0"), ("b", B[0], "2.14.1")]:
        run = tmp_path / f"run_{name}"
        run.mkdir()
        env = {"device": "cpu", "accelerator": None, "world_size": 1, "packages": {"torch": torch_version}}
        (run / "qtuning_summary.json").write_text(json.dumps({"environment": env}))
        path = _with_settings(write_eval(tmp_path / f"{name}.json", row), {"model": str(run)})
        files.append(path)
    (row,) = compare_runs([files[0]], [files[1]], resamples=200)  # not refused
    main(["compare", "--a", files[0], "--b", files[1], "--resamples", "200"])
    printed = capsys.readouterr().out
    assert f"note: the files differ in: trained with torch: 2.13.0 in {files[0]}; 2.14.1 in {files[1]}" in printed
    assert "trained with device" not in printed and "WARNING" not in printed


def test_the_engine_matters_except_for_nll(tmp_path):
    """`nll` is scored natively under either engine, so its files may differ in engine; other tasks may not."""
    a = [_with_settings(write_nll_eval(tmp_path / f"a_s{s}.json", row, TOKENS[s])) for s, row in enumerate(A_NLL)]
    b = [write_nll_eval(tmp_path / f"b_s{s}.json", row, TOKENS[s]) for s, row in enumerate(B_NLL)]
    for path in b:
        _with_settings(path, {"engine": "lm_eval"})
    (row,) = compare_runs(a, b, resamples=200)
    assert row.metric == "nll"
    a = [_with_settings(write_eval(tmp_path / f"ea_s{s}.json", row)) for s, row in enumerate(A)]
    b = [_with_settings(write_eval(tmp_path / f"eb_s{s}.json", row), {"engine": "lm_eval"}) for s, row in enumerate(B)]
    with pytest.raises(UsageError, match=r"engine: native in .*ea_s0.json \(\+2 more\); lm_eval in"):
        compare_runs(a, b, resamples=200)
