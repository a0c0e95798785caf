"""Axolotl 0.19.0 and LLaMA-Factory 0.9.5 train with Q-Tuning on, from their own entry points, and plan
exactly as qtuning's own trainer does on the same batches.

Each framework lives in its own cached venv (scripts/framework_env.sh: the framework at its own pins
first, then qtuning with that extra). Each test checks that installing qtuning changed none of the
framework's packages and left `pip check` clean; trains SmolLM2-135M-Instruct (the `qtuning fetch`
folder) with LoRA through the framework's entry point, 10 steps of 16 Alpaca demo rows, Q-Tuning at
sample_ratio 0.25 / token_ratio 0.5 (tests/integration_configs/*_qtuning.yaml), dumping its batches and
plans (QTUNING_DUMP_BATCHES); reads the plan log (4 of 16 kept at every step, Q2 samples keep half their
tokens); then replays the dumped batches with QTuningSFTTrainer in this venv from the framework's initial
adapter and compares the plans step by step (benchmarks/integrations.py: replay, compare): the same kept
ids, roles and kept tokens, PPL and entropy within 1e-5 at every step. (Measured: bit-identical at every
step, for both frameworks; benchmarks/results/integrations.json.) The LLaMA-Factory launcher also runs
under torchrun (FORCE_TORCHRUN=1, 2 CPU ranks): both ranks plan from one pool. The step-time ratio is not tested here
(too noisy on a shared machine): benchmarks/integrations.py measures it.

A framework that cannot be installed here FAILS with the script's one-line reason; set
QTUNING_FRAMEWORKS_OPTIONAL=1 to report it as a skip instead (pytest -ra prints the reason).

Cost: building the two venvs ~6-10 min the first time (4.3 GB + 6.6 GB, cached after); with them cached,
each test is one framework run and one replay of 10 steps (see the timings in docs/integrations-notes.md).
"""

import os
import socket
import sys
from pathlib import Path

import pytest

from tests.integration_configs.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import integrations  # noqa: E402  (benchmarks/integrations.py: the runs, the replay, the comparison)

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
STEPS, POOL, KEPT = 10, 16, 4  # the templates: max_steps 10, 16 rows per step, sample_ratio 0.25


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    return prepare(tmp_path_factory.mktemp("frameworks"))


def framework_env(name: str):
    try:
        env, record, output = integrations.framework_env(name)
    except integrations.FrameworkUnavailable as exc:
        message = f"{name} CANNOT BE INSTALLED HERE, its integration is untested: {exc}"
        print(message)
        if os.environ.get("QTUNING_FRAMEWORKS_OPTIONAL") == "1":
            pytest.skip(message)
        pytest.fail(message + " (set QTUNING_FRAMEWORKS_OPTIONAL=1 to skip instead)")
    print(output)
    assert record["qtuning_changed_packages"] == [], record
    assert record["pip_check_clean"], record["pip_check_output"]
    return env


def check_plan_log(out_dir: Path) -> None:
    plans = integrations.read_plans(out_dir)
    assert [p["step"] for p in plans] == list(range(1, STEPS + 1))
    for plan, share in zip(plans, integrations.kept_shares(plans)):
        assert (share["pool"], share["kept"]) == (POOL, KEPT), share  # 25% of the samples, every step
        assert None not in plan["samples"]["id"]  # dataset row ids reached the plan log
        samples = plan["samples"]
        for role, kept, trainable in zip(samples["role"], samples["kept_tokens"], samples["trainable_tokens"]):
            if role == 2:  # Q2: half of its response tokens (token_budget per_sample: floor, at least 1)
                assert kept == max(1, trainable // 2), (kept, trainable)
            elif role == 4:  # Q4: kept whole
                assert kept == trainable
    assert any(2 in p["samples"]["role"] for p in plans)  # token pruning did run


def check_against_qtuning_trainer(name: str, work: Path) -> None:
    dump, replay_dir = work / f"{name}-dump", work / f"{name}-replay"
    replay = integrations.run_replay(dump, replay_dir)
    assert replay["frozen_digest_equal"] and replay["initial_trainable_equal"], replay
    result = integrations.compare(dump, replay_dir / "dump")
    for row in result["steps"]:
        print(
            f"{name} step {row['step']}: kept {row['kept_ids']} equal={row['kept_ids_equal']} tokens equal="
            f"{row['token_keep_equal']} max|dPPL|={row['max_abs_diff_ppl']:.1e} max|dEnt|={row['max_abs_diff_entropy']:.1e}"
        )
    assert result["steps_framework"] == result["steps_replay"] == STEPS
    first = result["steps"][0]  # step 1: the same weights on both sides, so the same plan
    assert first["batches_equal"] and first["kept_ids_equal"] and first["roles_equal"], first
    assert first["token_keep_equal"] and first["scores_within_tolerance"], first
    assert result["all_equal"], f"plans differ from step {result['first_differing_step']}: {result['steps']}"


def check_eval_of_the_output(name: str, out: Path, inputs: dict, tmp: Path) -> None:
    """What a framework user measures with: the mixin's summary in the framework's output folder says what
    it trained with, and `qtuning eval` (this venv) scores that folder as the adapter on its base model
    (Axolotl also writes the base model's config.json there), not as the bare base model."""
    import json

    from qtuning.cli import main

    summary = json.loads((out / "qtuning_summary.json").read_text())
    assert name in summary["environment"]["packages"], summary["environment"]
    scores = {}
    for label, model in (("tuned", out), ("base", inputs["model"])):
        path = tmp / f"{name}-{label}-eval.json"
        args = ["eval", "--model", str(model), "--tasks", f"nll={inputs['data_file']}", "--limit", "4"]
        assert main([*args, "--engine", "native", "-o", str(path)]) == 0
        scores[label] = json.loads(path.read_text())["tasks"]["nll"]["nll"]
    print(f"{name}: held-out NLL of 4 training rows, tuned {scores['tuned']:.4f}, base {scores['base']:.4f}")
    assert abs(scores["tuned"] - scores["base"]) > 1e-4  # the adapter was applied


def run_framework(name: str, env: Path, inputs: dict) -> Path:
    config = Path(inputs[integrations.FRAMEWORKS[name]])
    work = config.parent
    out = work / f"{name}-run"
    proc = integrations.run_framework(name, env, config, out, QTUNING_DUMP_BATCHES=str(work / f"{name}-dump"))
    print(f"{name}: {proc.seconds} s")
    return out, proc.stdout + proc.stderr


def test_axolotl_train_with_the_plugin(inputs):
    env = framework_env("axolotl")
    out, log = run_framework("axolotl", env, inputs)
    assert "Plugin loaded successfully: qtuning.integrations.axolotl.QTuningPlugin" in log
    assert "[qtuning] Axolotl trainer: QTuningAxolotlTrainer" in log
    check_plan_log(out)
    check_eval_of_the_output("axolotl", out, inputs, out.parent)
    check_against_qtuning_trainer("axolotl", out.parent)


def test_llamafactory_launcher(inputs):
    env = framework_env("llamafactory")
    out, log = run_framework("llamafactory", env, inputs)
    assert "[qtuning] LLaMA-Factory trainer: QTuningSeq2SeqTrainer" in log
    check_plan_log(out)
    check_eval_of_the_output("llamafactory", out, inputs, out.parent)
    check_against_qtuning_trainer("llamafactory", out.parent)


def test_llamafactory_launcher_under_torchrun(inputs):
    """FORCE_TORCHRUN=1: the launcher starts torchrun itself, every worker puts the mixin on LLaMA-Factory's
    trainer, and the two ranks select from one pool (8 rows each, 4 kept of the 16 in all, every step)."""
    env = framework_env("llamafactory")
    config = Path(inputs[integrations.FRAMEWORKS["llamafactory"]])
    out = config.parent / "llamafactory-torchrun"
    overrides = {"max_steps": 3, "per_device_train_batch_size": 8, "ddp_backend": "gloo"}
    with socket.socket() as free:  # a free port for torchrun's rendezvous
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    proc = integrations.run_framework(
        "llamafactory", env, config, out, overrides, threads=1, FORCE_TORCHRUN="1", NPROC_PER_NODE="2", MASTER_PORT=port
    )
    log = proc.stdout + proc.stderr
    assert "world size: 2" in log and log.count("[qtuning] LLaMA-Factory trainer: QTuningSeq2SeqTrainer") == 2
    from qtuning.data.plan_log import read_run_plans

    plans = read_run_plans(out)
    assert sorted({p["rank"] for p in plans}) == [0, 1]
    for step in (1, 2, 3):
        ranks = [p for p in plans if p["step"] == step]
        assert [p["pool_size"] for p in ranks] == [2 * 8, 2 * 8]  # the pool spans both ranks
        assert sum(p["num_kept"] for p in ranks) == KEPT, ranks  # 25% of the 16, across the ranks
