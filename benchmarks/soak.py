"""A long run (issue 29, item 5): does anything creep up over thousands of steps?

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py [--steps 10000] [--every 100]
        [--save-steps 500] [--out benchmarks/results/soak.json] [--no-reliability]

QTuningSFTTrainer on the tiny random-init Llama of the test suite (tests/helpers.py), on the CPU, with the
plan log on (token lines too), a checkpoint every `--save-steps` steps and save_total_limit 2, a log line
every 10 steps. Every `--every` steps a callback samples the resident memory (/proc/self/statm), the open
file descriptors (/proc/self/fd) and the plan log's size. Reported:
- memory growth after warm-up: (last sample - warm-up sample) / warm-up sample, and the same with the
  highest sample after warm-up (promised: <= 5%); warm-up ends at the first sample at or after the second
  checkpoint (every code path, saving and rotating included, has run twice);
- file descriptors: their range after warm-up (promised: flat, 0);
- the plan log: bytes against steps, a least-squares line and its R^2 (promised: linear);
- checkpoints left at the end (save_total_limit 2: two).
Writes `--out` and, unless --no-reliability, replaces the "soak" key of benchmarks/results/reliability.json
(the other keys are left as they are). tests/test_soak.py runs a short form of the same function.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # tests.helpers: the tiny model and data of the test suite


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least squares y = a + b x, and R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"bytes_per_step": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0}


def soak(steps: int, every: int, save_steps: int, output_dir: str | Path, rows: int = 256, quiet: bool = True) -> dict:
    """Train `steps` steps; return the samples and the figures (see the module docstring)."""
    from transformers import TrainerCallback

    from qtuning.training.sft_config import QTuningSFTConfig
    from qtuning.training.trainer import QTuningSFTTrainer
    from tests.helpers import tiny_dataset, tiny_llama, tiny_tokenizer

    samples: list[dict] = []
    started = time.perf_counter()

    class Sampler(TrainerCallback):
        def __init__(self):
            self.trainer = None

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step % every and step != steps:
                return
            log = self.trainer._plan_log
            gc.collect()
            samples.append(
                {
                    "step": step,
                    "rss_mb": round(rss_bytes() / 2**20, 2),
                    "fds": open_fds(),
                    "plan_log_bytes": log._handle.tell() if log is not None else 0,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            if not quiet and len(samples) % 10 == 0:
                print(f"[soak] {samples[-1]}", flush=True)

    cfg = QTuningSFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=steps,
        logging_steps=10,
        save_steps=save_steps,
        save_strategy="steps",
        save_total_limit=2,
        report_to=[],
        learning_rate=1e-3,
        seed=0,
        disable_tqdm=True,
        plan_log=True,
        plan_log_tokens=True,
        dataloader_num_workers=0,
    )
    sampler = Sampler()
    trainer = QTuningSFTTrainer(
        model=tiny_llama(),
        args=cfg,
        train_dataset=tiny_dataset(rows),
        processing_class=tiny_tokenizer(),
        callbacks=[sampler],
    )
    sampler.trainer = trainer
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        **summarise(samples, save_steps, steps),
        "seconds": round(seconds, 1),
        "checkpoints_left": sorted(p.name for p in Path(output_dir).glob("checkpoint-*")),
        "samples": samples,
    }


def summarise(samples: list[dict], save_steps: int, steps: int) -> dict:
    warm_step = min(2 * save_steps, steps // 2)
    after = [s for s in samples if s["step"] >= warm_step]
    warm = after[0]
    rss = [s["rss_mb"] for s in after]
    fds = [s["fds"] for s in after]
    fit = linear_fit([float(s["step"]) for s in samples], [float(s["plan_log_bytes"]) for s in samples])
    return {
        "warm_up_step": warm["step"],
        "rss_mb_at_warm_up": warm["rss_mb"],
        "rss_mb_last": rss[-1],
        "rss_mb_max_after_warm_up": max(rss),
        "memory_growth_last": round((rss[-1] - warm["rss_mb"]) / warm["rss_mb"], 4),
        "memory_growth_max": round((max(rss) - warm["rss_mb"]) / warm["rss_mb"], 4),
        "fds_min_after_warm_up": min(fds),
        "fds_max_after_warm_up": max(fds),
        "fd_range_after_warm_up": max(fds) - min(fds),
        "plan_log_bytes_last": samples[-1]["plan_log_bytes"],
        "plan_log_fit": {k: round(v, 6) for k, v in fit.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--save-steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    parser.add_argument("--no-reliability", action="store_true", help="do not update reliability.json")
    args = parser.parse_args()
    command = "nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="qtuning-soak-") as work:
        result = soak(args.steps, args.every, args.save_steps, work, quiet=False)
    promised = {
        "memory_growth_at_most_5_percent": result["memory_growth_max"] <= 0.05,
        "fds_flat": result["fd_range_after_warm_up"] == 0,
        "plan_log_linear_r2_at_least_0_999": result["plan_log_fit"]["r2"] >= 0.999,
        "two_checkpoints_left": len(result["checkpoints_left"]) == 2,
    }
    result = {
        "date": date.today().isoformat(),
        "command": command.strip(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs",
        "steps": args.steps,
        "sample_every": args.every,
        "save_steps": args.save_steps,
        "promised": promised,
        **result,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    if not args.no_reliability:
        path = RESULTS / "reliability.json"
        data = json.loads(path.read_text()) if path.exists() else {}  # read just before writing: others edit it
        data["soak"] = {
            "cases_tried": len(promised),
            "behaved_as_promised": sum(promised.values()),
            "worst": {
                "memory_growth_after_warm_up": result["memory_growth_max"],
                "fd_range_after_warm_up": result["fd_range_after_warm_up"],
                "plan_log_r2": result["plan_log_fit"]["r2"],
            },
            **{k: v for k, v in result.items() if k not in ("samples", "promised")},
            "promised": promised,
            "details": str(args.out.relative_to(ROOT)) if args.out.is_relative_to(ROOT) else str(args.out),
        }
        path.write_text(json.dumps(data, indent=1) + "\n")
    return 0 if all(promised.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
