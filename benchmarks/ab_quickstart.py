"""`qtuning ab` on the quickstart recipe: Q-Tuning (25% x 50%) against a random subset of the same budget.

    .venv/bin/python benchmarks/ab_quickstart.py [--seeds 3] [--baseline random]

The Alpaca demo set (999 real rows) is split once by position: rows 0-849 are the recipe's data (it
trains on 480 of them a seed, as the quickstart does), rows 850-998 the held-out rows that no run sees.
Everything else is configs/quickstart.yaml unchanged. Resumable (rerun after a stop: finished runs are
skipped). Writes benchmarks/results/ab_quickstart_<baseline>.json: the comparison `qtuning ab` printed,
its wall-clock, the commit and the machine. With 3 seeds the interval is a first look, not a verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPLIT = 850  # rows [0, SPLIT) train, [SPLIT, 999) held out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baseline", choices=["random", "full"], default="random")
    parser.add_argument("--work", default=str(ROOT / "outputs" / "ab_quickstart"))
    args = parser.parse_args()
    from qtuning.data.reading import read_rows

    rows, _ = read_rows("alpaca-demo")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.jsonl", rows[:SPLIT]), ("heldout.jsonl", rows[SPLIT:])):
        (work / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    recipe = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    recipe["data"] = str(work / "train.jsonl")
    recipe.pop("output_dir", None)
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = work / f"ab_{args.baseline}"
    command = [
        str(ROOT / ".venv" / "bin" / "qtuning"),
        "ab",
        "--config",
        str(work / "recipe.yaml"),
        "--heldout",
        str(work / "heldout.jsonl"),
        "--seeds",
        str(args.seeds),
        "--baseline",
        args.baseline,
        "--output_dir",
        str(out),
    ]
    print("[ab_quickstart]", " ".join(command), flush=True)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    started = time.perf_counter()
    code = subprocess.call(command, env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if code != 0:
        return code
    result = json.loads((out / "ab.json").read_text())
    runs = {}  # per run: its held-out NLL and its training wall-clock (from the files the runs wrote)
    for side in ("a", "b"):
        for path in result[side]["files"]:
            name = Path(path).stem
            summary = json.loads((out / name / "qtuning_summary.json").read_text())
            runs[name] = {
                "heldout_nll": json.loads(Path(path).read_text())["tasks"]["nll"]["nll"],
                "train_wall_clock_s": summary["wall_clock_s"],
                "tokens_trained": summary["tokens_trained"],
                "samples_trained": summary["samples_trained"],
            }
    result["runs"] = runs
    result["setup"] = {
        "recipe": "configs/quickstart.yaml, data = Alpaca demo rows 0-849",
        "heldout": f"Alpaca demo rows {SPLIT}-{len(rows) - 1} ({len(rows) - SPLIT} rows)",
        "seeds": args.seeds,
        "wall_clock_s_this_call": round(time.perf_counter() - started, 1),  # skipped runs cost nothing here
        "commit_this_call": commit.stdout.strip(),  # a rerun that skips finished runs records its own
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
    }
    target = ROOT / "benchmarks" / "results" / f"ab_quickstart_{args.baseline}.json"
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"[ab_quickstart] wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
