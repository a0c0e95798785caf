"""`qtuning analyze`: pools, stability, warnings (hand-computed), and a tiny-model run that is
interrupted twice and resumed without rescoring what is on disk."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from qtuning import QTuningConfig
from qtuning.cli import main
from qtuning.data import load_records, tokenize_record
from qtuning.engine.selection import select_samples
from qtuning.errors import AnalysisError
from qtuning.insight.analyze import run_analyze
from qtuning.insight.analyze_config import AnalyzeConfig
from qtuning.insight.stability import (
    PoolRun,
    failure_signatures,
    jaccard,
    parse_pool_sizes,
    pool_stability,
    quadrant_examples,
    select_in_pools,
)
from tests.helpers import make_tiny_model_dir, write_jsonl_rows

# ---------------------------------------------------------------------------------- pure parts


def test_pool_sizes_are_parsed_and_checked():
    assert parse_pool_sizes("8, 32,all", 100) == [("8", 8), ("32", 32), ("all", 100)]
    assert parse_pool_sizes("4,4,0", 10) == [("4", 4), ("all", 10)]
    with pytest.raises(AnalysisError, match="'x' is not allowed"):
        parse_pool_sizes("8,x", 10)


def test_jaccard_by_hand():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5
    assert jaccard(set(), set()) == 0.0


def _plane(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(n, generator=g, dtype=torch.float64) * 20 + 1,
        torch.rand(n, generator=g, dtype=torch.float64) * 3,
        torch.ones(n, dtype=torch.bool),
    )


def test_pools_select_each_chunk_of_the_shuffle_on_its_own():
    ppl, ent, valid = _plane(10)
    cfg = QTuningConfig(sample_ratio=0.5)
    run = select_in_pools(ppl, ent, valid, 4, cfg, seed=3)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    assert [p["size"] for p in run.pools] == [4, 4, 2]  # the remainder is a pool of its own
    for start in (0, 4, 8):
        index = order[start : start + 4]
        expected = select_samples(ppl[index], ent[index], valid[index], cfg)
        assert run.kept_role[index].tolist() == expected.kept_role.tolist()
        assert run.quadrant[index].tolist() == expected.quadrant.tolist()
    dropped_last = select_in_pools(ppl, ent, valid, 4, cfg, seed=3, include_remainder=False)
    assert len(dropped_last.pools) == 2 and (dropped_last.kept_role[order[8:]] == 0).all()
    whole = select_in_pools(ppl, ent, valid, 10, cfg)
    assert whole.label == "all" and whole.kept_role.tolist() == select_samples(ppl, ent, valid, cfg).kept_role.tolist()


def test_stability_rows_against_a_direct_computation():
    ppl, ent, valid = _plane(40)
    cfg = QTuningConfig(sample_ratio=0.25)
    result = pool_stability(ppl, ent, valid, [("8", 8), ("all", 40)], cfg, shuffles=3, seed=5)
    reference = {i for i, r in enumerate(select_samples(ppl, ent, valid, cfg).kept_role.tolist()) if r}
    row8, row_all = result.rows
    assert row_all["jaccard_vs_whole_mean"] == 1.0 and row_all["jaccard_vs_whole_sd"] == 0.0
    assert row_all["shuffles"] == 1 and row_all["jaccard_across_shuffles_mean"] is None
    kept = []
    mids = []
    for s in range(3):
        order = torch.randperm(40, generator=torch.Generator().manual_seed(5 + s))
        k = set()
        for start in range(0, 40, 8):
            index = order[start : start + 8]
            sel = select_samples(ppl[index], ent[index], valid[index], cfg)
            k |= {int(i) for i, r in zip(index.tolist(), sel.kept_role.tolist()) if r}
            mids.append((sel.ppl_lo + sel.ppl_hi) / 2)
        kept.append(k)
    vs_whole = [jaccard(k, reference) for k in kept]
    assert row8["jaccard_vs_whole_mean"] == pytest.approx(sum(vs_whole) / 3)
    assert row8["jaccard_across_shuffles_mean"] == pytest.approx(
        (jaccard(kept[0], kept[1]) + jaccard(kept[0], kept[2]) + jaccard(kept[1], kept[2])) / 3
    )
    mean = sum(mids) / len(mids)
    assert row8["ppl_line_sd"] == pytest.approx(math.sqrt(sum((m - mean) ** 2 for m in mids) / len(mids)))
    assert row8["pools"] == 15 and row8["kept_mean"] == pytest.approx(sum(len(k) for k in kept) / 3)


def _run(quadrants, kept, supplemented, converged):
    n = len(quadrants)
    return PoolRun(
        label="8",
        pool_size=8,
        seed=0,
        kept_role=torch.tensor([2 if k else 0 for k in kept]),
        quadrant=torch.tensor(quadrants),
        supplemented=torch.tensor(supplemented),
        pools=[
            {
                "size": n // len(converged),
                "kept": sum(kept) // len(converged),
                "supplemented": sum(supplemented) // len(converged),
                "converged": c,
                "bisection_kept_fraction": 0.1,
            }
            for c in converged
        ],
    )


def test_failure_signatures_fire_on_their_case_only():
    valid = torch.ones(40, dtype=torch.bool)
    healthy = _run([1] * 10 + [2] * 10 + [3] * 10 + [4] * 10, [True] * 10 + [False] * 30, [False] * 40, [True] * 4)
    assert failure_signatures(healthy, valid, 0.25) == []
    # Q3 and Q4 hold 1 of 40 samples each (2.5% < 5%): collapse, naming the quadrants
    collapsed = _run([1] * 19 + [2] * 19 + [3] * 1 + [4] * 1, [True] * 10 + [False] * 30, [False] * 40, [True] * 4)
    (warning,) = failure_signatures(collapsed, valid, 0.25)
    assert "quadrant collapse" in warning and "Q3 2.5%, Q4 2.5%" in warning and "Q1" not in warning
    # one quadrant under 5% is not a collapse: the rule is the trainer's (qtuning.engine.signatures), two or more
    one_small = _run([1] * 13 + [2] * 13 + [3] * 1 + [4] * 13, [True] * 10 + [False] * 30, [False] * 40, [True] * 4)
    assert failure_signatures(one_small, valid, 0.25) == []
    # 3 of 4 pools missed the tolerance; 8 of 12 kept samples came from the supplement
    bad = _run(
        [1] * 10 + [2] * 10 + [3] * 10 + [4] * 10,
        [True] * 12 + [False] * 28,
        [True] * 8 + [False] * 32,
        [False, False, False, True],
    )
    warnings = failure_signatures(bad, valid, 0.25)
    assert len(warnings) == 2
    assert "missed its tolerance" in warnings[0] and "3/4 pools" in warnings[0]
    assert "supplement chose 67%" in warnings[1]


def test_quadrant_examples_are_the_deepest_in_their_corner():
    scores = pd.DataFrame(
        {"ppl": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "entropy": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1], "has_response": [True] * 6}
    )
    run = PoolRun(
        label="all",
        pool_size=6,
        seed=0,
        kept_role=torch.zeros(6, dtype=torch.long),
        quadrant=torch.tensor([4, 4, 4, 2, 2, 2]),
        supplemented=torch.zeros(6, dtype=torch.bool),
        pools=[],
    )
    examples = quadrant_examples(scores, run, 2)
    assert examples[2] == [5, 4]  # highest PPL and lowest entropy first
    assert examples[4] == [0, 1]
    assert examples[1] == [] and examples[3] == []


# ---------------------------------------------------------------------------------- a tiny-model run


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _count_rows(model):
    """Rows through the backbone, counted by a forward hook (returns the counter and the hook handle)."""
    seen = {"rows": 0, "calls": 0, "raise_after": None}

    def hook(_module, args, kwargs, _out):
        seen["rows"] += kwargs["input_ids"].shape[0]
        seen["calls"] += 1
        if seen["raise_after"] is not None and seen["calls"] > seen["raise_after"]:
            raise KeyboardInterrupt("interrupted by the test")

    return seen, model.model.register_forward_hook(hook, with_kwargs=True)


def test_interrupted_analyze_resumes_without_rescoring(tiny_model, tmp_path, monkeypatch):
    folder, model, tokenizer = tiny_model
    data = write_jsonl_rows(tmp_path / "data.jsonl", 12, empty_last=True)
    out = tmp_path / "analysis"
    qcfg = QTuningConfig(sample_ratio=0.25)
    settings = dict(
        model=str(folder),
        data=str(data),
        output=str(out),
        shard_rows=4,
        batch_size=2,
        max_length=64,
        pool_sizes="4,all",
        shuffles=2,
        examples=2,
    )
    seen, handle = _count_rows(model)
    try:
        # 1. stopped after 3 batches: shard 0 (2 batches) is written, shard 1 is not
        assert run_analyze(
            AnalyzeConfig(**settings, max_batches=3), qcfg, model=model, tokenizer=tokenizer, progress=False
        ) == {"complete": False}
        assert seen["rows"] == 6 and sorted(p.name for p in (out / "shards").iterdir()) == ["part-00000.parquet"]
        # 2. killed (an exception) in the middle of shard 1: nothing more on disk, nothing half-written
        seen.update(rows=0, calls=0, raise_after=1)
        with pytest.raises(KeyboardInterrupt):
            run_analyze(AnalyzeConfig(**settings), qcfg, model=model, tokenizer=tokenizer, progress=False)
        assert seen["rows"] == 4  # the first batch of shard 1, then the raising one
        assert sorted(p.name for p in (out / "shards").iterdir()) == ["part-00000.parquet"]
        # 3. resumed: only shards 1 and 2 (8 rows) are scored
        seen.update(rows=0, calls=0, raise_after=None)
        result = run_analyze(AnalyzeConfig(**settings), qcfg, model=model, tokenizer=tokenizer, progress=False)
        assert result["complete"] and seen["rows"] == 8
        # 4. an uninterrupted run elsewhere gives the same scores
        seen.update(rows=0)
        fresh = run_analyze(
            AnalyzeConfig(**{**settings, "output": str(tmp_path / "fresh")}),
            qcfg,
            model=model,
            tokenizer=tokenizer,
            progress=False,
        )
        assert seen["rows"] == 12 and fresh["complete"]
    finally:
        handle.remove()

    # 5. everything on disk: the model is not even loaded
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every shard is on disk")

    monkeypatch.setattr("qtuning.data.models.load_model_and_tokenizer", no_model)
    assert run_analyze(AnalyzeConfig(**settings), qcfg, progress=False)["complete"]
    resumed_scores = pd.read_parquet(out / "scores.parquet")
    fresh_scores = pd.read_parquet(tmp_path / "fresh" / "scores.parquet")
    pd.testing.assert_frame_equal(resumed_scores, fresh_scores)

    # The outputs
    assert len(resumed_scores) == 12 and resumed_scores["row"].tolist() == list(range(12))  # the empty row 12 skipped
    for column in ("id", "ppl", "entropy", "trainable_tokens", "quadrant_p4", "role_p4", "quadrant_all", "role_all"):
        assert column in resumed_scores.columns
    csv = pd.read_csv(out / "scores.csv")
    assert csv["ppl"].tolist() == pytest.approx(resumed_scores["ppl"].tolist())
    assert (out / "eu_plane.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "summary.md").read_text()
    for text in ("## Quadrant population", "## Threshold stability", "## Warnings", "![EU plane", "Q2 valuable"):
        assert text in markdown
    html = (out / "summary.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    stability = json.loads((out / "stability.json").read_text())
    assert [r["pool"] for r in stability["stability"]] == ["4", "all"]

    # The whole-dataset roles are select_samples' on the stored scores
    ppl = torch.tensor(resumed_scores["ppl"].to_numpy())
    ent = torch.tensor(resumed_scores["entropy"].to_numpy())
    expected = select_samples(ppl, ent, torch.ones(12, dtype=torch.bool), qcfg)
    names = {0: "dropped", 2: "Q2", 4: "Q4"}
    assert resumed_scores["role_all"].tolist() == [names[r] for r in expected.kept_role.tolist()]
    assert resumed_scores["quadrant_all"].tolist() == expected.quadrant.tolist()
    assert (resumed_scores["role_all"] != "dropped").sum() == 3  # K = round(0.25 * 12)

    # The scores of one sample against the model's own full logits
    records, _ = load_records(str(data))
    feature = tokenize_record(tokenizer, records[5], 64)
    ids = torch.tensor([feature["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()  # (T-1, V): position t predicts token t + 1
    targets = torch.tensor(feature["labels"][1:])
    where = targets != -100
    log_probs = torch.log_softmax(logits[where], dim=-1)
    nll = -log_probs.gather(1, targets[where].unsqueeze(1)).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=1)
    row = resumed_scores.iloc[5]
    assert row["trainable_tokens"] == int(where.sum())
    assert row["ppl"] == pytest.approx(math.exp(float(nll.mean())), rel=1e-4)
    assert row["entropy"] == pytest.approx(float(entropy.mean()), rel=1e-4)
    tokens = pd.read_parquet(out / "token_scores.parquet").set_index("index").loc[5]
    assert list(tokens["token_ids"]) == targets[where].tolist()
    assert list(tokens["token_nll"]) == pytest.approx(nll.tolist(), rel=1e-4, abs=1e-5)


def test_resuming_with_other_settings_is_refused(tiny_model, tmp_path):
    folder, model, tokenizer = tiny_model
    data = write_jsonl_rows(tmp_path / "data.jsonl", 4)
    settings = dict(model=str(folder), data=str(data), output=str(tmp_path / "a"), pool_sizes="all", shuffles=1)
    run_analyze(AnalyzeConfig(**settings), QTuningConfig(), model=model, tokenizer=tokenizer, progress=False)
    with pytest.raises(AnalysisError, match=r"holds scores of another analysis \(max_length: 1024 on disk, 32 now"):
        run_analyze(
            AnalyzeConfig(**settings, max_length=32), QTuningConfig(), model=model, tokenizer=tokenizer, progress=False
        )


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("missing.jsonl", None, r"missing.jsonl: no such file \(expected a .json, .jsonl or .parquet file\)"),
        ("empty.jsonl", "", r"empty.jsonl: no rows"),
        ("notes.txt", "hello", r"notes.txt: unsupported file type '.txt': expected .json, .jsonl or .parquet"),
        ("odd.jsonl", '{"question": "q"}', r"odd.jsonl: row 0: unrecognised row format with fields \['question'\]"),
    ],
)
def test_bad_dataset_is_named_without_a_traceback(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    code = main(["analyze", "--data", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("qtuning: error: ") and str(tmp_path) in err
    assert __import__("re").search(expected, err), err


def test_bad_dataset_exits_non_zero_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qtuning.cli",
            "analyze",
            "--data",
            str(tmp_path / "none.json"),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "none.json: no such file" in proc.stderr and "Traceback" not in proc.stderr
