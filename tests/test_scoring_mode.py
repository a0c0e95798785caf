"""scoring: auto (qtuning.training.scoring_mode): the schedule, and the choice from injected step times."""

import pytest

from qtuning.training.scoring_mode import ScoringModeChooser


def feed(chooser, times):
    """Run steps 1..n with injected times per mode; returns the modes used."""
    modes = []
    for step in range(1, 9):
        mode = chooser.mode_for_step(step)
        modes.append(mode)
        chooser.record(step, mode, times[mode])
    return modes


@pytest.mark.parametrize(
    "times, expected",
    [
        ({"probe": 1.0, "reuse": 2.5}, "probe"),  # compute-bound: the probe saves time
        ({"probe": 3.2, "reuse": 2.0}, "reuse"),  # launch-bound (a small model on a GPU): reuse is cheaper
    ],
)
def test_picks_the_cheaper_mode_from_injected_timings(times, expected):
    chooser = ScoringModeChooser(warmup_steps=1, measured_steps=2)
    modes = feed(chooser, times)
    # step 1 warm-up (probe), steps 2-5 alternate probe/reuse, then the choice for good
    assert modes[:5] == ["probe", "probe", "reuse", "probe", "reuse"]
    assert chooser.chosen == expected and modes[5:] == [expected] * 3
    assert chooser.probe_s == [times["probe"]] * 2 and chooser.reuse_s == [times["reuse"]] * 2


def test_the_warm_up_step_is_not_counted_and_the_fastest_step_decides():
    chooser = ScoringModeChooser(warmup_steps=1, measured_steps=3)
    times = iter([50.0, 1.0, 1.2, 9.0, 1.3, 1.0, 1.1])  # step 1 slow (warm-up); one slow probe step (9.0)
    for step in range(1, 8):
        chooser.record(step, chooser.mode_for_step(step), next(times))
    assert chooser.probe_s == [1.0, 9.0, 1.0] and chooser.reuse_s == [1.2, 1.3, 1.1]
    assert chooser.chosen == "probe"  # fastest 1.0 vs 1.1: a slow outlier (9.0) changes nothing


def test_noise_that_only_adds_time_does_not_flip_the_choice():
    """Probe truly costs 1.0 and reuse 1.5; contention adds up to +2 s to some steps (what a shared
    CPU did to a benchmark run, where medians of two picked the slower mode)."""
    chooser = ScoringModeChooser()  # 1 warm-up, 3 per mode
    times = iter([9.0, 1.0 + 2.0, 1.5, 1.0 + 1.8, 1.5 + 0.1, 1.0, 1.5 + 0.2])
    for step in range(1, 8):
        chooser.record(step, chooser.mode_for_step(step), next(times))
    assert chooser.chosen == "probe"  # medians (2.8 vs 1.6) would have picked reuse


def test_state_round_trip_keeps_the_decision():
    chooser = ScoringModeChooser()
    feed(chooser, {"probe": 2.0, "reuse": 1.0})
    restored = ScoringModeChooser()
    restored.load_state_dict(chooser.state_dict())
    assert restored.mode_for_step(100) == "reuse"


@pytest.mark.parametrize(
    "times, expected", [({"probe": 1.0, "reuse": 3.0}, "probe"), ({"probe": 3.0, "reuse": 1.0}, "reuse")]
)
def test_the_trainer_runs_both_modes_then_the_cheaper_one(tmp_path, times, expected):
    """scoring: auto inside QTuningSFTTrainer, the step times injected: which mode each step ran, the
    choice, the summary, and a compute estimate that counts the probe only in probe steps."""
    from tests.helpers import tiny_dataset
    from tests.test_trainer import make_trainer

    trainer = make_trainer(tmp_path, dataset=tiny_dataset(64), max_steps=8, scoring="auto")
    modes = []
    record = trainer._record_step_time

    def injected(step, seconds):
        modes.append(trainer._qt_step_mode)
        record(step, times[trainer._qt_step_mode])

    trainer._record_step_time = injected
    trainer.train()
    assert modes == ["probe", "probe", "reuse", "probe", "reuse", "probe", "reuse", expected]
    assert trainer.qtuning_summary["scoring_mode"] == expected
    probe_steps = modes.count("probe")
    # every step's rows are 8 samples of one micro-batch: probed positions come from probe steps only
    assert 0 < trainer.qtuning_summary["positions_probed"]
    assert trainer._qt_totals["probed_positions"] < trainer._qt_totals["scored_positions"] or probe_steps == 8
