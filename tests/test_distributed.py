"""torch.distributed with gloo on CPU, 2 processes: the same selection as one process on the
concatenated batch, no hang when a rank keeps nothing, and the CLI under torchrun."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qtuning.data.plan_log import read_run_plans

ROOT = Path(__file__).resolve().parents[1]
CHECK = Path(__file__).parent / "scripts" / "ddp_check.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, timeout=180):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *map(str, args),
    ]
    # gloo binds to the interface of the host name unless told otherwise: keep it on loopback
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize(
    "pool, rank1_empty, budget, history",
    [
        ("global", False, "per_sample", False),
        ("accumulation", False, "per_sample", False),
        ("global", True, "per_sample", False),
        ("accumulation", False, "batch", False),
        ("global", False, "per_sample", True),
        ("accumulation", False, "per_sample", True),
    ],
)
def test_two_ranks_match_one_process_on_the_concatenation(pool, rank1_empty, budget, history):
    """history: thresholds from a score window; every rank's window must equal the single process's."""
    proc = torchrun(
        CHECK,
        "--pool",
        pool,
        "--token-budget",
        budget,
        *(["--rank1-empty"] if rank1_empty else []),
        *(["--history"] if history else []),
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["roles_equal"] and result["token_masks_equal"] and result["windows_equal"] and result["finite"]
    assert result["loss"] == pytest.approx(result["reference_loss"], abs=1e-5)
    assert result["max_grad_error"] < 1e-5
    if rank1_empty:
        assert result["kept_per_rank"][1] == 0 and result["kept_per_rank"][0] > 0


def test_train_command_under_torchrun(tmp_path):
    from tests.helpers import make_tiny_model_dir, write_jsonl_rows

    model_dir = make_tiny_model_dir(tmp_path / "model")
    data = write_jsonl_rows(tmp_path / "data.jsonl", 40)
    rows = [json.loads(line) for line in data.read_text().splitlines()]  # row i says "The number is i."
    data.write_text("\n".join(json.dumps({**r, "parity": ("even", "odd")[i % 2]}) for i, r in enumerate(rows)))
    out = tmp_path / "run"
    proc = torchrun(
        "-m",
        "qtuning.cli",
        "train",
        "--model",
        model_dir,
        "--data",
        data,
        "--group_field",
        "parity",
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--output_dir",
        out,
        "--disable_tqdm",
        "true",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "qtuning_summary.json").read_text())
    # 32 rows over 2 ranks x 4 per device = 4 steps; the summary counts both ranks' samples
    assert summary["optimizer_steps"] == 4 and summary["environment"]["world_size"] == 2
    assert summary["samples_scored"] == 32 and summary["samples_trained"] >= 8  # at least K = round(0.25 * 8) per pool
    logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert len(logs) == 4
    # the logged statistics are gathered over both ranks, not rank 0's: compare with both plan logs
    plans = read_run_plans(out)
    assert len(plans) == 8 and {p["rank"] for p in plans} == {0, 1}
    assert sum(e["qtuning/tokens_scored"] for e in logs) == sum(sum(p["samples"]["trainable_tokens"]) for p in plans)
    for step, entry in enumerate(logs, start=1):  # one global pool of 2 x 4 samples per step
        step_plans = [p for p in plans if p["step"] == step]
        kept = sum(r != 0 for p in step_plans for r in p["samples"]["role"])
        assert kept >= 2 and entry["qtuning/kept_sample_fraction"] == pytest.approx(kept / 8)
        # both ranks planned from the same pool: same thresholds, pool of 8
        assert len({p["alpha"] for p in step_plans}) == 1 and all(p["pool_size"] == 8 for p in step_plans)
    assert summary["samples_trained"] == sum(sum(r != 0 for r in p["samples"]["role"]) for p in plans)
    # group_field: rank 0 wrote one group per training row; both ranks' ids name the right rows
    from transformers import AutoTokenizer

    from qtuning.data.row_groups import read_groups
    from qtuning.insight.run_reading import kept_by_group

    field_name, groups = read_groups(out)
    assert field_name == "parity" and len(groups) == 32
    table = kept_by_group(plans, groups)
    assert sum(g["samples_scored"] for g in table) == 32
    # the summary's shares are summed over both ranks: the same as both plan logs together
    by_log = {g["group"]: g["kept_share"] for g in table}
    assert summary["kept_share_by_group"] == pytest.approx(by_log, abs=5e-4)
    tokenizer = AutoTokenizer.from_pretrained(out)
    checked = 0
    for plan in plans:
        for entry in plan["tokens"]:
            number = int(re.search(r"The number is (\d+)", tokenizer.decode(entry["token_ids"])).group(1))
            assert groups[entry["id"]] == ("even", "odd")[number % 2]
            checked += 1
    assert checked and {p["rank"] for p in plans if p["tokens"]} == {0, 1}


# FSDP2, said explicitly: the default of transformers from 5.10 on, but FSDP1 in 5.0-5.9
# (constraints-oldest.txt), whose CPU set-up accelerate refuses
FSDP = [
    "--fsdp",
    "full_shard auto_wrap",
    "--fsdp_config",
    '{"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"], "version": 2}',
]


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_one_step_on_two_ranks_updates_like_one_process(tmp_path, sharding):
    """Through the CLI: one SGD step of 2 ranks x 4 rows (global pool) == 1 process x 8 rows."""
    from safetensors.torch import load_file

    from tests.helpers import make_tiny_model_dir, write_jsonl_rows

    model_dir = make_tiny_model_dir(tmp_path / "model")
    data = write_jsonl_rows(tmp_path / "data.jsonl", 24)
    common = [
        "-m",
        "qtuning.cli",
        "train",
        "--model",
        model_dir,
        "--data",
        data,
        "--max_steps",
        "1",
        "--optim",
        "sgd",
        "--learning_rate",
        "0.5",
        "--lr_scheduler_type",
        "constant",
        "--max_grad_norm",
        "0",
        "--lora_r",
        "0",
        "--eval_fraction",
        "0",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--selection_pool",
        "global",
    ]
    single = subprocess.run(
        [
            sys.executable,
            *map(str, common),
            "--per_device_train_batch_size",
            "8",
            "--output_dir",
            str(tmp_path / "single"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    extra = FSDP if sharding == "fsdp" else []
    multi = torchrun(*common, "--per_device_train_batch_size", "4", "--output_dir", tmp_path / "multi", *extra)
    assert multi.returncode == 0, multi.stderr[-4000:]
    a = load_file(tmp_path / "single" / "model.safetensors")
    b = load_file(tmp_path / "multi" / "model.safetensors")
    before = load_file(Path(model_dir) / "model.safetensors")
    assert a.keys() == b.keys()
    moved = max((a[k] - before[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # the step did something
    for key in a:
        assert (a[key] - b[key]).abs().max().item() < 1e-5, key
    plans_single = read_run_plans(tmp_path / "single")
    plans_multi = read_run_plans(tmp_path / "multi")  # step 1: rank 0's, then rank 1's
    assert [p["rank"] for p in plans_multi] == [0, 1]
    assert plans_single[0]["samples"]["role"] == plans_multi[0]["samples"]["role"] + plans_multi[1]["samples"]["role"]


def test_deepspeed_zero_2_and_3_update_like_plain_training(tmp_path):
    """Through the CLI: one SGD step under DeepSpeed ZeRO-2 and ZeRO-3 (one process, DeepSpeed's CPU
    accelerator with gloo) equals the same step without DeepSpeed. Under ZeRO-3 the weights are
    sharded even on one rank, so the probe's LM-head read (gathered) and the start-up checks (run
    through the DeepSpeed engine) are exercised. Two CPU processes cannot run here: accelerate sets up
    its DeepSpeed state only on an accelerator (see docs/compatibility.md)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (scripts/setup.sh installs it)")
    from safetensors.torch import load_file

    from tests.helpers import make_tiny_model_dir, write_jsonl_rows

    model_dir = make_tiny_model_dir(tmp_path / "model")
    data = write_jsonl_rows(tmp_path / "data.jsonl", 24)
    common = ["-m", "qtuning.cli", "train", "--model", model_dir, "--data", data, "--max_steps", "1", "--optim", "sgd",
              "--learning_rate", "0.5", "--lr_scheduler_type", "constant", "--max_grad_norm", "0", "--lora_r", "0",
              "--eval_fraction", "0", "--save_strategy", "no", "--disable_tqdm", "true",
              "--per_device_train_batch_size", "8"]  # fmt: skip
    plain = subprocess.run([sys.executable, *map(str, common), "--output_dir", str(tmp_path / "plain")],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-3000:]
    a = load_file(tmp_path / "plain" / "model.safetensors")
    before = load_file(Path(model_dir) / "model.safetensors")
    assert max((a[k] - before[k]).abs().max().item() for k in a) > 1e-4  # the step did something
    for stage in (2, 3):
        config = {
            "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
            "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
        }
        out = tmp_path / f"zero{stage}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *map(str, common), "--output_dir", str(out),
               "--deepspeed", json.dumps(config)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                              env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"})  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        b = load_file(out / "model.safetensors")
        for key in a:
            assert (a[key] - b[key]).abs().max().item() < 1e-5, (stage, key)
        summary = json.loads((out / "qtuning_summary.json").read_text())
        assert summary["samples_trained"] == 2  # 25% of 8
