"""The three-call contract for custom loops."""

import subprocess
import sys
from pathlib import Path

import torch

from qtuning import QTuningConfig
from qtuning.engine.scoring import IGNORE_INDEX, shift_labels
from qtuning.modeling.qtuner import QTuner, kept_token_count
from tests.helpers import random_batch, tiny_llama

ROOT = Path(__file__).resolve().parents[1]


def test_apply_keeps_rows_trims_padding_and_masks_pruned_labels():
    model = tiny_llama()
    input_ids, attention_mask, labels = random_batch(B=8, T=16)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    tuner = QTuner(QTuningConfig(sample_ratio=0.25, token_ratio=0.5))
    plan = tuner.plan(model, batch)
    kept = tuner.apply(batch, plan)
    rows = plan.sample_keep.nonzero().flatten()
    assert kept["input_ids"].shape[0] == rows.numel() == 2
    assert kept["input_ids"].shape[1] == int(attention_mask[rows].sum(dim=1).max())
    # the labels that survive are exactly the plan's kept tokens, moved back to the unshifted grid
    assert kept_token_count(kept) == plan.num_kept_tokens
    survivors = shift_labels(kept["labels"]) != IGNORE_INDEX
    width = kept["input_ids"].shape[1]
    assert torch.equal(survivors, plan.token_keep[rows, :width])


def test_loss_equals_the_models_own_loss_on_the_kept_batch():
    model = tiny_llama()
    input_ids, attention_mask, labels = random_batch(B=8, T=16, seed=3)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    tuner = QTuner()
    kept = tuner.apply(batch, tuner.plan(model, batch))
    ours = tuner.loss(model, kept)
    reference = model(**kept).loss  # HF's own shifted, masked mean cross-entropy
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_the_example_runs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_loop.py"), "--tiny", "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "step 1: loss" in proc.stdout and "kept 2/8 samples" in proc.stdout
