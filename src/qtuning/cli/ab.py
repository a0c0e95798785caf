"""`qtuning ab`: is Q-Tuning better than a baseline on YOUR recipe and data? One command for the loop
docs/evaluation.md describes: train the recipe and the baseline with the same seeds, score every model
on the same held-out records (their NLL, plus any eval task), and compare them paired by seed with the
two-way bootstrap and your smallest effect of interest.

Resumable: a run whose evaluation file scored the same tasks is skipped (its folder must hold the same
recipe, or the run stops with the settings that differ); a run that stopped after a checkpoint resumes
from it. Everything lands under --output_dir: `<arm>_s<seed>/` (each run, as `qtuning train` writes it),
`evals/<arm>_s<seed>.json` (as `qtuning eval -o` writes it) and `ab.json` (as `qtuning compare -o`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import UsageError

BASELINE_FLAGS = {  # the baseline arm: the same recipe with these overrides
    # a blind selection of the same samples and loss tokens: token_ratio R is set from qtuning_s0 (token_ratio_r)
    "random": ["--sample_pruner", "random", "--token_pruner", "random"],
    "random_nominal": ["--sample_pruner", "random", "--token_pruner", "random"],  # the recipe's ratios as they are
    "full": ["--pruning_method", "none"],  # every sample and token
}


@dataclass
class AbConfig:
    """Settings of `qtuning ab` (the recipe against a baseline, over seeds, on held-out records)."""

    config: str = field(default="", metadata={"help": "The recipe (a `qtuning train` YAML), Q-Tuning on."})
    heldout: str = field(
        default="",
        metadata={
            "help": "Held-out rows (.jsonl or .json, in any row format `qtuning train` reads) that the recipe "
            "never trains on: every model's NLL of their responses is the comparison's first metric."
        },
    )
    tasks: str = field(
        default="",
        metadata={"help": "More `qtuning eval` tasks for every model, e.g. `arith=heldout.jsonl` (optional)."},
    )
    baseline: Literal["random", "random_nominal", "full"] = field(
        default="random",
        metadata={
            "help": "random: a blind selection (--sample_pruner random --token_pruner random) of the same samples "
            "and about the same loss tokens as Q-Tuning (its token_ratio is set from qtuning_s0's run, since "
            "Q-Tuning prunes tokens only in its Q2 rows); random_nominal: the same, at the recipe's own ratios "
            "(the paper's baseline, which trains fewer tokens); full: all samples and tokens (--pruning_method none)."
        },
    )
    seeds: int = field(default=3, metadata={"help": "Paired seeds 0..N-1 per arm (3 or more for an interval)."})
    output_dir: str = field(default="ab", metadata={"help": "Where the runs, evaluations and ab.json go."})
    train_args: str = field(
        default="",
        metadata={"help": 'Overrides for both arms\' `qtuning train`, e.g. "--max_steps 60 --learning_rate 1e-4".'},
    )
    sesoi: str = field(
        default="nll=0.01",
        metadata={
            "help": "Smallest effect of interest per metric (qtuning compare --sesoi), fixed before you look; "
            "'' for the two-outcome reading."
        },
    )
    limit: int | None = field(default=None, metadata={"help": "Score the first N records of each task."})
    batch_size: int = field(default=8, metadata={"help": "Records per evaluation forward."})


def _finished(run_dir: Path) -> bool:
    """The run saved its model and wrote its end-of-run summary (qtuning.training.run writes it last)."""
    from ..data.run_files import SUMMARY_FILE

    try:
        return "eval_loss_after" in json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False


def _scored(eval_file: Path, names: list[str], files: dict[str, str], limit: int | None) -> bool:
    """The evaluation file exists and scored these tasks (names), on these files ({task: path}), with this limit."""
    try:
        config = json.loads(eval_file.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (
        config.get("tasks") == names
        and config.get("limit") == limit
        and all(config.get("records", {}).get(task) == path for task, path in files.items())
    )


def token_ratio_r(qtuning_run: Path, sample_ratio: float) -> float:
    """The random baseline's token ratio R: the loss tokens Q-Tuning's first run trained over what a random
    sample_ratio of the rows holds (sample_ratio x the trainable tokens scored), so that a blind selection
    of the same samples trains about as many tokens (the evidence suite's rule R, benchmarks/evidence/PLAN_v2.md)."""
    from ..data.run_files import SUMMARY_FILE

    try:
        summary = json.loads((qtuning_run / SUMMARY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{qtuning_run / SUMMARY_FILE}: cannot be read ({exc}); the random baseline's token ratio comes from "
            "this run: train it again (remove its evaluation file) or give another --output_dir"
        ) from exc
    return min(1.0, round(summary["tokens_trained"] / (sample_ratio * summary["trainable_tokens_scored"]), 3))


def run_ab(cfg: AbConfig) -> int:
    """`qtuning ab`: train and evaluate each missing run, then compare; returns the exit code."""
    from ..evaluation.command import EvalConfig, run_eval
    from ..evaluation.compare import CompareConfig, parse_sesoi, run_compare
    from ..evaluation.records import parse_task_args
    from ..evaluation.tasks import task_name
    from ..training.run import check_output_dir, run_training
    from .train import load_recipe, parse_train_config

    if not cfg.config:
        raise UsageError("--config: give the recipe (a `qtuning train` YAML)")
    load_recipe(cfg.config)  # a missing or unknown-key recipe fails before anything runs
    if cfg.seeds < 1:
        raise UsageError(f"--seeds {cfg.seeds}: at least 1")
    parse_sesoi(cfg.sesoi)
    if not cfg.heldout:
        raise UsageError("--heldout: give held-out rows (.jsonl or .json, in any format `qtuning train` reads)")
    tasks = ",".join([f"nll={cfg.heldout}", *([cfg.tasks] if cfg.tasks else [])])
    # now, before any training: unknown tasks, unreadable files, and every held-out row (named if bad)
    names, records = parse_task_args(tasks)
    if not records["nll"]:
        raise UsageError(f"--heldout {cfg.heldout}: no records")
    files = {task_name(t): path for t, _, path in (i.partition("=") for i in tasks.split(",") if "=" in i)}
    extra = shlex.split(cfg.train_args)
    own = ("seed", "output_dir", "config", "resume_from_checkpoint", "overwrite_output_dir")  # ab sets these
    reserved = [a for a in extra if a.startswith("--") and a[2:].split("=")[0].replace("-", "_") in own]
    if reserved:
        raise UsageError(
            f"--train_args may not set {', '.join(reserved)}: qtuning ab sets them per run (for another recipe, "
            "give another --output_dir)"
        )
    out = Path(cfg.output_dir)
    arms = ("qtuning", cfg.baseline)
    print(
        f"[qtuning] ab: {cfg.config} (qtuning) against {cfg.baseline}, seeds 0-{cfg.seeds - 1}, "
        f"held-out {cfg.heldout} ({len(records['nll'])} records); output {out}"
    )
    runs = []  # (name, train argv, run folder, eval file), every one checked before any trains
    for seed in range(cfg.seeds):
        for arm in arms:
            name = f"{arm}_s{seed}"
            argv = ["--config", cfg.config, "--seed", str(seed), "--output_dir", str(out / name)]
            argv += (BASELINE_FLAGS[arm] if arm != "qtuning" else []) + extra
            if arm != "random":  # the token-matched baseline's recipe is known once qtuning_s0 has run
                check_output_dir(*parse_train_config(argv))  # writable, and no run of another recipe there
            runs.append((name, argv, out / name, out / "evals" / f"{name}.json"))
    matched = None  # the token-matched baseline's token_ratio, from qtuning_s0 (the first run)
    for name, argv, run_dir, eval_file in runs:
        if name.startswith("random_s"):
            if matched is None:
                sample_ratio = parse_train_config(argv)[1].sample_ratio
                matched = token_ratio_r(out / "qtuning_s0", sample_ratio)
                print(
                    f"[qtuning] ab: the random baseline keeps {sample_ratio:g} of the samples and token_ratio "
                    f"{matched:g} of their tokens, to train about as many loss tokens as qtuning_s0 did"
                )
            argv = [*argv, "--token_ratio", str(matched)]
            check_output_dir(*parse_train_config(argv))
        if _scored(eval_file, names, files, cfg.limit):
            print(f"[qtuning] ab: {name} trained and scored already ({eval_file}): skipped")
            continue
        if not _finished(run_dir):
            if any(run_dir.glob("checkpoint-*")):  # a run that stopped part-way: go on from its checkpoint
                argv = [*argv, "--resume_from_checkpoint", "true"]
            print(f"[qtuning] ab: training {name}")
            run_training(*parse_train_config(argv))
        print(f"[qtuning] ab: scoring {name}")
        eval_file.parent.mkdir(parents=True, exist_ok=True)
        run_eval(
            EvalConfig(
                model=str(run_dir),
                tasks=tasks,
                limit=cfg.limit,
                batch_size=cfg.batch_size,
                engine="native",
                output=str(eval_file),
            )
        )
    evals = {arm: [str(e) for n, _, _, e in runs if n.startswith(f"{arm}_s")] for arm in arms}
    _print_budgets(out, [n for n, *_ in runs], arms)
    run_compare(
        CompareConfig(
            a=",".join(evals["qtuning"]),
            b=",".join(evals[cfg.baseline]),
            name_a="qtuning",
            name_b=cfg.baseline,
            sesoi=cfg.sesoi,
            output=str(out / "ab.json"),
        )
    )
    return 0


def _print_budgets(out: Path, names: list[str], arms: tuple[str, str]) -> None:
    """What each arm trained, from the runs' summaries: a comparison at unequal budgets should say so."""
    from ..data.run_files import SUMMARY_FILE

    totals = {}
    for arm in arms:
        try:
            summaries = [json.loads((out / n / SUMMARY_FILE).read_text()) for n in names if n.startswith(f"{arm}_s")]
        except (OSError, ValueError):
            return  # a run folder removed after it was scored: nothing to report on it
        totals[arm] = {
            key: sum(s.get(key, 0) for s in summaries) / len(summaries)
            for key in ("samples_trained", "tokens_trained", "wall_clock_s")
        }
    a, b = (totals[arm] for arm in arms)
    print(
        f"[qtuning] ab: per run, {arms[0]} trained {a['samples_trained']:.0f} samples and {a['tokens_trained']:.0f} "
        f"loss tokens in {a['wall_clock_s']:.0f} s, {arms[1]} {b['samples_trained']:.0f} and "
        f"{b['tokens_trained']:.0f} in {b['wall_clock_s']:.0f} s ({arms[1]} / {arms[0]}: tokens "
        f"{b['tokens_trained'] / max(1.0, a['tokens_trained']):.2f}x, time {b['wall_clock_s'] / max(1e-9, a['wall_clock_s']):.2f}x)"
    )
