"""The evidence suite: does Q-Tuning's selection beat Random's at the same budget? (benchmarks/evidence/PLAN.md)

    python benchmarks/evidence/suite.py                  # run every missing cell in the plan's order, then report
    python benchmarks/evidence/suite.py --limit-s 3600   # start no new cell after an hour
    python benchmarks/evidence/suite.py --only arith:full:0,arith:zero_shot:0
    python benchmarks/evidence/suite.py --report         # rewrite the results from the finished cells only

Every cell runs from a pinned commit of this repository, so that no later change to the library can
make cells incomparable (the commit is recorded in every cell; finished cells are copied back into
this checkout's benchmarks/results/evidence_cells/ and committed):
    git worktree add ../evidence-run 7f7a0f9        # the plan's own cells
    (cd ../evidence-run && python benchmarks/evidence/suite.py)
    git worktree add ../evidence-addendum <commit>  # the threshold variants: PLAN.md change log
    (cd ../evidence-addendum && python benchmarks/evidence/suite.py --addendum)
Copy benchmarks/results/evidence_cells/*.json back, then `python benchmarks/evidence/suite.py --report`.
`bash benchmarks/evidence/background.sh` does all of this in order (both worktrees, copying back).
Each cell (task, arm, seed) trains in its own process (one at a time, two threads, fp32: PLAN.md says
why), evaluates on the task's held-out items, and is written atomically to
benchmarks/results/evidence_cells/<task>__<arm>__s<seed>.json with its per-item scores, so the
statistics can be recomputed at any time and an interrupted grid resumes where it stopped (a cell
killed half-way is rerun from its start). After every cell the report is rewritten:
benchmarks/results/evidence.json, benchmarks/results/evidence_<task>.png and the evidence section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".evidence"  # git-ignored: data files and training runs
CELLS = ROOT / "benchmarks" / "results" / "evidence_cells"
RESULTS_JSON = ROOT / "benchmarks" / "results" / "evidence.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
PLAN = "benchmarks/evidence/PLAN.md"

SPLIT_SEED = 1234
NOISE_SEED = 1235
NOISE_FRACTION = 0.2
NLL_ITEMS = 100  # held-out NLL on the first 100 evaluation items (ARC: all)
EVAL_BATCH = 64

# The training recipe: benchmarks/recipe_base.yaml (one epoch), logging every 4 steps.
BASE = {**yaml.safe_load((ROOT / "benchmarks" / "recipe_base.yaml").read_text()), "logging_steps": 4}

# task -> how its rows are built and scored
TASKS = {
    "arith": dict(
        builtin="arith-steps", eval_task="arith", metric="exact_match", train=256, eval_range=(4000, 4250), long=True
    ),
    "letters": dict(
        builtin="letter-count-steps",
        eval_task="letters",
        metric="exact_match",
        train=256,
        eval_range=(4000, 4250),
        long=True,
    ),
    "arc": dict(
        builtin="arc-easy", eval_builtin="arc-easy-val", eval_task="arc_easy", metric="acc", train=512, long=False
    ),
    "squad": dict(builtin="squad", eval_task="squad", metric="exact_match", train=256, eval_count=250, long=False),
}
TASK_ORDER = ["arith", "letters", "arc"]  # the plan's first three; squad replaces one that fails

RANDOM = dict(sample_pruner="random", token_pruner="random")
# arm -> (training rows, config overrides); None = zero-shot
ARMS: dict[str, tuple[str, dict] | None] = {
    "zero_shot": None,
    "full": ("train", dict(pruning_method="none")),
    "random_25x50": ("train", dict(**RANDOM, sample_ratio=0.25, token_ratio=0.5)),
    "qtuning_25x50": ("train", dict(sample_ratio=0.25, token_ratio=0.5)),
    "random_25x50_3ep": ("train", dict(**RANDOM, sample_ratio=0.25, token_ratio=0.5, num_train_epochs=3)),
    "qtuning_25x50_3ep": ("train", dict(sample_ratio=0.25, token_ratio=0.5, num_train_epochs=3)),
    "random_12.5x50": ("train", dict(**RANDOM, sample_ratio=0.125, token_ratio=0.5)),
    "qtuning_12.5x50": ("train", dict(sample_ratio=0.125, token_ratio=0.5)),
    "random_50x50": ("train", dict(**RANDOM, sample_ratio=0.5, token_ratio=0.5)),
    "qtuning_50x50": ("train", dict(sample_ratio=0.5, token_ratio=0.5)),
    "infobatch_25x50": (
        "train",
        dict(sample_pruner="infobatch", token_pruner="random", sample_ratio=0.25, token_ratio=0.5),
    ),
    "qtuning_25x100": ("train", dict(sample_ratio=0.25, token_ratio=1.0)),
    "noisy_full": ("train_noisy", dict(pruning_method="none")),
    "noisy_random_25x50": ("train_noisy", dict(**RANDOM, sample_ratio=0.25, token_ratio=0.5)),
    "noisy_qtuning_25x50": ("train_noisy", dict(sample_ratio=0.25, token_ratio=0.5)),
}
NOISE_TASK = "arith"

# PLAN.md change log, 2026-12-02 18:00: the threshold variants (run from a later pinned commit than the
# plan's own cells). HISTNOISE is the one noise-aware option chosen from selection_quality.json.
HISTORY = dict(sample_ratio=0.25, token_ratio=0.5, thresholds="history", history_window=512)
# chosen 2026-12-02 by the pre-registered rule: the lowest corrupted-token-trained share among the history
# variants of selection_quality.json (0.207 vs 0.208 for plain history and 0.214 for the Q2 cap)
HISTNOISE: dict = {"supplement_toward": "low_ppl"}
ADDENDUM_ARMS: dict[str, tuple[str, dict]] = {
    "qtuning_25x50_recheck": ("train", dict(sample_ratio=0.25, token_ratio=0.5)),
    "qtuning_hist_25x50": ("train", HISTORY),
    "qtuning_histnoise_25x50": ("train", {**HISTORY, **HISTNOISE}),
    "noisy_qtuning_hist_25x50": ("train_noisy", HISTORY),
    "noisy_qtuning_histnoise_25x50": ("train_noisy", {**HISTORY, **HISTNOISE}),
}
ARMS.update(ADDENDUM_ARMS)


def planned_cells(tasks: list[str]) -> list[tuple[str, str, int]]:
    """Every cell of the plan, in the plan's order (PLAN.md, 'Budget and order')."""
    order: list[tuple[str, str, int]] = []
    order += [(t, "zero_shot", 0) for t in tasks]
    order += [(t, "full", s) for s in range(5) for t in tasks]
    order += [(t, a, s) for s in range(5) for t in tasks for a in ("random_25x50", "qtuning_25x50")]
    order += [(t, a, s) for s in range(3) for t in tasks for a in ("random_25x50_3ep", "qtuning_25x50_3ep")]
    order += [(NOISE_TASK, a, s) for s in range(3) for a in ("noisy_full", "noisy_random_25x50", "noisy_qtuning_25x50")]
    order += [
        (t, a, s)
        for s in range(2)
        for t in tasks
        for a in (
            "random_12.5x50",
            "qtuning_12.5x50",
            "random_50x50",
            "qtuning_50x50",
            "infobatch_25x50",
            "qtuning_25x100",
        )
    ]
    return order


def addendum_cells(tasks: list[str]) -> list[tuple[str, str, int]]:
    """The threshold variants' cells (PLAN.md change log, 2026-12-02 18:00), in order."""
    order = [("arith", "qtuning_25x50_recheck", 0)]
    order += [(t, a, s) for s in range(5) for t in tasks for a in ("qtuning_hist_25x50", "qtuning_histnoise_25x50")]
    order += [
        (NOISE_TASK, a, s) for s in range(3) for a in ("noisy_qtuning_hist_25x50", "noisy_qtuning_histnoise_25x50")
    ]
    return order


# ------------------------------------------------------------------------------------------- data
def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def task_dir(task: str) -> Path:
    return WORK / task


def prepare_task(task: str) -> dict:
    """Write the task's training rows (and the noisy copy for the noise task) and evaluation records
    once, deterministically; return its meta (paths, sizes, corrupted ids)."""
    folder = task_dir(task)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    from qtuning.data.builtin import load_builtin_records

    spec = TASKS[task]
    records = load_builtin_records(spec["builtin"])
    if "eval_builtin" in spec:  # a separate evaluation set (ARC: validation); train on a shuffle of the other
        eval_rows = load_builtin_records(spec["eval_builtin"])
        pool = records[:]
        random.Random(SPLIT_SEED).shuffle(pool)
    elif "eval_range" in spec:  # procedural: fixed index ranges
        lo, hi = spec["eval_range"]
        eval_rows, pool = records[lo:hi], records[:lo]
    else:  # one set: a seeded shuffle, evaluation first
        pool = records[:]
        random.Random(SPLIT_SEED).shuffle(pool)
        eval_rows, pool = pool[: spec["eval_count"]], pool[spec["eval_count"] :]
    held_out = {_norm(r["prompt"]) for r in eval_rows}
    train_rows, seen = [], set()
    for r in pool:  # no training prompt equals an evaluation prompt, nor another training prompt
        key = _norm(r["prompt"])
        if key in held_out or key in seen:
            continue
        seen.add(key)
        train_rows.append(r)
        if len(train_rows) == spec["train"]:
            break
    if task == "arc":  # the question alone -> the correct choice's text, as arc_easy's evaluation scores it
        from qtuning.evaluation import arc_question

        train_rows = [dict(r, prompt=arc_question(r), response=r["choices"][r["gold"]]) for r in train_rows]
    folder.mkdir(parents=True, exist_ok=True)

    def write(path: Path, rows: list[dict]) -> None:
        with open(path, "w") as handle:
            for r in rows:
                handle.write(json.dumps({"id": r["id"], "prompt": r["prompt"], "completion": r["response"]}) + "\n")

    write(folder / "train.jsonl", train_rows)
    (folder / "eval_records.json").write_text(json.dumps(eval_rows))
    meta = {
        "task": task,
        "builtin": spec["builtin"],
        "train": len(train_rows),
        "eval": len(eval_rows),
        "split_seed": SPLIT_SEED,
        "train_ids": [r["id"] for r in train_rows],
    }
    if task == NOISE_TASK:
        rng = random.Random(NOISE_SEED)
        corrupted = sorted(rng.sample(range(len(train_rows)), round(NOISE_FRACTION * len(train_rows))))
        shifted = corrupted[1:] + corrupted[:1]  # each takes the next one's response: a derangement
        noisy = [dict(r) for r in train_rows]
        for target, source in zip(corrupted, shifted):
            noisy[target]["response"] = train_rows[source]["response"]
        write(folder / "train_noisy.jsonl", noisy)
        meta["corrupted_ids"] = [
            train_rows[i]["id"] for i in corrupted if noisy[i]["response"] != train_rows[i]["response"]
        ]
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


# ------------------------------------------------------------------------------------------- one cell
def cell_path(task: str, arm: str, seed: int) -> Path:
    return CELLS / f"{task}__{arm}__s{seed}.json"


def _plan_log_digest(path: Path, rows: list[dict]) -> dict:
    """What the report needs from a plan log: the sample ids of each step (the pairing check) and, per
    training row, how often it was seen / kept and its response tokens seen / trained."""
    order, per_row = [], {}
    for line in open(path):
        plan = json.loads(line)
        samples = plan["samples"]
        order.append(samples["id"])
        for sid, role, trainable, kept in zip(
            samples["id"], samples["role"], samples["trainable_tokens"], samples["kept_tokens"]
        ):
            entry = per_row.setdefault(rows[sid]["id"], [0, 0, 0, 0])  # seen, kept, tokens seen, tokens trained
            entry[0] += 1
            entry[1] += int(role != 0)
            entry[2] += trainable
            entry[3] += kept if role != 0 else 0
    return {"order": order, "per_row": per_row}


def run_cell(task: str, arm: str, seed: int) -> dict:
    import torch

    from qtuning.data.models import load_model_and_tokenizer
    from qtuning.evaluation import arc_question, evaluate, response_nll

    torch.set_num_threads(int(os.environ.get("QTUNING_THREADS", "2")))
    prepare_task(task)
    folder = task_dir(task)
    eval_records = json.loads((folder / "eval_records.json").read_text())
    spec = TASKS[task]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record: dict = {
        "task": task,
        "arm": arm,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code_commit": commit,
    }
    if ARMS[arm] is None:
        model, tokenizer = load_model_and_tokenizer(BASE["model"])
        record["train_s"] = 0.0
    else:
        from qtuning.data import load_records, split_records
        from qtuning.training.run import build_trainer
        from qtuning.training.sft_config import train_configs

        rows_name, overrides = ARMS[arm]
        out = WORK / "runs" / f"{task}__{arm}__s{seed}"
        data = folder / f"{rows_name}.jsonl"
        run, cfg = train_configs(dict(output_dir=str(out), data=str(data), seed=seed, **{**BASE, **overrides}))
        trainer, _ = build_trainer(run, cfg)
        started = time.perf_counter()
        trainer.train()
        record["train_s"] = time.perf_counter() - started
        record["summary"] = {k: v for k, v in trainer.qtuning_summary.items() if isinstance(v, (int, float))}
        record["log_history"] = [h for h in trainer.state.log_history if "loss" in h]
        plan_log = out / "qtuning_plans.jsonl"
        if plan_log.exists():
            rows, _ = split_records(load_records(str(data))[0], 0.0, seed)  # the trainer's row order
            record["plans"] = _plan_log_digest(plan_log, rows)
        model, tokenizer = trainer.model, trainer.processing_class
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
    model.eval()
    started = time.perf_counter()
    result = evaluate(
        model,
        tokenizer,
        [spec["eval_task"]],
        records={spec["eval_task"]: eval_records},
        engine="native",
        progress=False,
        batch_size=EVAL_BATCH,
        samples=True,
    )
    items = result["samples"][spec["eval_task"]]
    record["metric"] = spec["metric"]
    record["score"] = result["tasks"][spec["eval_task"]][spec["metric"]]
    record["per_item"] = [float(s[spec["metric"]]) for s in items]
    record["item_ids"] = [s["id"] for s in items]
    if spec["long"]:
        record["outputs_head"] = [s["output"] for s in items[:5]]
    record["eval_s"] = time.perf_counter() - started
    started = time.perf_counter()
    if task == "arc":  # the correct answer's text after the question, as the arc rows are trained
        nll_records = [{"prompt": arc_question(r), "response": r["choices"][r["gold"]]} for r in eval_records]
    else:
        nll_records = eval_records[:NLL_ITEMS]
    pairs = response_nll(model, tokenizer, nll_records, batch_size=16)
    record["nll_sum"] = [p[0] for p in pairs]
    record["nll_tokens"] = [p[1] for p in pairs]
    record["nll"] = sum(record["nll_sum"]) / max(1, sum(record["nll_tokens"]))
    record["nll_s"] = time.perf_counter() - started
    return record


# ------------------------------------------------------------------------------------------- driver
def run_grid(cells: list[tuple[str, str, int]], limit_s: float | None) -> None:
    env = dict(
        os.environ,
        QTUNING_THREADS="2",
        OMP_NUM_THREADS="2",
        MKL_NUM_THREADS="2",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    began = time.perf_counter()
    for task, arm, seed in cells:
        if cell_path(task, arm, seed).exists():
            continue
        if limit_s is not None and time.perf_counter() - began > limit_s:
            print(f"[evidence] time limit reached; {task}/{arm}/s{seed} and later cells not started", flush=True)
            break
        print(f"[evidence] {time.strftime('%H:%M:%S')} {task} {arm} seed {seed} ...", flush=True)
        started = time.perf_counter()
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        with open(WORK / "logs" / f"{task}__{arm}__s{seed}.txt", "w") as log:
            code = subprocess.run(
                [sys.executable, __file__, "--cell", f"{task}:{arm}:{seed}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            ).returncode
        if code != 0:
            print(
                f"[evidence] {task} {arm} seed {seed} FAILED (exit {code}): {WORK}/logs/{task}__{arm}__s{seed}.txt",
                flush=True,
            )
            continue
        cell = json.loads(cell_path(task, arm, seed).read_text())
        print(
            f"[evidence] {task} {arm} seed {seed}: {cell['metric']} {cell['score']:.4f} nll {cell['nll']:.4f} "
            f"(train {cell['train_s']:.0f} s, eval {cell['eval_s']:.0f} s, {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        try:
            from report import write_report  # benchmarks/evidence/report.py

            write_report()
        except Exception as exc:  # a report bug must not stop the grid
            print(f"[evidence] report failed: {exc!r}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="TASK:ARM:SEED,... (default: the whole plan)")
    parser.add_argument("--tasks", default=",".join(TASK_ORDER), help="the suite's tasks, in order")
    parser.add_argument("--limit-s", type=float, default=None, help="start no new cell after this many seconds")
    parser.add_argument("--report", action="store_true", help="only rewrite the results from the finished cells")
    parser.add_argument(
        "--addendum", action="store_true", help="run the threshold variants' cells (PLAN.md change log)"
    )
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # TASK:ARM:SEED, run in this process
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(Path(__file__).parent))
    if args.cell:
        task, arm, seed = args.cell.split(":")
        record = run_cell(task, arm, int(seed))
        CELLS.mkdir(parents=True, exist_ok=True)
        tmp = cell_path(task, arm, int(seed)).with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(cell_path(task, arm, int(seed)))  # atomic: a killed cell leaves no half record
        return 0
    if not args.report:
        if args.only:
            cells = [(c.split(":")[0], c.split(":")[1], int(c.split(":")[2])) for c in args.only.split(",")]
        else:
            tasks = [t for t in args.tasks.split(",") if t]
            cells = addendum_cells(tasks) if args.addendum else planned_cells(tasks)
        for task in dict.fromkeys(c[0] for c in cells):
            prepare_task(task)
        run_grid(cells, args.limit_s)
    prepare_task(NOISE_TASK)  # the noise table needs its corrupted ids (deterministic; a fresh clone lacks them)
    from report import write_report

    write_report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
