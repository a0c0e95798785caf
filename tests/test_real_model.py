"""Smoke test on the real SmolLM2-135M-Instruct and real Alpaca rows (fetched, sha256-checked, cached)."""

import subprocess
import sys

import pytest
import torch

from qtuning import QTuningConfig, plan_batch, token_scores_from_logits
from qtuning.data import collate, load_records, tokenize_record
from qtuning.data.models import load_model_and_tokenizer
from qtuning.modeling.probe import score_batch

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2():
    return load_model_and_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def real_batch(smollm2):
    _, tokenizer = smollm2
    records, _ = load_records("alpaca-demo")
    features = [tokenize_record(tokenizer, r, max_length=128) for r in records[:8]]
    return collate(features, tokenizer.pad_token_id)


def test_model_is_the_real_one(smollm2):
    model, tokenizer = smollm2
    assert model.config.vocab_size == 49152 and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    text = "Paris is the capital of France, and Berlin is the capital of Germany."
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids.input_ids).loss
    assert 4.0 < loss.exp().item() < 9.0  # 6.1 measured; a broken conversion gives hundreds


def test_score_and_select_real_samples(smollm2, real_batch):
    model, _ = smollm2
    scores, loss_mask, attention = score_batch(
        model, real_batch["input_ids"], real_batch["attention_mask"], real_batch["labels"]
    )
    with torch.no_grad():
        logits = model(input_ids=real_batch["input_ids"], attention_mask=real_batch["attention_mask"]).logits
    ref = token_scores_from_logits(logits, real_batch["labels"])
    torch.testing.assert_close(scores.nll, ref.nll, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores.entropy, ref.entropy, atol=1e-4, rtol=1e-5)

    plan = plan_batch(scores.nll, scores.entropy, loss_mask, QTuningConfig(), attention_mask=attention)
    assert plan.num_kept == 2  # K = round(0.25 * 8)
    assert ((plan.sample_ppl > 1.0) & (plan.sample_ppl < 100.0)).all()  # a trained model, not noise
    assert ((plan.sample_entropy > 0.0) & (plan.sample_entropy < 10.8)).all()  # below log(49152)
    assert not (plan.token_keep & ~loss_mask).any()
    for b in (plan.kept_role == 2).nonzero().flatten().tolist():
        assert plan.token_keep[b].sum() == max(1, int(loss_mask[b].sum()) // 2)


def test_plan_command_on_the_real_model(tmp_path):
    out = tmp_path / "plans.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qtuning.cli",
            "plan",
            "--num-samples",
            "8",
            "--batch-size",
            "8",
            "--max-length",
            "96",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kept samples      2 (25.0%" in proc.stdout
    assert out.is_file()


def test_train_command_on_the_real_model(tmp_path):
    """End to end on SmolLM2-135M-Instruct + LoRA and real Alpaca rows: 2 optimizer steps."""
    import json

    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qtuning.cli",
            "train",
            "--max_train_samples",
            "16",
            "--max_eval_samples",
            "4",
            "--per_device_train_batch_size",
            "8",
            "--max_length",
            "128",
            "--logging_steps",
            "1",
            "--save_steps",
            "2",
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 2/2 | loss" in proc.stderr + proc.stdout  # the compact log line under the progress bar
    summary = json.loads((out / "qtuning_summary.json").read_text())
    assert summary["optimizer_steps"] == 2
    assert summary["samples_scored"] == 16 and summary["samples_trained"] == 4
    assert 0.5 < summary["eval_loss_before"] < 5.0  # a pretrained instruct model on Alpaca: ~1.6 measured
    assert abs(summary["eval_loss_after"] - summary["eval_loss_before"]) < 1.0
    assert (out / "adapter_model.safetensors").is_file()
    from qtuning.data.plan_log import read_plan_log

    plans = read_plan_log(out / "qtuning_plans.jsonl")
    assert len(plans) == 2 and all(sum(r != 0 for r in p["samples"]["role"]) == 2 for p in plans)
