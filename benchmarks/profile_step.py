"""Where the time of a Q-Tuning step goes (probe, plan, plan log, training), per variant.

    python benchmarks/profile_step.py [--random-init] [--precision bf16] [--batch 16] [--max-length 512]

Builds the step_speed.py trainers, warms up, then times the parts of 5 steps of each variant
(CUDA-synchronised) and prints a cProfile of the default variant's steps.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import step_speed


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_step(trainer, batch) -> dict[str, float]:
    parts = {}
    original = trainer._score_micro_batch
    spent = {"probe": 0.0}

    def probe(b):
        _sync()
        t = time.perf_counter()
        out = original(b)
        _sync()
        spent["probe"] += time.perf_counter() - t
        return out

    trainer._score_micro_batch = probe
    _sync()
    t0 = time.perf_counter()
    batches, num_items = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    _sync()
    t1 = time.perf_counter()
    trainer.current_gradient_accumulation_steps = len(batches)
    for inputs in batches:
        trainer.training_step(trainer.model, inputs, num_items)
    trainer.optimizer.step()
    trainer.model.zero_grad()
    _sync()
    t2 = time.perf_counter()
    trainer._score_micro_batch = original
    parts["probe"] = spent["probe"]
    parts["plan_and_log"] = (t1 - t0) - spent["probe"]
    parts["train"] = t2 - t1
    parts["total"] = t2 - t0
    return parts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="alpaca-demo")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batches", default="random")
    parser.add_argument("--sample-ratio", type=float, default=0.25)
    parser.add_argument("--architecture", default="135m")
    parser.add_argument("--token-ratio", type=float, default=0.5)
    args = parser.parse_args()
    variants = {
        "default": {},
        "probe_batch_size=0": {"probe_batch_size": 0},
        "plan_log=False": {"plan_log": False},
        "both": {"probe_batch_size": 0, "plan_log": False},
    }
    full, batches = step_speed.build("full", args)
    for b in batches[: args.warmup]:
        step_speed.optimizer_step(full, b)
    full_times = [step_speed.optimizer_step(full, b) for b in batches[args.warmup : args.warmup + args.steps]]
    print(f"full: {statistics.median(full_times):.3f} s/step")
    del full
    for name, overrides in variants.items():
        trainer, _ = step_speed.build("qtuning", args)
        for key, value in overrides.items():
            setattr(trainer.args, key, value)
        if not trainer.args.plan_log:
            trainer._plan_log = None
        else:
            from qtuning.data.plan_log import PlanLog

            trainer._plan_log = PlanLog(f"/tmp/profile-{name}.jsonl")
        for b in batches[: args.warmup]:
            timed_step(trainer, b)
        rows = [timed_step(trainer, b) for b in batches[args.warmup : args.warmup + args.steps]]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"{name:20s} " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()), flush=True)
        if name == "default":
            profiler = cProfile.Profile()
            profiler.enable()
            for b in batches[args.warmup : args.warmup + 3]:
                timed_step(trainer, b)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            print(out.getvalue()[:6000])
        del trainer


if __name__ == "__main__":
    main()
