"""Does Q-Tuning win the gamble at CPU scale? A resumable grid of methods x budgets x seeds.

    python benchmarks/replicate.py                 # run every missing cell, then write the results
    python benchmarks/replicate.py --only full,qtuning_25x50 --seeds 0,1,2
    python benchmarks/replicate.py --report        # rewrite the results from the cached cells only

The task (chosen to fit a 2-core CPU and to separate the arms; see benchmarks/results/replication.md):
SmolLM2-135M-Instruct + LoRA (r 8, alpha 16, all linear layers) fine-tuned for one epoch on
512 TriviaQA questions (closed book, the primary answer as the response), evaluated on 500
other TriviaQA questions by greedy generation, SQuAD-style exact match and F1 against every
accepted answer. No evaluation question appears among the training questions (compared after
lower-casing and whitespace folding). Nothing here is tuned on the evaluation set.

The noise study trains on a copy of the training set in which 20% of the rows have their
answer swapped with another corrupted row's (a derangement), and reads from the plan logs
where the corrupted rows land on the EU plane and what share of each method's kept set they
are.

Each cell runs in its own process and is cached under .replication/cells/ (git-ignored):
an interrupted grid resumes where it stopped. After every cell the summary is rewritten to
benchmarks/results/replication.json and benchmarks/results/replication.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".replication"
CELLS = WORK / "cells"
RESULTS_JSON = ROOT / "benchmarks" / "results" / "replication.json"
RESULTS_MD = ROOT / "benchmarks" / "results" / "replication.md"

TRAIN_SIZE = 512
EVAL_SIZE = 500
NOISE_FRACTION = 0.2
SPLIT_SEED = 1234  # the data split; the cells' seeds only change the training randomness
METRIC = "triviaqa_exact_match"
EVAL_BATCH = 32

# The training recipe shared by every arm: benchmarks/recipe_base.yaml, with shorter rows (TriviaQA).
BASE = {**yaml.safe_load((ROOT / "benchmarks" / "recipe_base.yaml").read_text()), "max_length": 128}

# arm -> (training set, config overrides); None = no training (zero-shot)
ARMS: dict[str, tuple[str, dict] | None] = {
    "zero_shot": None,
    "full": ("train", dict(pruning_method="none")),
    "random_25x50": ("train", dict(sample_pruner="random", token_pruner="random", sample_ratio=0.25, token_ratio=0.5)),
    "qtuning_25x50": ("train", dict(sample_ratio=0.25, token_ratio=0.5)),
    "qtuning_12.5x50": ("train", dict(sample_ratio=0.125, token_ratio=0.5)),
    "qtuning_6.25x50": ("train", dict(sample_ratio=0.0625, token_ratio=0.5)),
    "infobatch_random_25x50": (
        "train",
        dict(sample_pruner="infobatch", token_pruner="random", sample_ratio=0.25, token_ratio=0.5),
    ),
    # the asymmetric ablation at 25%: no token pruning / Q2 only (= qtuning_25x50) / Q2 and Q4
    "qtuning_25x100_no_token_pruning": ("train", dict(sample_ratio=0.25, token_ratio=1.0)),
    "qtuning_25x50_q2_and_q4": ("train", dict(sample_ratio=0.25, token_ratio=0.5, prune_tokens_in="q2_q4")),
    # the noise study: 20% of the training answers swapped
    "noisy_full": ("train_noisy", dict(pruning_method="none")),
    "noisy_random_25x50": (
        "train_noisy",
        dict(sample_pruner="random", token_pruner="random", sample_ratio=0.25, token_ratio=0.5),
    ),
    "noisy_qtuning_25x50": ("train_noisy", dict(sample_ratio=0.25, token_ratio=0.5)),
}
MAIN_ARMS = ["full", "random_25x50", "qtuning_25x50", "qtuning_12.5x50"]

# The paper's numbers next to which ours are shown (docs/algorithm.md section 7; other models and data, far larger).
PAPER = {
    "SmolLM2-1.7B, MathInstruct, 25% x 50% (GSM8K/MATH avg)": {"full": 9.31, "qtuning": 12.87, "random": 8.44},
    "LLaMA2-7B, WizardLM, 12.5% x 50% (5 benchmarks)": {"full": 35.36, "qtuning": 37.74, "random": 33.98},
    "Mistral-7B, WizardLM, 12.5% x 50%": {"full": 45.84, "qtuning": 46.92, "random": 42.73},
    "Qwen3-8B, OpenHermes, 12.5% x 50%": {"full": 55.45, "qtuning": 60.19, "random": 52.96},
}


# ------------------------------------------------------------------------------------------- data
def _norm_question(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def prepare_data() -> dict[str, Path]:
    """Write train / train_noisy / eval record files once (deterministic), return their paths."""
    WORK.mkdir(parents=True, exist_ok=True)
    paths = {name: WORK / f"{name}.jsonl" for name in ("train", "train_noisy", "eval")}
    meta_path = WORK / "data_meta.json"
    if all(p.exists() for p in paths.values()) and meta_path.exists():
        return paths
    from qtuning.data.builtin import load_builtin_records

    records = load_builtin_records("triviaqa")
    order = list(range(len(records)))
    random.Random(SPLIT_SEED).shuffle(order)
    eval_rows = [records[i] for i in order[:EVAL_SIZE]]
    held_out = {_norm_question(r["prompt"]) for r in eval_rows}
    train_rows, seen = [], set()
    for i in order[EVAL_SIZE:]:
        q = _norm_question(records[i]["prompt"])
        if q in held_out or q in seen:  # no training question equals an evaluation question (or another)
            continue
        seen.add(q)
        train_rows.append(records[i])
        if len(train_rows) == TRAIN_SIZE:
            break
    # Corrupt 20% of the training rows: a derangement of their answers among themselves.
    rng = random.Random(SPLIT_SEED + 1)
    corrupted = sorted(rng.sample(range(TRAIN_SIZE), int(NOISE_FRACTION * TRAIN_SIZE)))
    shifted = corrupted[1:] + corrupted[:1]  # each takes the next one's answer: no row keeps its own
    noisy = [dict(r) for r in train_rows]
    for target, source in zip(corrupted, shifted):
        noisy[target]["response"] = train_rows[source]["response"]
    # a swap between questions that share an answer corrupts nothing: count the truly corrupted rows
    truly = [i for i in corrupted if _norm_question(noisy[i]["response"]) != _norm_question(train_rows[i]["response"])]

    def write(path: Path, rows: list[dict]) -> None:
        with open(path, "w") as handle:
            for r in rows:
                handle.write(json.dumps({"id": r["id"], "prompt": r["prompt"], "completion": r["response"]}) + "\n")

    write(paths["train"], train_rows)
    write(paths["train_noisy"], noisy)
    (WORK / "eval_records.json").write_text(json.dumps(eval_rows))
    write(paths["eval"], eval_rows)
    meta_path.write_text(
        json.dumps(
            {
                "source": "triviaqa (built-in: rc.wikipedia.nocontext validation)",
                "split_seed": SPLIT_SEED,
                "train": len(train_rows),
                "eval": len(eval_rows),
                "corrupted_ids": [train_rows[i]["id"] for i in truly],
                "swapped_rows": len(corrupted),
                "truly_corrupted_rows": len(truly),
            },
            indent=1,
        )
    )
    return paths


# ------------------------------------------------------------------------------------------- one cell
def run_cell(arm: str, seed: int) -> dict:
    """Train (unless zero-shot) and evaluate one cell in this process; returns its record."""
    import torch

    from qtuning.data.models import load_model_and_tokenizer
    from qtuning.evaluation import evaluate

    torch.set_num_threads(int(os.environ.get("QTUNING_THREADS", os.cpu_count() or 1)))
    paths = prepare_data()
    eval_records = json.loads((WORK / "eval_records.json").read_text())
    record: dict = {"arm": arm, "seed": seed, "threads": torch.get_num_threads()}
    spec = ARMS[arm]
    started = time.perf_counter()
    if spec is None:
        model, tokenizer = load_model_and_tokenizer(BASE["model"])
        record["train_wall_clock_s"] = 0.0
    else:
        from qtuning.training.run import build_trainer
        from qtuning.training.sft_config import train_configs

        dataset, overrides = spec
        out = WORK / "runs" / f"{arm}__s{seed}"
        run, cfg = train_configs(dict(output_dir=str(out), data=str(paths[dataset]), seed=seed, **BASE, **overrides))
        trainer, _ = build_trainer(run, cfg)
        train_started = time.perf_counter()
        trainer.train()
        record["train_wall_clock_s"] = time.perf_counter() - train_started
        record["summary"] = {k: v for k, v in trainer.qtuning_summary.items() if isinstance(v, (int, float))}
        record["final_train_loss"] = next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None)
        model, tokenizer = trainer.model, trainer.processing_class
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        from qtuning.data.plan_log import plan_log_path

        record["plan_log"] = str(plan_log_path(out)) if plan_log_path(out).exists() else None
    model.eval()
    eval_started = time.perf_counter()
    result = evaluate(
        model, tokenizer, ["triviaqa"], records={"triviaqa": eval_records}, progress=False, batch_size=EVAL_BATCH
    )
    record["eval_wall_clock_s"] = time.perf_counter() - eval_started
    record["metrics"] = result["tasks"]["triviaqa"]
    record["wall_clock_s"] = time.perf_counter() - started
    return record


def priority_order(arms: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The cells in the order that gets every required arm measured soonest: the main arms' first two
    seeds, then one seed of every other arm (ablations, then the noise study), then the main arms'
    remaining seeds, then the others' remaining seeds. Zero-shot is deterministic: one cell."""
    main = [a for a in arms if a in ["zero_shot", *MAIN_ARMS]]
    other = [a for a in arms if a not in main]
    order = [(a, s) for s in seeds[:2] for a in main]
    order += [(a, s) for s in seeds[:1] for a in other]
    order += [(a, s) for s in seeds[2:] for a in main]
    order += [(a, s) for s in seeds[1:] for a in other]
    return list(dict.fromkeys((a, 0 if ARMS[a] is None else s) for a, s in order))


def cell_path(arm: str, seed: int) -> Path:
    return CELLS / f"{arm}__s{seed}.json"


# ------------------------------------------------------------------------------------------- the noise study
def noise_study(cells: list[dict]) -> dict:
    """Where the corrupted rows land (noisy Q-Tuning's plan logs) and their share of each kept set."""
    meta = json.loads((WORK / "data_meta.json").read_text())
    from qtuning.data import load_records, split_records

    out: dict = {
        "corrupted_rows": meta["truly_corrupted_rows"],
        "training_rows": meta["train"],
        "corrupted_share_of_data": meta["truly_corrupted_rows"] / meta["train"],
    }
    corrupted_ids = set(meta["corrupted_ids"])
    per_arm: dict[str, list[dict]] = {}
    for cell in cells:
        if not cell["arm"].startswith("noisy_") or not cell.get("plan_log") or not Path(cell["plan_log"]).exists():
            continue
        records, _ = load_records(str(WORK / "train_noisy.jsonl"))
        train_rows, _ = split_records(records, 0.0, cell["seed"])  # the trainer's row order (qtuning_id)
        is_corrupted = [r["id"] in corrupted_ids for r in train_rows]
        quadrants = {q: [0, 0] for q in range(5)}  # quadrant -> [corrupted seen, clean seen]
        kept = [0, 0]  # corrupted kept, total kept
        for line in open(cell["plan_log"]):
            samples = json.loads(line)["samples"]
            for sid, quadrant, role in zip(samples["id"], samples["quadrant"], samples["role"]):
                bad = is_corrupted[sid]
                quadrants[quadrant][0 if bad else 1] += 1
                if role:
                    kept[0] += bad
                    kept[1] += 1
        corrupted_total = sum(v[0] for v in quadrants.values())
        clean_total = sum(v[1] for v in quadrants.values())
        entry = {"seed": cell["seed"], "corrupted_share_of_kept": kept[0] / max(1, kept[1]), "kept": kept[1]}
        if cell["arm"] != "noisy_random_25x50":
            entry["quadrant_share_corrupted"] = {
                f"Q{q}": quadrants[q][0] / max(1, corrupted_total) for q in range(1, 5)
            }
            entry["quadrant_share_clean"] = {f"Q{q}": quadrants[q][1] / max(1, clean_total) for q in range(1, 5)}
        per_arm.setdefault(cell["arm"], []).append(entry)
    out["per_arm"] = per_arm
    return out


# ------------------------------------------------------------------------------------------- results
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_results() -> dict:
    cells = [json.loads(p.read_text()) for p in sorted(CELLS.glob("*.json"))]
    summary = {}
    for arm in ARMS:
        mine = [c for c in cells if c["arm"] == arm]
        if not mine:
            continue
        f1 = [100 * c["metrics"]["f1"] for c in mine]
        em = [100 * c["metrics"]["exact_match"] for c in mine]
        mean, std = _mean_std(em)  # the primary metric: exact match, TriviaQA's standard one
        f1_mean, f1_std = _mean_std(f1)
        trained = [
            c["summary"].get("samples_trained", 0) / max(1, c["summary"].get("samples_scored") or 1)
            for c in mine
            if "summary" in c
        ]
        summary[arm] = {
            "mean": round(mean, 3),
            "std": round(std, 3),
            "n": len(mine),
            "seeds": [c["seed"] for c in mine],
            "wall_clock_s": round(statistics.fmean(c["wall_clock_s"] for c in mine), 1),
            "train_wall_clock_s": round(statistics.fmean(c["train_wall_clock_s"] for c in mine), 1),
            "f1_mean": round(f1_mean, 3),
            "f1_std": round(f1_std, 3),
            "trained_sample_fraction": round(statistics.fmean(trained), 4) if trained else None,
            "tokens_trained": round(statistics.fmean(c["summary"]["tokens_trained"] for c in mine if "summary" in c))
            if any("summary" in c for c in mine)
            else 0,
        }
    meta = json.loads((WORK / "data_meta.json").read_text()) if (WORK / "data_meta.json").exists() else {}
    for v in summary.values():  # the evaluation's own noise: the binomial standard error of one cell's EM
        p_hat = v["mean"] / 100
        v["eval_standard_error"] = round(100 * math.sqrt(p_hat * (1 - p_hat) / EVAL_SIZE), 3)
    result = {
        "metric": METRIC,
        "metric_definition": "exact match (x100, SQuAD-style normalisation) of the greedy answer's first line with "
        "any accepted TriviaQA answer, mean over the evaluation questions; f1 likewise (token F1)",
        "task": {
            "data": meta.get("source"),
            "train_rows": meta.get("train"),
            "eval_rows": meta.get("eval"),
            "split_seed": SPLIT_SEED,
            "recipe": BASE,
            "arms": {a: (None if s is None else {"data": s[0], **s[1]}) for a, s in ARMS.items()},
        },
        "summary": summary,
        "comparisons": comparisons(summary),
        "noise": noise_study(cells) if meta else {},
        "paper": PAPER,
        "cells": len(cells),
    }
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(result, indent=1) + "\n")
    RESULTS_MD.write_text(render_markdown(result))
    return result


def comparisons(summary: dict) -> dict:
    """The differences the issue asks about, each with Welch's t over the seeds (None below 2 seeds each)."""
    pairs = [
        ("full", "zero_shot"),
        ("qtuning_25x50", "full"),
        ("qtuning_12.5x50", "full"),
        ("random_25x50", "full"),
        ("qtuning_25x50", "random_25x50"),
        ("qtuning_6.25x50", "full"),
        ("infobatch_random_25x50", "full"),
        ("noisy_qtuning_25x50", "noisy_random_25x50"),
        ("noisy_full", "full"),
    ]
    out = {}
    for a, b in pairs:
        if a not in summary or b not in summary:
            continue
        x, y = summary[a], summary[b]
        diff = x["mean"] - y["mean"]
        spread = math.sqrt(x["std"] ** 2 / x["n"] + y["std"] ** 2 / y["n"])
        welch = round(diff / spread, 2) if x["n"] > 1 and y["n"] > 1 and spread > 0 else None
        out[f"{a} - {b}"] = {"difference": round(diff, 3), "welch_t": welch}
    if "full" in summary and "zero_shot" in summary:
        gap = summary["full"]["mean"] - summary["zero_shot"]["mean"]
        out["task_check"] = {
            "full_minus_zero_shot": round(gap, 3),
            "full_seed_std": summary["full"]["std"],
            "passes": gap > summary["full"]["std"] and summary["full"]["n"] > 1,
            "rule": "the full-data arm must beat zero-shot by more than the seed-to-seed standard deviation",
        }
    return out


def render_markdown(result: dict) -> str:
    s = result["summary"]
    lines = [
        "# Replication at CPU scale: does Q-Tuning win the gamble?",
        "",
        "Written by `benchmarks/replicate.py` from the cells it ran (raw numbers: `results/replication.json`).",
        "Task: SmolLM2-135M-Instruct + LoRA r8, one epoch on "
        f"{result['task']['train_rows']} TriviaQA questions (closed book), evaluated on {result['task']['eval_rows']} "
        "other TriviaQA questions by greedy generation. Metric: exact match x100 (token F1 beside it). "
        "Mean +- sample standard deviation over seeds; wall-clock is training plus evaluation per cell, on a shared "
        "2-core CPU (noisy: compare ratios, not seconds).",
        "",
        "| arm | EM mean | EM std | F1 mean | F1 std | n | samples trained | tokens trained | train s | total s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, v in s.items():
        frac = "-" if v["trained_sample_fraction"] is None else f"{v['trained_sample_fraction']:.3f}"
        lines.append(
            f"| {arm} | {v['mean']:.2f} | {v['std']:.2f} | {v['f1_mean']:.2f} | {v['f1_std']:.2f} | {v['n']} | {frac} | "
            f"{v['tokens_trained']} | {v['train_wall_clock_s']:.0f} | {v['wall_clock_s']:.0f} |"
        )
    comp = result.get("comparisons") or {}
    if comp:
        lines += [
            "",
            "Evaluation noise alone (binomial standard error of one cell's EM on "
            f"{EVAL_SIZE} questions): "
            + ", ".join(f"{a} {v['eval_standard_error']:.2f}" for a, v in s.items() if a in ["zero_shot", *MAIN_ARMS])
            + ".",
            "",
            "| comparison | EM difference | Welch t over seeds |",
            "|---|---:|---:|",
        ]
        for name, v in comp.items():
            if name != "task_check":
                lines.append(f"| {name} | {v['difference']:+.2f} | {'-' if v['welch_t'] is None else v['welch_t']} |")
        if "task_check" in comp:
            c = comp["task_check"]
            lines += [
                "",
                f"Task check ({c['rule']}): full - zero-shot = {c['full_minus_zero_shot']:+.2f} EM against a "
                f"seed sd of {c['full_seed_std']:.2f}: {'passes' if c['passes'] else 'does NOT pass'}.",
            ]
    lines += [
        "",
        "## The paper's numbers (for scale: other models, data and benchmarks)",
        "",
        "| setting | full data | Q-Tuning | Random+Random |",
        "|---|---:|---:|---:|",
    ]
    for name, v in result["paper"].items():
        lines.append(f"| {name} | {v['full']} | {v['qtuning']} | {v['random']} |")
    noise = result.get("noise") or {}
    if noise.get("per_arm"):
        lines += [
            "",
            "## Noise study: 20% of the training answers swapped",
            "",
            f"{noise['corrupted_rows']} of {noise['training_rows']} training rows carry another question's answer "
            f"({noise['corrupted_share_of_data']:.1%}).",
            "",
            "| arm | seed | corrupted share of the kept samples | corrupted rows by quadrant (Q1/Q2/Q3/Q4) | "
            "clean rows by quadrant |",
            "|---|---:|---:|---|---|",
        ]
        for arm, entries in noise["per_arm"].items():
            for e in entries:
                qc = e.get("quadrant_share_corrupted")
                qk = e.get("quadrant_share_clean")
                fmt = (lambda d: "/".join(f"{d[f'Q{q}']:.2f}" for q in range(1, 5))) if qc else (lambda d: "-")
                lines.append(f"| {arm} | {e['seed']} | {e['corrupted_share_of_kept']:.3f} | {fmt(qc)} | {fmt(qk)} |")
    notes = RESULTS_JSON.parent / "replication_notes.md"  # the hand-written reading of the numbers, if any
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated arms (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds for the trained arms")
    parser.add_argument("--report", action="store_true", help="only rewrite the results from the cached cells")
    parser.add_argument("--workers", type=int, default=2, help="cells run at the same time")
    parser.add_argument("--skip", default="", help="ARM:SEED,... cells not to start (e.g. running elsewhere)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # ARM:SEED, run in this process
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    if args.cell:
        arm, seed = args.cell.rsplit(":", 1)
        record = run_cell(arm, int(seed))
        CELLS.mkdir(parents=True, exist_ok=True)
        tmp = cell_path(arm, int(seed)).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(cell_path(arm, int(seed)))  # atomic: a killed cell leaves no half record
        return 0
    prepare_data()
    if not args.report:
        arms = [a for a in args.only.split(",") if a] or list(ARMS)
        seeds = [int(s) for s in args.seeds.split(",")]
        todo = priority_order(arms, seeds)
        skip = {(c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])) for c in args.skip.split(",") if c}
        todo = [c for c in todo if not cell_path(*c).exists() and c not in skip]
        # Cells run in `--workers` processes of `--threads` threads each (1 x 2 = every core of this machine
        # in use, each cell's wall-clock comparable with the others'); results are written as cells finish.
        env = dict(
            os.environ,
            QTUNING_THREADS=str(args.threads),
            OMP_NUM_THREADS=str(args.threads),
            MKL_NUM_THREADS=str(args.threads),
        )

        def run_one(cell: tuple[str, int]) -> tuple[str, int, float, int]:
            arm, seed = cell
            print(f"[replicate] {arm} seed {seed} ...", flush=True)
            started = time.perf_counter()
            with open(WORK / f"log_{arm}__s{seed}.txt", "w") as log:
                code = subprocess.run(
                    [sys.executable, __file__, "--cell", f"{arm}:{seed}"], env=env, stdout=log, stderr=subprocess.STDOUT
                ).returncode
            return arm, seed, time.perf_counter() - started, code

        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            for future in as_completed([pool.submit(run_one, c) for c in todo]):
                arm, seed, seconds, code = future.result()
                if code != 0:
                    print(
                        f"[replicate] {arm} seed {seed} FAILED (exit {code}): see {WORK}/log_{arm}__s{seed}.txt",
                        flush=True,
                    )
                    continue
                cell = json.loads(cell_path(arm, seed).read_text())
                print(
                    f"[replicate] {arm} seed {seed}: F1 {100 * cell['metrics']['f1']:.2f} EM "
                    f"{100 * cell['metrics']['exact_match']:.2f} ({seconds:.0f} s)",
                    flush=True,
                )
                write_results()
    result = write_results()
    for arm, v in result["summary"].items():
        print(
            f"{arm:34s} EM {v['mean']:6.2f} +- {v['std']:5.2f} (n={v['n']}) F1 {v['f1_mean']:6.2f} "
            f"{v['wall_clock_s']:7.0f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
