"""Time per optimizer step: full-data SFT vs Q-Tuning, same batches, alternating, one run.

    .venv/bin/python benchmarks/step_speed.py [--steps 5] [--batch 16] [--max-length 256]

SmolLM2-135M-Instruct + LoRA (r 8, all linear layers) on real Alpaca rows, fp32, CPU threads as
torch sets them. Methods, each with its own copy of the model, stepping through the SAME batches
in a rotating order (so that machine noise hits every method alike):
  full_trl        TRL's SFTTrainer, full data (its own fused LM-head loss)
  full            QTuningSFTTrainer with pruning_method=none: full data through OUR loss path
                  (LM head only at loss positions): the fair baseline
  qtuning         probe mode at 25% x 50%, default settings (probe_precision=auto: a bf16-autocast
                  probe on this CPU, which has AVX512-BF16/AMX)
  qtuning_fp32    the same with probe_precision=same (an fp32 probe, like the fp32 training)
  reuse           reuse mode at 25% x 50% (the authors' design: one forward with grad, loss masked)
  random          the Random x Random baseline at 25% x 50% (no probe: the floor of any pruner)
  auto            scoring=auto at 25% x 50%: times probe and reuse steps, then keeps the faster
                  (not in the default list: its first steps are the two modes alternating)
  stale           scoring=stale at 25% x 50% (default stale_reprobe_fraction): before the timed
                  steps it trains one untimed epoch over the same batches (probe mode, filling its
                  score cache), so the timed steps are a second epoch; before each, a fresh probe of
                  the same batch (untimed) gives the kept set that fresh scores would select, and
                  stale_vs_fresh_jaccard is the mean Jaccard of the two kept sets
--random-init uses SmolLM2-135M's architecture with random weights (timing does not depend on the
weights; for a machine that holds only the config, e.g. a GPU box without the model package);
--precision bf16 trains in bf16 mixed precision. On CUDA the extra peak memory is
torch.cuda.max_memory_allocated during each step above the allocation before it.
--batches grouped builds batches of rows of similar length instead (little padding anywhere).
Prints the median seconds per optimizer step of each, the ratios to `full`, and the extra peak
memory of training (RSS sampled every 5 ms during three steps, above the RSS of the built
trainer with its model, before any step), each
method measured alone in a fresh process. Writes
benchmarks/results/step_speed.json (field ratio_qtuning_to_full = qtuning / full).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METHODS = ["full_trl", "full", "qtuning", "qtuning_fp32", "reuse", "random", "stale"]
# --random-init shapes: the published configs of SmolLM2-135M / -360M / -1.7B (same tokenizer)
SHAPES = {
    "135m": {},
    "360m": dict(
        hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5
    ),
    "1.7b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32
    ),
}


def build(method: str, args) -> tuple:
    """(trainer, batches) for one method; every method gets the same batches."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from qtuning.data import load_records, split_records, to_dataset
    from qtuning.data.models import load_model_and_tokenizer
    from qtuning.training.sft_config import QTuningSFTConfig
    from qtuning.training.trainer import QTuningSFTTrainer

    torch.manual_seed(0)
    if args.random_init:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from qtuning.data.models import resolve_model

        folder = resolve_model(args.model)
        config = AutoConfig.from_pretrained(folder)
        config.update(SHAPES[args.architecture])
        # on the GPU: initialise there (a 1.7B model's random init on the CPU takes minutes)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = AutoModelForCausalLM.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        model, tokenizer = load_model_and_tokenizer(args.model)
    records, _ = load_records(args.data)
    train, _ = split_records(records, 0.0, seed=0, max_train=args.batch * (args.steps + args.warmup))
    common = dict(
        output_dir="/tmp/qtuning-step-speed",
        per_device_train_batch_size=args.batch,
        max_length=args.max_length,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        bf16=args.precision == "bf16",
        gradient_checkpointing=False,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    if method == "full_trl":
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common),
            train_dataset=to_dataset(train),
            processing_class=tokenizer,
            peft_config=lora,
        )
    else:
        settings = (
            dict(pruning_method="none")
            if method == "full"
            else dict(
                pruning_method="qtuning",
                sample_ratio=args.sample_ratio,
                token_ratio=args.token_ratio,
                scoring=method if method in ("reuse", "stale", "auto") else "probe",
                probe_precision="same" if method == "qtuning_fp32" else "auto",
            )
        )
        if method == "random":
            settings.update(sample_pruner="random", token_pruner="random")
        trainer = QTuningSFTTrainer(
            model=model,
            args=QTuningSFTConfig(**common, **settings),
            train_dataset=to_dataset(train),
            processing_class=tokenizer,
            peft_config=lora,
        )
    trainer.create_optimizer()
    # The same rows in the same order for every method: the prepared dataset, in index order, or
    # (--batches grouped) sorted by length first, so that no method pays much for padding.
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    if args.batches == "grouped":
        rows.sort(key=lambda r: len(r["input_ids"]))
    collate = trainer.data_collator
    batches = [
        collate(
            [
                {k: v for k, v in r.items() if k in ("input_ids", "labels", "qtuning_id")}
                for r in rows[i : i + args.batch]
            ]
        )
        for i in range(0, len(rows) - args.batch + 1, args.batch)
    ]
    return trainer, batches


CUDA_PEAK: dict[int, float] = {}  # id(trainer) -> the largest extra peak of its steps, MiB


def optimizer_step(trainer, batch, plans: list | None = None) -> float:
    """One optimizer step as the Trainer runs it (fetch + plan, forward/backward, update); seconds.
    plans: if given, the step's selection plans are appended to it."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    batches, num_items = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    trainer.current_gradient_accumulation_steps = len(batches)
    if plans is not None:
        from qtuning.training.trainer import PLAN_KEY

        plans.extend(b[PLAN_KEY] for b in batches if PLAN_KEY in b)  # (none in a reuse step)
    for inputs in batches:
        trainer.training_step(trainer.model, inputs, num_items)
    trainer.optimizer.step()
    trainer.model.zero_grad()
    if cuda:
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - before) / 2**20
        CUDA_PEAK[id(trainer)] = max(CUDA_PEAK.get(id(trainer), 0.0), extra)
    seconds = time.perf_counter() - start
    if hasattr(trainer, "_on_step_end"):  # ours: the step counter and step timing (scoring=auto reads them)
        trainer.state.global_step += 1
        trainer._on_step_end()
    return seconds


def fresh_plan(trainer, batch):
    """The plan that a fresh probe of `batch` gives with the trainer's current weights (stale's reference)."""
    from qtuning.engine.seeds import derive_seed
    from qtuning.training.distributed import plan_step

    part = trainer._score_micro_batch(dict(batch))
    seed = derive_seed(trainer.args.seed, trainer.state.global_step, "step")
    return plan_step([part], trainer.qt_config, trainer.args.selection_pool, seed=seed, progress=0.0)[0]


def jaccard(a, b) -> float:
    a, b = set(a.sample_keep.nonzero().flatten().tolist()), set(b.sample_keep.nonzero().flatten().tolist())
    return len(a & b) / max(1, len(a | b))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _memory_worker(method: str, args, queue) -> None:
    """Peak RSS during three optimizer steps, above the RSS of the built trainer (sampled every 5 ms)."""
    import threading

    trainer, batches = build(method, args)
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for batch in batches[:3]:
        optimizer_step(trainer, batch)
    done.set()
    thread.join()
    queue.put((peak[0] - base) / 2**20)


def peak_memory_mib(method: str, args) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(method, args, queue))
    proc.start()
    while proc.is_alive() or not queue.empty():
        try:
            value = queue.get(timeout=5)
            proc.join()
            return value
        except Exception:  # queue.Empty: still running
            continue
    raise RuntimeError(f"memory worker for {method} died with exit code {proc.exitcode} (killed for memory?)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="alpaca-demo")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per method")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--sample-ratio", type=float, default=0.25)
    parser.add_argument("--token-ratio", type=float, default=0.5)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument(
        "--batches",
        choices=["random", "grouped"],
        default="random",
        help="random rows per batch (as the Trainer draws them) or rows of similar length",
    )
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--random-init", action="store_true", help="the model's architecture, random weights")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="training precision")
    parser.add_argument(
        "--architecture",
        choices=sorted(SHAPES),
        default="135m",
        help="with --random-init: the shape of SmolLM2-135M, -360M or -1.7B",
    )
    parser.add_argument("--results-name", default=None, help="file name under benchmarks/results/")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory measurement (one fresh process per method, one after another)",
    )
    args = parser.parse_args()

    import torch

    if args.memory_only:
        memory = {}
        for m in args.methods:
            memory[m] = peak_memory_mib(m, args)
            print(f"{m:14s} extra peak RSS during a step: {memory[m]:.0f} MiB", flush=True)
        RESULTS.mkdir(exist_ok=True)
        out = {
            "benchmark": "step_speed_memory",
            "batches": args.batches,
            "batch": args.batch,
            "max_length": args.max_length,
            "extra_peak_rss_mib": memory,
        }
        (RESULTS / "step_speed_memory.json").write_text(json.dumps(out, indent=1) + "\n")
        return

    built = {m: build(m, args) for m in args.methods}
    batches = built[args.methods[0]][1]
    print(
        f"{len(batches)} {args.batches} batches of {args.batch} real rows, max_length {args.max_length}, "
        f"{torch.get_num_threads()} threads; methods rotate every step"
    )
    if "stale" in built:  # its first epoch, untimed: every row gets cached scores
        for batch in batches:
            optimizer_step(built["stale"][0], batch)
    times = {m: [] for m in args.methods}
    agreement = []  # stale: Jaccard of its kept set with a fresh probe's, per timed step
    for step, batch in enumerate(batches):
        order = args.methods[step % len(args.methods) :] + args.methods[: step % len(args.methods)]
        for m in order:
            plans = []
            reference = fresh_plan(built[m][0], batch) if m == "stale" else None
            seconds = optimizer_step(built[m][0], batch, plans)
            if reference is not None:
                agreement.append(jaccard(plans[0], reference))
            if step >= args.warmup:
                times[m].append(seconds)
        print(f"step {step}: " + ", ".join(f"{m} {times[m][-1]:.2f}s" for m in args.methods if times[m]), flush=True)
    cuda_peak = {m: CUDA_PEAK.get(id(built[m][0])) for m in args.methods} if torch.cuda.is_available() else {}
    chooser = built["auto"][0]._qt_chooser if "auto" in built else None  # what scoring=auto decided, from what
    auto = (
        None if chooser is None else {"chosen": chooser.chosen, "probe_s": chooser.probe_s, "reuse_s": chooser.reuse_s}
    )
    del built
    median = {m: statistics.median(v) for m, v in times.items()}
    # (in a fresh process per method: the models of this process would share the machine's memory)
    if cuda_peak:
        memory = cuda_peak
    else:
        memory = {} if args.no_memory else {m: peak_memory_mib(m, args) for m in args.methods}

    base = median["full"]
    print(f"\n{'method':14s} {'s/step':>8s} {'vs full':>8s} {'extra peak MiB':>15s}")
    for m in args.methods:
        mem = f"{memory[m]:15.0f}" if m in memory else f"{'-':>15s}"
        print(f"{m:14s} {median[m]:8.2f} {median[m] / base:8.3f} {mem}")
    result = {
        "benchmark": "step_speed",
        "batches": args.batches,
        "model": args.model,
        "data": args.data,
        "batch": args.batch,
        "max_length": args.max_length,
        "sample_ratio": args.sample_ratio,
        "token_ratio": args.token_ratio,
        "lora_r": 8,
        "precision": args.precision,
        "random_init": args.random_init,
        "architecture": args.architecture,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "measured_steps": args.steps,
        "median_s_per_step": median,
        "all_s_per_step": times,
        ("extra_peak_cuda_mib" if cuda_peak else "extra_peak_rss_mib"): memory,
        "ratio_random_to_full": median["random"] / base if "random" in median else None,
        "ratio_qtuning_to_full": median["qtuning"] / base if "qtuning" in median else None,
        "ratio_qtuning_fp32_probe_to_full": median["qtuning_fp32"] / base if "qtuning_fp32" in median else None,
        "ratio_reuse_to_full": median["reuse"] / base if "reuse" in median else None,
        "ratio_full_to_full_trl": base / median["full_trl"] if "full_trl" in median else None,
        "ratio_stale_to_full": median["stale"] / base if "stale" in median else None,
        "ratio_auto_to_full": median["auto"] / base if "auto" in median else None,
        "auto_choice": auto,
        "stale_vs_fresh_jaccard": statistics.mean(agreement) if agreement else None,
        "stale_vs_fresh_jaccard_per_step": agreement,
    }
    if result["ratio_qtuning_to_full"] is not None:
        print(f"\nratio_qtuning_to_full (b/a) = {result['ratio_qtuning_to_full']:.3f}   goal <= 0.35")
    if auto is not None:
        print(
            f"scoring=auto chose {auto['chosen']} (fastest probe step {min(auto['probe_s'], default=0):.2f}s, "
            f"reuse {min(auto['reuse_s'], default=0):.2f}s); ratio_auto_to_full = {result['ratio_auto_to_full']:.3f}"
        )
    if agreement:
        print(
            f"ratio_stale_to_full = {result['ratio_stale_to_full']:.3f}   goal <= 0.30; stale_vs_fresh_jaccard = "
            f"{result['stale_vs_fresh_jaccard']:.3f}   goal >= 0.8"
        )
    RESULTS.mkdir(exist_ok=True)
    name = args.results_name or ("step_speed.json" if args.batches == "random" else f"step_speed_{args.batches}.json")
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
