"""The soak's short form (issue 29, item 5; benchmarks/soak.py runs 10,000 steps): 400 steps of the tiny model
with the plan log on, a checkpoint every 100 steps and save_total_limit 2. After warm-up (the second
checkpoint) the resident memory stays within 5%, the open file descriptors do not move, the plan log grows
linearly with the steps, and two checkpoints are left."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_a_short_soak_holds_memory_fds_and_plan_log_growth(tmp_path):
    from soak import soak

    result = soak(steps=400, every=20, save_steps=100, output_dir=tmp_path)
    assert result["warm_up_step"] == 200
    assert result["memory_growth_max"] <= 0.05, result["samples"]
    assert result["fd_range_after_warm_up"] == 0, result["samples"]
    assert result["plan_log_fit"]["r2"] >= 0.999 and result["plan_log_fit"]["bytes_per_step"] > 0
    assert result["checkpoints_left"] == ["checkpoint-300", "checkpoint-400"]
