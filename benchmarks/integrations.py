"""Issue 26's acceptance for Axolotl 0.19.0 and LLaMA-Factory 0.9.5, through each framework's own entry point.

    .venv/bin/python benchmarks/integrations.py [--frameworks axolotl llamafactory] [--parts plans timing]
        [--threads N] [--timing-threads 2 [1]] [--pairs 4] [--repeats 1] [--keep-timing] [--weights]
    ENV/bin/python benchmarks/integrations.py replay DUMP OUT [--trainer sft|mixin]   # one replay alone

Per framework, in its cached venv (scripts/framework_env.sh; built the first time, several minutes):
1. install: qtuning changed none of the framework's packages, `pip check` clean (the script's record);
2. the run: the framework's own entry point (`axolotl train axolotl_qtuning.yaml`; the launcher
   `python -m qtuning.integrations.llamafactory llamafactory_qtuning.yaml`) trains SmolLM2-135M-Instruct
   with LoRA on the Alpaca demo rows, 10 optimizer steps of 16 rows, Q-Tuning at sample_ratio 0.25 and
   token_ratio 0.5 (tests/integration_configs). QTUNING_DUMP_BATCHES makes it dump every step's
   micro-batches as it collated them, its plans at full precision, its initial adapter and its settings
   (qtuning.integrations.instrument). Checked from its plan log: the steps, the kept share (25% of
   each pool), the tokens kept in Q2 samples (50%);
3. the replay: qtuning's OWN trainer, QTuningSFTTrainer in this (the project's) venv, loads the same base
   model and the framework's initial adapter (checked: its frozen weights' digest and every initial
   trainable tensor equal), and trains on exactly the dumped micro-batches, in the framework's order
   (a sequential sampler), with the framework's hyperparameters; it dumps its own plans
   the same way. Compared step by step: the micro-batches (equal), the kept sample ids and roles, the
   kept-token masks (equal), per-sample PPL and entropy (|difference| <= 1e-5, absolute; the relative
   difference is reported too), the learning rate. `--weights` also dumps the trainable weights before
   every step on both sides, to say where and by how much the weights part if later plans differ;
4. the cost: the same entry point, with QTUNING_BENCH_ALTERNATE: each step's micro-batches are trained
   twice, once by Q-Tuning and once by the framework's own full-data step (its trainer class without
   Q-Tuning: its get_batch_samples and compute_loss), alternating which goes first, OMP_NUM_THREADS=2
   (--timing-threads). The first pair is warm-up; a run's ratio is median(Q-Tuning step) / median(full
   step) over the rest, with the per-pair ratios and the load average during the steps; --repeats runs it
   again for the spread, and the headline ratio is the median over the runs at the first thread count.

--parts runs the plan check or the timing alone; the results file is updated after every part (the
other parts' figures stay). --threads (default: $OMP_NUM_THREADS, else 2) is the run's and the replay's
thread count (the same on both sides).

Writes benchmarks/results/integrations.json (`frameworks: {name: {version, pip_check_clean,
qtuning_changed_packages, steps, plans_equal_to_qtuning_trainer, step_ratio_to_framework_full, ...}}`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # tests.integration_configs.prepare

FRAMEWORKS = {  # name -> (the Q-Tuning template, the distribution whose version is reported)
    "axolotl": "axolotl_qtuning",
    "llamafactory": "llamafactory_qtuning",
}
BATCH_KEY = {"axolotl": "micro_batch_size", "llamafactory": "per_device_train_batch_size"}
SMOKE = {"max_steps": 2, "batch": 4}  # --smoke: the whole pipeline in minutes; its figures mean nothing
SCORE_TOLERANCE = 1e-5  # absolute, on per-sample PPL and entropy
SAMPLE_RATIO, TOKEN_RATIO = 0.25, 0.5


def say(message: str) -> None:
    print(f"[integrations] {message}", flush=True)


class FrameworkUnavailable(RuntimeError):
    """The framework's venv cannot be built on this machine (the script's one-line reason)."""


# ---------------------------------------------------------------- environments and runs
def framework_env(name: str) -> tuple[Path, dict, str]:
    """(the venv's folder, its qtuning-install.json, the script's output), building the venv the first time."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "framework_env.sh"), name], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode == 3:
        raise FrameworkUnavailable([line for line in proc.stdout.splitlines() if line.strip()][-1])
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/framework_env.sh {name} failed (exit {proc.returncode}):\n{output}")
    env = Path(proc.stdout.strip().splitlines()[-1].split(" ready at ")[1])
    return env, json.loads((env / "qtuning-install.json").read_text()), output


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "2"))


def environ_for(env: Path | None, threads: int, **extra: str) -> dict:
    """The environment of a run in `env` (None: this venv) with `threads` CPU threads."""
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    if env is not None:
        environ["PATH"] = f"{env / 'bin'}:{environ.get('PATH', '')}"  # Axolotl execs `accelerate launch`
    environ.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        AXOLOTL_DO_NOT_TRACK="1",  # else its telemetry retries a host it cannot reach
        # the replay uses the framework run's thread count: reductions split across threads round alike
        OMP_NUM_THREADS=str(threads),
    )
    environ.update(extra)
    return environ


def run_framework(
    name: str,
    env: Path,
    config: Path,
    output_dir: Path,
    overrides: dict | None = None,
    threads: int | None = None,
    **extra_env: str,
) -> subprocess.CompletedProcess:
    """The framework's own entry point on `config`, writing to output_dir; key=value overrides as it takes them."""
    values = {"output_dir": str(output_dir), **(overrides or {})}
    if name == "axolotl":
        command = ["axolotl", "train", config.name, *(f"--{k.replace('_', '-')}={v}" for k, v in values.items())]
    else:
        command = ["qtuning", "llamafactory", config.name]
        command += [f"{k}={v}" for k, v in values.items()]
    started = time.perf_counter()
    proc = subprocess.run(
        command,
        cwd=config.parent,
        env=environ_for(env, threads or default_threads(), **extra_env),
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    proc.seconds = round(time.perf_counter() - started, 1)
    (output_dir.parent / f"{output_dir.name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{name}: `{' '.join(command)}` exited {proc.returncode}; log {output_dir}.log:\n{proc.stderr[-3000:]}"
        )
    return proc


def read_plans(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "qtuning_plans.jsonl").read_text().splitlines() if line]


def kept_shares(plans: list[dict]) -> list[dict]:
    """Per plan: the kept share of the pool, and of the Q2 samples' response tokens, the share kept."""
    out = []
    for plan in plans:
        samples = plan["samples"]
        q2 = [i for i, role in enumerate(samples["role"]) if role == 2]
        q2_tokens = sum(samples["trainable_tokens"][i] for i in q2)
        out.append(
            {
                "step": plan["step"],
                "pool": plan["pool_size"],
                "kept": plan["num_kept"],
                "kept_share": plan["num_kept"] / plan["pool_size"],
                "q2_samples": len(q2),
                "q2_token_share": sum(samples["kept_tokens"][i] for i in q2) / q2_tokens if q2_tokens else None,
            }
        )
    return out


# ---------------------------------------------------------------- the replay (runs in any venv with qtuning)
def replay(dump: Path, out: Path, trainer_kind: str = "sft", weights: bool = False) -> dict:
    """qtuning's own trainer over a framework run's dumped micro-batches; dumps its plans in out/dump."""
    import dataclasses

    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qtuning.data.row_ids import ID_KEY
    from qtuning.engine.training_config import QTuningTrainingConfig
    from qtuning.integrations import instrument

    meta = json.loads((dump / "meta.json").read_text())
    fw_args = meta["args"]
    steps = [torch.load(p, weights_only=True) for p in sorted(dump.glob("step-*.pt"))]
    micro = {len(s["batches"]) for s in steps}
    rows = {len(b["input_ids"]) for s in steps for b in s["batches"]}
    if len(micro) != 1 or len(rows) != 1:
        raise ValueError(f"{dump}: micro-batches per step {micro}, rows per micro-batch {rows}: expected one of each")
    # one dataset row per collated row, in the framework's order, every tensor as it collated it
    dtypes = {k: v.dtype for k, v in steps[0]["batches"][0].items()}
    records = [
        {k: v[i].tolist() for k, v in b.items()}
        for s in steps
        for b in s["batches"]
        for i in range(len(b["input_ids"]))
    ]

    def collate(examples):  # rows of one micro-batch share the framework's padded width: stack them
        return {k: torch.tensor([e[k] for e in examples], dtype=dtypes[k]) for k in examples[0]}

    model = AutoModelForCausalLM.from_pretrained(
        meta["name_or_path"], attn_implementation=meta["attn_implementation"]
    ).to(getattr(torch, meta["model_dtype"]))
    model = PeftModel.from_pretrained(model, dump / "initial_adapter", is_trainable=True)
    initial = torch.load(dump / "initial_trainable.pt", weights_only=True)
    mine = instrument.trainable_state(model)
    checks = {
        "frozen_digest_equal": instrument.frozen_digest(model) == meta["frozen_digest"],
        "initial_trainable_equal": mine.keys() == initial.keys()
        and all(torch.equal(mine[k], initial[k]) for k in initial),
    }
    if not all(checks.values()):
        raise AssertionError(f"the replay's initial model differs from the framework's: {checks}")

    settings = {k: v for k, v in meta["qtuning"].items()}
    settings["plan_log"] = True
    training = dict(
        output_dir=str(out),
        per_device_train_batch_size=rows.pop(),
        gradient_accumulation_steps=micro.pop(),
        max_steps=len(steps),
        remove_unused_columns=False,  # every column the framework's collator produced reaches the model
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=False,
        fp16=False,
        **{
            k: fw_args[k]
            for k in (
                "learning_rate",
                "lr_scheduler_type",
                "lr_scheduler_kwargs",
                "warmup_steps",
                "weight_decay",
                "adam_beta1",
                "adam_beta2",
                "adam_epsilon",
                "max_grad_norm",
                "optim",
                "seed",
            )
            if fw_args.get(k) is not None
        },
    )
    dump_out = out / "dump"
    if trainer_kind == "sft":  # QTuningSFTTrainer, the trainer of `qtuning train`
        from qtuning.training.sft_config import QTuningSFTConfig
        from qtuning.training.trainer import QTuningSFTTrainer

        base = QTuningSFTTrainer
        config = QTuningSFTConfig(**training, **settings, dataset_kwargs={"skip_prepare_dataset": True})
        kwargs = {"args": config}
    else:  # QTuningTrainerMixin on transformers.Trainer (a venv without trl >= 1.16)
        from transformers import Trainer, TrainingArguments

        from qtuning.training.trainer_mixin import QTuningTrainerMixin

        base = type("QTuningTrainer", (QTuningTrainerMixin, Trainer), {})
        kwargs = {"args": TrainingArguments(**training), "qtuning_config": QTuningTrainingConfig(**settings)}

    class Replay(instrument.Instrumented, base):
        qtuning_framework = "qtuning"

        def instrument_settings(self):  # the replay's own plans, dumped as the framework's were
            return str(dump_out), weights, None

        def _get_train_sampler(self, *args, **kwargs):  # the framework's batches, in its order
            return torch.utils.data.SequentialSampler(self.train_dataset)

    trainer = Replay(
        model=model,
        train_dataset=Dataset.from_list(records),
        data_collator=collate,
        processing_class=AutoTokenizer.from_pretrained(meta["name_or_path"]),
        **kwargs,
    )
    assert ID_KEY in trainer.train_dataset.column_names  # the framework's row ids, kept as they are
    started = time.perf_counter()
    trainer.train()
    return {
        "trainer": "QTuningSFTTrainer" if trainer_kind == "sft" else "QTuningTrainerMixin on transformers.Trainer",
        "versions": instrument._versions("qtuning"),
        "settings": dataclasses.asdict(trainer.qt_settings.training_config())
        if hasattr(trainer.qt_settings, "training_config")
        else None,
        "seconds": round(time.perf_counter() - started, 1),
        **checks,
    }


def run_replay(
    dump: Path,
    out: Path,
    python: str = sys.executable,
    trainer_kind: str = "sft",
    weights: bool = False,
    threads: int | None = None,
) -> dict:
    """The replay in a fresh process of `python` (this venv's, or a framework venv's with --trainer mixin)."""
    command = [python, str(Path(__file__).resolve()), "replay", str(dump), str(out), "--trainer", trainer_kind]
    command += ["--weights"] if weights else []
    environ = environ_for(None, threads or default_threads())
    proc = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=3 * 3600)
    (out.parent / f"{out.name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"replay `{' '.join(command)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads((out / "replay.json").read_text())


# ---------------------------------------------------------------- the comparison
def compare(framework_dump: Path, replay_dump: Path, tolerance: float = SCORE_TOLERANCE) -> dict:
    """Step by step: the same micro-batches? the same plans (kept ids, roles, kept tokens; scores within
    `tolerance`, absolute)? and, where both dumped them, how far apart the weights were before the step."""
    import torch

    def load(folder: Path) -> list[dict]:
        return [torch.load(p, weights_only=True) for p in sorted(folder.glob("step-*.pt"))]

    theirs, ours = load(framework_dump), load(replay_dump)
    steps = []
    for a, b in zip(theirs, ours):
        row = {"step": a["step"], "lr": [a["lr"], b["lr"]], "lr_equal": a["lr"] == b["lr"]}
        row["batches_equal"] = len(a["batches"]) == len(b["batches"]) and all(
            x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a["batches"], b["batches"])
        )
        kept_a, kept_b, ppl, ent, rel, tokens, roles = [], [], 0.0, 0.0, 0.0, True, True
        for batch, pa, pb in zip(a["batches"], a["plans"], b["plans"]):
            ids = batch["qtuning_id"].tolist()
            kept_a += [i for i, r in zip(ids, pa["kept_role"].tolist()) if r]
            kept_b += [i for i, r in zip(ids, pb["kept_role"].tolist()) if r]
            roles &= torch.equal(pa["kept_role"], pb["kept_role"]) and torch.equal(pa["quadrant"], pb["quadrant"])
            tokens &= torch.equal(pa["token_keep"], pb["token_keep"])
            ppl = max(ppl, float((pa["sample_ppl"] - pb["sample_ppl"]).abs().max()))
            ent = max(ent, float((pa["sample_entropy"] - pb["sample_entropy"]).abs().max()))
            for key in ("sample_ppl", "sample_entropy"):
                scale = pa[key].abs().clamp(min=1e-12)
                rel = max(rel, float(((pa[key] - pb[key]).abs() / scale).max()))
        row.update(
            kept_ids=kept_a,
            kept_ids_equal=kept_a == kept_b,
            roles_equal=roles,
            token_keep_equal=tokens,
            max_abs_diff_ppl=ppl,
            max_abs_diff_entropy=ent,
            max_rel_diff_scores=rel,
        )
        row["scores_within_tolerance"] = ppl <= tolerance and ent <= tolerance
        row["plans_equal"] = (
            row["batches_equal"] and row["kept_ids_equal"] and roles and tokens and row["scores_within_tolerance"]
        )
        weights_a = framework_dump / f"trainable-{a['step']:04d}.pt"
        weights_b = replay_dump / f"trainable-{a['step']:04d}.pt"
        if weights_a.is_file() and weights_b.is_file():
            wa, wb = torch.load(weights_a, weights_only=True), torch.load(weights_b, weights_only=True)
            row["max_abs_diff_weights_before_step"] = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        steps.append(row)
    first = next((row["step"] for row in steps if not row["plans_equal"]), None)
    return {
        "steps_compared": len(steps),
        "steps_framework": len(theirs),
        "steps_replay": len(ours),
        "tolerance": f"|PPL difference| and |entropy difference| <= {tolerance} (absolute)",
        "all_equal": first is None and len(theirs) == len(ours) and len(steps) > 0,
        "first_differing_step": first,
        "steps": steps,
    }


# ---------------------------------------------------------------- the cost
def timing(
    name: str, env: Path, config: Path, work: Path, pairs: int, repeat: int, threads: int, smoke: bool = False
) -> dict:
    """Q-Tuning's step against the framework's own full step, alternating on the same micro-batches."""
    out = work / f"{name}-timing-{threads}t-{repeat}"
    record = out.parent / f"{out.name}-steps.jsonl"
    started = time.perf_counter()
    load_before = os.getloadavg()
    overrides = {"max_steps": 2 * pairs, **({BATCH_KEY[name]: SMOKE["batch"]} if smoke else {})}
    run_framework(name, env, config, out, overrides, threads, QTUNING_BENCH_ALTERNATE=str(record))
    steps = [json.loads(line) for line in record.read_text().splitlines() if line]
    for s in steps:  # both steps of a pair trained the same micro-batches
        assert s["ids"] == steps[2 * s["pair"]]["ids"], s
    measured = [s for s in steps if s["pair"] >= 1]  # pair 0 is warm-up
    seconds = {mode: [s["seconds"] for s in measured if s["mode"] == mode] for mode in ("qtuning", "full")}
    by_pair = {}
    for s in measured:
        by_pair.setdefault(s["pair"], {})[s["mode"]] = s["seconds"]
    pair_ratios = [round(p["qtuning"] / p["full"], 3) for _, p in sorted(by_pair.items()) if len(p) == 2]
    ratio = statistics.median(seconds["qtuning"]) / statistics.median(seconds["full"])
    loads = [s["loadavg_1m"] for s in measured]
    return {
        "omp_num_threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),  # unset: OpenMP's default (threads spin a while)
        "ratio": round(ratio, 3),
        "median_s": {mode: round(statistics.median(v), 3) for mode, v in seconds.items()},
        "step_s": seconds,
        "pair_ratios": pair_ratios,
        "warmup_pairs_skipped": 1,
        "loadavg_1m_during": [min(loads), max(loads)],
        "loadavg_before": [round(x, 2) for x in load_before],
        "wall_s": round(time.perf_counter() - started, 1),
    }


# ---------------------------------------------------------------- one framework
def check_plans(name: str, env: Path, config: Path, work: Path, args) -> dict:
    """The run through the framework's entry point (dumped), its plan log, and the replay compared with it."""
    out, dump = work / f"{name}-run", work / f"{name}-dump"
    extra = {"QTUNING_DUMP_BATCHES": str(dump), "QTUNING_DUMP_WEIGHTS": "1" if args.weights else "0"}
    say(f"{name}: training through its own entry point, OMP_NUM_THREADS={args.threads} (log {out}.log)")
    overrides = {"max_steps": SMOKE["max_steps"], BATCH_KEY[name]: SMOKE["batch"]} if args.smoke else None
    proc = run_framework(name, env, config, out, overrides, threads=args.threads, **extra)
    plans = read_plans(out)
    shares = kept_shares(plans)
    summary = json.loads((out / "qtuning_summary.json").read_text())
    say(
        f"{name}: {summary['optimizer_steps']} optimizer steps in {proc.seconds} s; kept shares "
        f"{sorted({round(s['kept_share'], 4) for s in shares})} of pools {sorted({s['pool'] for s in shares})}; "
        f"Q2 token shares {[round(s['q2_token_share'], 3) for s in shares if s['q2_token_share'] is not None]}"
    )
    meta = json.loads((dump / "meta.json").read_text())
    result = {
        "version": meta["versions"].get(name),
        "steps": summary["optimizer_steps"],
        "framework_versions": meta["versions"],
        "entry_point": " ".join(proc.args[:2] if name == "axolotl" else proc.args[:3]),
        "run_seconds": proc.seconds,
        "omp_num_threads": args.threads,
        "kept_shares": shares,
        "summary": {k: summary.get(k) for k in ("samples_scored", "samples_trained", "optimizer_steps")},
    }
    say(f"{name}: replaying its {len(plans)} steps with QTuningSFTTrainer in {sys.executable}")
    replay_info = run_replay(dump, work / f"{name}-replay", weights=args.weights, threads=args.threads)
    comparison = compare(dump, work / f"{name}-replay" / "dump")
    for row in comparison["steps"]:
        weights = row.get("max_abs_diff_weights_before_step")
        say(
            f"{name}: step {row['step']}: kept ids {row['kept_ids']} {'equal' if row['kept_ids_equal'] else 'DIFFER'}, "
            f"kept tokens {'equal' if row['token_keep_equal'] else 'DIFFER'}, max |dPPL| {row['max_abs_diff_ppl']:.2e}, "
            f"max |dEnt| {row['max_abs_diff_entropy']:.2e}"
            + (f", weights before the step max |d| {weights:.2e}" if weights is not None else "")
        )
    say(
        f"{name}: plans equal to qtuning's own trainer: {comparison['all_equal']} "
        f"(first differing step: {comparison['first_differing_step']})"
    )
    result.update(
        plans_equal_to_qtuning_trainer=comparison["all_equal"],
        first_differing_step=comparison["first_differing_step"],
        replay=replay_info,
        comparison=comparison,
    )
    return result


def check_timing(name: str, env: Path, config: Path, work: Path, args, earlier: list[dict]) -> dict:
    """The alternating timed runs (added to `earlier` ones); the headline ratio: the median over the runs
    at the first of --timing-threads."""
    runs = list(earlier)
    for threads in args.timing_threads:
        for repeat in range(args.repeats):
            policy = f" OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}" if os.environ.get("OMP_WAIT_POLICY") else ""
            say(
                f"{name}: timing {repeat + 1}/{args.repeats} at OMP_NUM_THREADS={threads}{policy}: {args.pairs} pairs of steps "
                "(Q-Tuning, the framework's full step) on the same micro-batches"
            )
            run = timing(name, env, config, work, args.pairs, len(runs), threads, args.smoke)
            runs.append(run)
            say(
                f"{name}: median step {run['median_s']['qtuning']} s Q-Tuning vs {run['median_s']['full']} s full: "
                f"ratio {run['ratio']} (per pair {run['pair_ratios']}; load average {run['loadavg_1m_during']})"
            )
    headline = args.timing_threads[0]
    ratios = [r["ratio"] for r in runs if r["omp_num_threads"] == headline and not r.get("omp_wait_policy")]
    return {
        # the headline: runs at the first --timing-threads, OpenMP's default wait policy
        "step_ratio_to_framework_full": statistics.median(ratios),
        "step_ratio_runs": ratios,
        "step_ratio_spread": [min(ratios), max(ratios)],
        "step_ratio_threads": headline,
        "timing": runs,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=list(FRAMEWORKS))
    parser.add_argument("--parts", nargs="+", default=["plans", "timing"], choices=["plans", "timing"])
    parser.add_argument("--pairs", type=int, default=4, help="timed step pairs per run (the first is warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per thread count")
    parser.add_argument("--keep-timing", action="store_true", help="add to the timed runs in --out, not replace them")
    parser.add_argument("--weights", action="store_true", help="dump the weights before every step on both sides")
    parser.add_argument("--threads", type=int, default=default_threads(), help="OMP_NUM_THREADS of the run and replay")
    parser.add_argument("--timing-threads", type=int, nargs="+", default=[2], help="OMP_NUM_THREADS of the timed runs")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "integrations.json")
    parser.add_argument("--smoke", action="store_true", help="2 steps of 4 rows, 2 pairs: checks the pipeline only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs = 2

    from tests.integration_configs.prepare import prepare

    work = args.work or Path(tempfile.mkdtemp(prefix="qtuning-integrations-"))
    inputs = prepare(work)
    say(f"work folder {work}; load average {os.getloadavg()}")
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.update(
        benchmark="integrations",
        command="python benchmarks/integrations.py " + " ".join(sys.argv[1:] if argv is None else argv),
        machine={"platform": platform.platform(), "cpus": os.cpu_count()},
        model="SmolLM2-135M-Instruct, LoRA r 8 alpha 16 on every linear layer, fp32",
        data="the first 272 rows of the Alpaca demo (tests/integration_configs/prepare.py), at most 256 tokens "
        "(Axolotl drops longer rows, LLaMA-Factory truncates them); 16 rows per step",
        settings={"sample_ratio": SAMPLE_RATIO, "token_ratio": TOKEN_RATIO},
    )
    frameworks = results.setdefault("frameworks", {})
    failed = []
    for name in args.frameworks:
        entry = frameworks.setdefault(name, {})
        try:
            env, install, _ = framework_env(name)
        except FrameworkUnavailable as exc:
            say(f"{name}: CANNOT BE INSTALLED HERE: {exc}")
            entry.update(installable=False, reason=str(exc))
            failed.append(name)
            continue
        say(
            f"{name}: env {env} (torch {install['torch']}); qtuning changed "
            f"{install['qtuning_changed_packages'] or 'no packages'}; pip check "
            f"{'clean' if install['pip_check_clean'] else 'NOT clean'}"
        )
        entry.update(
            installable=True,
            pip_check_clean=install["pip_check_clean"],
            qtuning_changed_packages=install["qtuning_changed_packages"],
            qtuning_added_packages=install["qtuning_added_packages"],
            torch=install["torch"],
            install_seconds=install["install_seconds"],
        )
        config = Path(inputs[FRAMEWORKS[name]])
        for part in args.parts:
            entry[f"{part}_command"] = results["command"]
            if part == "plans":
                entry.update(check_plans(name, env, config, work, args), plans_date=now())
            else:
                earlier = entry.get("timing", []) if args.keep_timing else []
                entry.update(check_timing(name, env, config, work, args, earlier), timing_date=now())
            results["date"] = now()
            args.out.write_text(json.dumps(results, indent=1) + "\n")  # after every part: nothing lost
            say(f"{name}: {part} written to {args.out}")
    for name, r in frameworks.items():
        say(
            f"{name} {r.get('version')}: steps {r.get('steps')}, plans equal {r.get('plans_equal_to_qtuning_trainer')}, "
            f"step ratio {r.get('step_ratio_to_framework_full')} (runs {r.get('step_ratio_runs')}), pip check clean "
            f"{r.get('pip_check_clean')}, qtuning changed {r.get('qtuning_changed_packages')}"
        )
    return 1 if failed else 0


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def replay_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="integrations.py replay")
    parser.add_argument("dump", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--trainer", choices=["sft", "mixin"], default="sft")
    parser.add_argument("--weights", action="store_true")
    args = parser.parse_args(argv)
    info = replay(args.dump, args.out, args.trainer, args.weights)
    (args.out / "replay.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["replay"]:
        sys.exit(replay_main(sys.argv[2:]))
    sys.exit(main())
