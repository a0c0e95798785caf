"""Resuming continues a run exactly: same selections, same loss curve, nothing lost or duplicated,
including after SIGKILL in the middle of a step."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"


def _run(out, *extra):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), *extra], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(out):
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]


def _plans(out):
    from qtuning.data.plan_log import read_plan_log

    return read_plan_log(out / "qtuning_plans.jsonl")


@pytest.mark.parametrize("mode", ["pool", "history", "stale"], ids=["pool-thresholds", "history-thresholds", "stale"])
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, mode):
    """history: the score window is restored from the checkpoint, so the selections still match.
    stale: the score cache (32 rows after 4 steps) is restored, and epoch 2 (steps 7-8) selects
    with scores cached before and after the kill."""
    history = mode == "history"
    extra = {"pool": [], "history": ["--history"], "stale": ["--stale"]}[mode]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(straight, *extra)

    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(killed), "--sleep", "0.5", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    marker = killed / "checkpoint-4" / "qtuning_state.json"  # the last file a checkpoint gets
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint-4 in time"
        time.sleep(0.05)
    time.sleep(0.25)  # into step 5: its plan line may already be written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoint-8").exists()
    steps_logged_before_resume = {line["step"] for line in _plans(killed)}
    assert max(steps_logged_before_resume) >= 4

    resumed = _run(killed, "--resume", *extra)
    if history:  # the window (20 samples, 8 per step) was full and in the checkpoint
        state = json.loads((killed / "checkpoint-4" / "qtuning_state.json").read_text())
        assert len(state["history"]["ppl"]) == 20
    if mode == "stale":
        import torch

        cache = torch.load(killed / "checkpoint-4" / "qtuning_score_cache_rank0.pt", weights_only=True)
        assert len(cache["ids"]) == 32
        summary = json.loads((killed / "qtuning_summary.json").read_text())
        assert summary["samples_selected_with_stale_scores"] > 0
    assert "finished 8" in resumed.stdout

    assert _losses(killed) == _losses(straight)  # bit-for-bit: CPU, same seed, same data order
    plans_straight, plans_killed = _plans(straight), _plans(killed)
    assert [p["step"] for p in plans_killed] == list(range(1, 9))  # nothing lost, nothing duplicated
    for a, b in zip(plans_straight, plans_killed):
        assert a["samples"] == b["samples"] and a["tokens"] == b["tokens"]
