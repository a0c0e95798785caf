"""`qtuning select`: one-shot Q-Tuning from stored scores (hand-computed, and against plan_batch), the
subset format, `qtuning train` on it (pruned positions carry no loss), and bad input."""

import json
import math

import pandas as pd
import pytest
import torch

from qtuning import QTuningConfig, plan_batch
from qtuning.cli import main
from qtuning.data import MASK_FIELD, MASK_MODEL_FIELD, DataError, load_records, tokenize_record
from qtuning.errors import AnalysisError
from qtuning.insight.static_select import SelectConfig, read_analysis, run_select, static_select
from qtuning.insight.store import data_fingerprint
from tests.helpers import make_tiny_model_dir, write_jsonl_rows


def write_analysis(folder, data_path, samples, model="tiny-model"):
    """A hand-made analysis folder: samples are dicts of token_nll, entropy, positions, total."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, token_rows = [], []
    for i, s in enumerate(samples):
        nll = s["token_nll"]
        rows.append(
            {
                "index": i,
                "row": i,
                "id": f"row-{i}",
                "ppl": math.exp(sum(nll) / len(nll)) if nll else 0.0,
                "entropy": s["entropy"] if nll else 0.0,
                "trainable_tokens": len(nll),
                "has_response": bool(nll),
                "response_tokens_total": s.get("total", len(nll)),
            }
        )
        token_rows.append(
            {
                "index": i,
                "id": f"row-{i}",
                "positions": s.get("positions", len(nll) + 3),
                "response_tokens_total": s.get("total", len(nll)),
                "token_ids": list(range(len(nll))),
                "token_nll": nll,
            }
        )
    pd.DataFrame(rows).to_parquet(folder / "scores.parquet", index=False)
    pd.DataFrame(token_rows).to_parquet(folder / "token_scores.parquet", index=False)
    (folder / "meta.json").write_text(
        json.dumps(
            {
                "model": model,
                "data": str(data_path),
                "num_records": len(samples),
                "entropy_positions": "response",
                "data_sha": data_fingerprint(load_records(str(data_path))[0][: len(samples)]),
            }
        )
    )
    return folder / "scores.parquet"


def test_two_samples_by_hand(tmp_path, capsys):
    # A: PPL exp(ln4 / 4) = 1.414, Ent 0.5 (confidently wrong: Q2); B: PPL 1, Ent 1.0 (right but unsure: Q4).
    # sample_ratio 1: the first bisection iterate keeps both corners (fraction 1.0, within tolerance).
    # A's token perplexities [1, 4, 1, 1] smooth (lambda 0.5) to s = [2.5, 3, 3, 1]; token_ratio 0.5 keeps
    # floor(0.5 * 4) = 2, pruning the two highest (positions 1 and 2). A has a 5th response token past
    # max_length, never scored: kept.
    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "a", "output": "A"}\n{"instruction": "b", "output": "B", "extra": 7}\n')
    scores = write_analysis(
        tmp_path / "analysis",
        data,
        [
            {"token_nll": [0.0, math.log(4), 0.0, 0.0], "entropy": 0.5, "total": 5},
            {"token_nll": [0.0, 0.0], "entropy": 1.0},
        ],
    )
    table, _ = read_analysis(scores)
    cfg = QTuningConfig(sample_ratio=1.0, token_ratio=0.5, smoothing=0.5)
    assert static_select(table, cfg) == {0: (2, [1, 0, 0, 1]), 1: (4, [1, 1])}
    out = tmp_path / "subset.jsonl"
    counts = run_select(SelectConfig(scores=str(scores), output=str(out)), cfg)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {
            "instruction": "a",
            "output": "A",
            MASK_FIELD: [1, 0, 0, 1, 1],
            MASK_MODEL_FIELD: "tiny-model",
            "qtuning_role": "Q2",
        },
        {
            "instruction": "b",
            "output": "B",
            "extra": 7,
            MASK_FIELD: [1, 1],
            MASK_MODEL_FIELD: "tiny-model",
            "qtuning_role": "Q4",
        },
    ]
    assert counts == {"samples": 2, "kept": 2, "q2": 1, "q4": 1, "tokens": 7, "kept_tokens": 5}
    assert "--pruning_method none" in capsys.readouterr().out


@pytest.mark.parametrize("token_budget", ["per_sample", "batch"])
def test_whole_dataset_selection_equals_plan_batch(tmp_path, token_budget):
    """The stored, left-aligned token NLLs give the plan of plan_batch on the real (prompt, response) grid."""
    g = torch.Generator().manual_seed(1)
    samples = []
    for i in range(12):
        n = int(torch.randint(1, 9, (1,), generator=g))
        samples.append(
            {
                "token_nll": (torch.rand(n, generator=g, dtype=torch.float64) * 4).tolist(),
                "entropy": float(torch.rand(1, generator=g)) * 3,
                "positions": n + 2 + i % 3,
            }
        )
    data = write_jsonl_rows(tmp_path / "data.jsonl", 12)
    scores = write_analysis(tmp_path / "analysis", data, samples)
    cfg = QTuningConfig(sample_ratio=0.25, token_ratio=0.5, token_budget=token_budget)
    # the reference grid: prompt positions first, then the response, then padding
    width = max(s["positions"] for s in samples) + 2
    nll = torch.zeros(12, width, dtype=torch.float64)
    entropy = torch.zeros(12, width, dtype=torch.float64)
    loss_mask = torch.zeros(12, width, dtype=torch.bool)
    attention = torch.zeros(12, width, dtype=torch.bool)
    for b, s in enumerate(samples):
        n, p = len(s["token_nll"]), s["positions"]
        nll[b, p - n : p] = torch.tensor(s["token_nll"], dtype=torch.float64)
        entropy[b, p - n : p] = s["entropy"]
        loss_mask[b, p - n : p] = True
        attention[b, :p] = True
    plan = plan_batch(nll, entropy, loss_mask, cfg, attention_mask=attention)
    expected = {
        b: (int(plan.kept_role[b]), plan.token_keep[b][loss_mask[b]].int().tolist())
        for b in range(12)
        if plan.sample_keep[b]
    }
    table, _ = read_analysis(scores)
    assert static_select(table, cfg) == expected
    assert len(expected) == 3 and plan.num_pruned_tokens > 0


def test_data_rows_carrying_a_mask(tmp_path):
    from tests.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    record = {
        "id": "x",
        "prompt": [{"role": "user", "content": "Say hi."}],
        "completion": [{"role": "assistant", "content": "Hi there, friend."}],
    }
    plain = tokenize_record(tokenizer, record, None)["labels"]
    positions = [j for j in range(1, len(plain)) if plain[j] != -100]
    mask = [0 if k % 2 else 1 for k in range(len(positions))]
    source = tmp_path / "subset.jsonl"
    source.write_text(
        json.dumps({"instruction": "Say hi.", "output": "Hi there, friend.", MASK_FIELD: mask})
        + "\n"
        + json.dumps({"instruction": "Say hi.", "output": "Hi there, friend.", MASK_FIELD: mask[:-1]})
        + "\n"
        + json.dumps({"instruction": "Say hi.", "output": "Hi", MASK_FIELD: [1, 2]})
        + "\n"
    )
    with pytest.raises(DataError, match=rf"subset.jsonl: row 2: field '{MASK_FIELD}' must be a list of 0/1"):
        load_records(str(source))
    source.write_text("\n".join(source.read_text().splitlines()[:2]))
    records, _ = load_records(str(source))
    masked = tokenize_record(tokenizer, records[0], None)
    assert masked["input_ids"] == tokenize_record(tokenizer, record, None)["input_ids"]
    expected = list(plain)
    for j, keep in zip(positions, mask):
        expected[j] = plain[j] if keep else -100
    assert masked["labels"] == expected and expected != plain
    with pytest.raises(
        DataError,
        match=rf"subset.jsonl: row 1: field '{MASK_FIELD}' has {len(mask) - 1} entries but "
        rf"the response has {len(mask)} tokens",
    ):
        tokenize_record(tokenizer, records[1], None)


def test_analyze_select_then_train_on_the_subset(tmp_path, capsys):
    """The whole static path on a tiny model: analyze -> select -> `qtuning train --pruning_method none`."""
    from transformers import AutoTokenizer

    from qtuning.training.run import build_trainer, run_training
    from qtuning.training.sft_config import QTuningSFTConfig, RunConfig

    model = make_tiny_model_dir(tmp_path / "model")
    data = write_jsonl_rows(tmp_path / "data.jsonl", 12)
    assert (
        main(
            [
                "analyze",
                "--model",
                str(model),
                "--data",
                str(data),
                "-o",
                str(tmp_path / "analysis"),
                "--pool-sizes",
                "all",
                "--shuffles",
                "1",
            ]
        )
        == 0
    )  # the command line, model loaded by path
    subset = tmp_path / "subset.jsonl"
    assert (
        main(
            [
                "select",
                "--scores",
                str(tmp_path / "analysis" / "scores.parquet"),
                "--sample-ratio",
                "0.5",
                "--token-ratio",
                "0.5",
                "-o",
                str(subset),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in subset.read_text().splitlines()]
    assert len(rows) == 6  # K = round(0.5 * 12)
    tokenizer = AutoTokenizer.from_pretrained(model)
    masks = {}
    for row in rows:
        records, _ = load_records(str(write_jsonl_one(tmp_path / "one.jsonl", row)))
        labels = tokenize_record(tokenizer, records[0], None)["labels"]
        n = sum(1 for v in labels[1:] if v != -100)
        mask = row[MASK_FIELD]
        assert len(mask) == n and row[MASK_MODEL_FIELD] == str(model)
        assert sum(mask) == (max(1, n // 2) if row["qtuning_role"] == "Q2" else n)
        masks[row["output"]] = mask
    assert any(r["qtuning_role"] == "Q2" for r in rows)

    run = RunConfig(model=str(model), data=str(subset), lora_r=0, eval_fraction=0.0)
    cfg = QTuningSFTConfig(
        output_dir=str(tmp_path / "run"),
        pruning_method="none",
        num_train_epochs=1,
        per_device_train_batch_size=3,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
    )
    capsys.readouterr()
    build_trainer(run, QTuningSFTConfig(output_dir=str(tmp_path / "r2"), report_to="none"))
    notices = [line for line in capsys.readouterr().err.splitlines() if "carries static token masks" in line]
    assert len(notices) == 1 and notices[0].startswith("[qtuning] ")  # a one-line notice, not a warning
    assert notices[0].endswith("use --pruning_method none to train on the static selection as it is")
    trainer, _ = build_trainer(run, cfg)
    labelled = sorted(sum(1 for v in example["labels"][1:] if v != -100) for example in trainer.train_dataset)
    assert labelled == sorted(sum(m) for m in masks.values())  # the masks reached the labels
    summary = run_training(run, cfg)
    # every trained token is a kept one: the pruned positions carried no loss
    assert summary["tokens_trained"] == sum(sum(m) for m in masks.values())
    assert summary["tokens_trained"] < sum(len(m) for m in masks.values())
    assert summary["samples_trained"] == 6


def write_jsonl_one(path, row):
    path.write_text(json.dumps({k: v for k, v in row.items() if not k.startswith("qtuning_")}) + "\n")
    return path


def test_bad_scores_files_are_named(tmp_path, capsys):
    with pytest.raises(AnalysisError, match=r"nope.parquet: no such file; expected the scores.parquet written by"):
        read_analysis(tmp_path / "nope.parquet")
    bogus = tmp_path / "bogus.parquet"
    bogus.write_text("not parquet")
    with pytest.raises(AnalysisError, match=r"bogus.parquet: not a Parquet file"):
        read_analysis(bogus)
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({c: [] for c in ("index", "row", "id", "ppl", "entropy", "has_response")}).to_parquet(empty)
    with pytest.raises(AnalysisError, match=r"empty.parquet: no rows; expected the scores.parquet"):
        read_analysis(empty)
    data = write_jsonl_rows(tmp_path / "data.jsonl", 2)
    scores = write_analysis(
        tmp_path / "a", data, [{"token_nll": [0.1], "entropy": 1.0}, {"token_nll": [0.2], "entropy": 2.0}]
    )
    (tmp_path / "a" / "token_scores.parquet").unlink()
    with pytest.raises(AnalysisError, match=r"a/token_scores.parquet: no such file"):
        read_analysis(scores)
    scores = write_analysis(
        tmp_path / "b", data, [{"token_nll": [0.1], "entropy": 1.0}, {"token_nll": [0.2], "entropy": 2.0}]
    )
    other = tmp_path / "other.jsonl"
    other.write_text('{"instruction": "Say the number 0.", "output": "Zero."}\n{"instruction": "x", "output": "y"}\n')
    with pytest.raises(AnalysisError, match=r"other.jsonl' is not the data of the analysis"):
        run_select(SelectConfig(scores=str(scores), data=str(other), output=str(tmp_path / "s.jsonl")), QTuningConfig())
    assert main(["select", "--scores", str(tmp_path / "nope.parquet")]) == 1
    assert "nope.parquet: no such file" in capsys.readouterr().err
