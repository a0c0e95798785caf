"""Numbers that go wrong (issue 29, item 3): NaN or inf scores, a row with every label masked, a micro-batch
of one row, ratios that round to zero, a step in which nothing is kept. The plan stays valid, the step
is trained (or trains nothing) as docs/algorithm.md section 9 says, a one-line `[qtuning]` notice says
what happened once per run, and the run goes on."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from qtuning import QTuningConfig, ScoreError
from qtuning.data.plan_log import read_plan_log
from qtuning.engine.history import ScoreWindow
from qtuning.engine.selection import Role, plan_pool, prepare_scores
from tests.helpers import tiny_dataset
from tests.test_trainer_mixin import plain_trainer

B, T = 4, 6


def grid(seed=0):
    g = torch.Generator().manual_seed(seed)
    nll = torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    ent = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, :2] = False  # the prompt
    mask[:, -1] = False
    return nll, ent, mask


def check_valid(plan, mask):
    """What every plan promises, whatever its scores."""
    assert plan.token_keep.dtype == torch.bool and not (plan.token_keep & ~mask).any()
    assert not (plan.token_keep & ~plan.sample_keep.unsqueeze(1)).any()
    assert torch.isfinite(plan.sample_ppl).all() and torch.isfinite(plan.sample_entropy).all()
    assert math.isfinite(plan.alpha) and math.isfinite(plan.beta)
    assert 0 <= plan.num_kept <= plan.pool_size


@pytest.mark.parametrize(
    "where",
    ["nan_nll", "inf_nll", "nan_entropy", "overflowing_mean"],
)
def test_a_row_with_broken_scores_is_refused_by_default_and_dropped_on_request(where):
    nll, ent, mask = grid()
    if where == "nan_nll":
        nll[1, 3] = float("nan")
    elif where == "inf_nll":
        nll[1, 3] = float("inf")
    elif where == "nan_entropy":
        ent[1, 2] = float("nan")
    else:
        nll[1, 2:5] = 800.0  # finite, but exp(mean NLL) overflows float64
    cfg = QTuningConfig(sample_ratio=0.5, token_ratio=0.5)
    with pytest.raises(ScoreError):
        prepare_scores(nll, ent, mask, cfg)
    part = prepare_scores(nll, ent, mask, cfg, non_finite="drop")
    assert part.non_finite_rows == 1
    assert not part.scores.has_response[1] and part.scores.has_response[[0, 2, 3]].all()
    assert not part.loss_mask[1].any()
    plan = plan_pool([part], cfg)[0]
    check_valid(plan, mask)
    assert plan.kept_role[1] == Role.DROPPED and plan.pool_size == 3 and plan.target_count == 2


def test_broken_scores_outside_the_scored_positions_are_ignored():
    nll, ent, mask = grid()
    nll[0, 0] = float("nan")  # a prompt position: never read
    ent[2, -1] = float("inf")
    part = prepare_scores(nll, ent, mask, QTuningConfig(), non_finite="drop")
    assert part.non_finite_rows == 0 and part.scores.has_response.all()


def test_every_row_broken_or_masked_keeps_nothing_and_stays_valid():
    nll, ent, mask = grid()
    nll[:, 3] = float("nan")
    cfg = QTuningConfig(sample_ratio=0.25, token_ratio=0.5, token_budget="batch")
    part = prepare_scores(nll, ent, mask, cfg, torch.ones(B, T, dtype=torch.bool), non_finite="drop")
    assert part.non_finite_rows == B
    plan = plan_pool([part], cfg)[0]
    check_valid(plan, mask)
    assert plan.num_kept == 0 and plan.pool_size == 0 and plan.num_kept_tokens == 0
    # every label masked: the same, without any notice of broken scores
    none = torch.zeros(B, T, dtype=torch.bool)
    part = prepare_scores(nll.nan_to_num(), ent, none, cfg, torch.ones(B, T, dtype=torch.bool), non_finite="drop")
    assert part.non_finite_rows == 0
    plan = plan_pool([part], cfg)[0]
    assert plan.num_kept == 0 and plan.quadrant.tolist() == [0] * B


def test_history_thresholds_never_take_a_dropped_row_into_the_window():
    nll, ent, mask = grid()
    nll[2, 3] = float("inf")
    cfg = QTuningConfig(sample_ratio=0.5, thresholds="history", history_window=8)
    window = ScoreWindow(8)
    part = prepare_scores(nll, ent, mask, cfg, non_finite="drop")
    plan = plan_pool([part], cfg, window=window)[0]
    check_valid(plan, mask)
    state = window.state_dict()
    assert len(state["ppl"]) == 3 and all(math.isfinite(v) for v in state["ppl"] + state["ent"])


@pytest.mark.parametrize("budget", ["per_sample", "batch"])
def test_a_micro_batch_of_one_row_and_ratios_that_round_to_zero(budget):
    nll, ent, mask = grid()
    attention = torch.ones(B, T, dtype=torch.bool)
    for rows in (slice(0, 1), slice(0, B)):  # one row; four rows with r_s * N = 0.04
        cfg = QTuningConfig(sample_ratio=0.01, token_ratio=0.01, token_budget=budget)
        part = prepare_scores(nll[rows], ent[rows], mask[rows], cfg, attention[rows])
        plan = plan_pool([part], cfg)[0]
        check_valid(plan, mask[rows])
        assert plan.target_count == 1 and plan.num_kept >= 1  # K = max(1, round(r_s * N))
        if budget == "per_sample":  # at least one token of every kept sample keeps its loss
            assert plan.num_kept_tokens >= 1
        # "batch": round(T_all * r_s * r_t) = 0 can prune a Q2 sample to nothing (section 4.3): then
        # the trainer's step trains nothing and says so (test_trainer_runs_on below)


# ---------------------------------------------------------------- through the trainer (the tiny model)


class _ProbeOverflow(TrainerCallback):
    """Turns the probe's final hidden states of the given rows (or every row) into inf/NaN at the given steps,
    as an fp16 overflow would; the training forward (with grad) is left alone."""

    def __init__(self, model, steps, rows, value):
        self.steps, self.rows, self.value, self.armed = steps, rows, value, False
        model.model.norm.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self.armed and not torch.is_grad_enabled():
            output = output.clone()
            output[self.rows] = self.value
            return output
        return None

    def on_step_end(self, args, state, control, **kwargs):  # the next step's probe runs before on_step_begin
        self.armed = (state.global_step + 1) in self.steps


def _masked(dataset, rows):
    records = dataset.to_list()
    for r in rows:
        records[r]["labels"] = [-100] * len(records[r]["labels"])
    return Dataset.from_list(records)


CASES = {
    # name: (dataset rows masked, training overrides, qtuning overrides, probe overflow, the notice expected)
    "nan_probe_rows": (None, {}, {}, ((2, 3), slice(0, 2), float("inf")), "NaN or inf scores"),
    "nan_probe_every_row": (None, {}, {}, ((3,), slice(None), float("nan")), "no token of the step"),
    "huge_probe_row": (None, {}, {}, ((2,), slice(0, 1), 1e30), "NaN or inf scores"),
    "row_all_labels_masked": ((0, 5, 9), {}, {}, None, None),
    "every_row_masked": (range(32), {}, {}, None, "no token of the step"),
    "one_row_micro_batches": (None, {"per_device_train_batch_size": 1}, {}, None, None),
    "ratios_round_to_zero": (None, {}, {"sample_ratio": 0.01, "token_ratio": 0.01}, None, None),
    "batch_budget_rounds_to_zero": (
        None,
        {},
        {"sample_ratio": 0.01, "token_ratio": 0.01, "token_budget": "batch"},
        None,
        "no token of the step",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_trainer_runs_on(tmp_path, capfd, case):
    masked, training, qtuning, overflow, notice = CASES[case]
    dataset = tiny_dataset(32) if masked is None else _masked(tiny_dataset(32), masked)
    steps = 5
    trainer = plain_trainer(tmp_path, dataset, training={"max_steps": steps, **training}, **qtuning)
    if overflow is not None:
        trainer.add_callback(_ProbeOverflow(trainer.model, *overflow))
    trainer.train()
    err = capfd.readouterr().err
    assert trainer.state.global_step == steps  # the run went on
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == steps and all(math.isfinite(v) for v in losses)
    notices = [line for line in err.splitlines() if line.startswith("[qtuning] step")]
    if notice is None:
        assert not notices, notices
    else:
        assert len([n for n in notices if notice in n]) == 1, err[-2000:]  # once per run, one line
        assert all(n.endswith("(shown once per run)") for n in notices)
    plans = read_plan_log(tmp_path / "qtuning_plans.jsonl")
    assert [p["step"] for p in plans] == [s for s in range(1, steps + 1) for _ in range(len(plans) // steps)]
    for p in plans:  # every plan valid: finite scores, kept tokens only in kept rows, kept <= pool
        s = p["samples"]
        assert all(math.isfinite(v) for v in s["ppl"] + s["entropy"])
        assert all(k == 0 for k, r in zip(s["kept_tokens"], s["role"]) if r == 0)
        assert all(k <= t for k, t in zip(s["kept_tokens"], s["trainable_tokens"]))
        assert sum(r != 0 for r in s["role"]) <= p["pool_size"]
    if case == "nan_probe_rows":  # the overflowing rows sat out their steps (no trainable token, not kept)
        sat_out = {p["step"]: sum(t == 0 for t in p["samples"]["trainable_tokens"]) for p in plans}
        assert sat_out[2] > 0 and sat_out[3] > 0 and sat_out[1] == sat_out[4] == sat_out[5] == 0
    if case in ("every_row_masked", "nan_probe_every_row"):
        zero = [h["loss"] for h in trainer.state.log_history if "loss" in h and h["loss"] == 0.0]
        assert len(zero) == (steps if case == "every_row_masked" else 1)
