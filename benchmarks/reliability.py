"""Reliability figures for odd data and bad command-line arguments (issue 29, items 2 and 6).

    .venv/bin/python benchmarks/reliability.py [--scale 2.5] [--seed 29] [--skip-train] [--skip-matrix]

1. fuzzed_data: the generators of tests/fuzz_cases.py (odd JSONL, JSON, Parquet, `datasets` folders, chat
   role orders, 100k-character fields, and the hand-written odd files) at `--scale` times the test suite's
   counts (2.5: about 5,000 cases), each loaded as `qtuning train` loads its data. A case behaves as
   promised when it loads with every row counted, or is refused by a QTuningError whose one-line message
   names the file and the row at fault (tests/fuzz_cases.py says exactly what is checked). Then refused
   files through `qtuning train --data FILE --max_steps 1` as subprocesses (two at a time, the tiny
   random model): exit status 1 or 2, one `qtuning: error:` line (load_records' message), no traceback.
2. cli_bad_arguments: every subcommand x {missing file, wrong type, unknown model, unknown name,
   unreadable path, unwritable output} (tests/cli_cases.py), each a subprocess: exit status 1 or 2, one
   error line, no traceback. The cells known to fail, with where and the fix, are listed with them.

Writes benchmarks/results/reliability.json (or --out): per category, the cases tried, the cases that
behaved as promised, the exception types seen, and the cases that did not behave.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the generators and the matrix are the test suite's


def fuzzed_data(scale: float, seed: int, train: bool, work: Path, tokenizer, tiny: Path | None) -> dict:
    import fuzz_cases

    started = time.perf_counter()
    results = []
    for kind, (_, examples) in fuzz_cases.KINDS.items():
        count = max(1, round(examples * scale))
        kind_started = time.perf_counter()
        results += fuzz_cases.run_kind(kind, count, work / kind, tokenizer, strict=False, seed=seed)
        print(f"[reliability] fuzz {kind}: {count} cases, {time.perf_counter() - kind_started:.0f} s", flush=True)
    results += [fuzz_cases.attempt(case, tokenizer) for case in fuzz_cases.explicit_cases(work / "explicit")]
    broken = [r for r in results if r.outcome == "broken"]
    tally = fuzz_cases.summary()
    out = {
        "cases_tried": len(results),
        "behaved_as_promised": len(results) - len(broken),
        "loaded": sum(r.outcome == "loaded" for r in results),
        "refused": sum(r.outcome == "refused" for r in results),
        "exception_types": tally["exception_types"],
        "per_kind": tally["per_kind"],
        "not_as_promised": [{"kind": r.kind, "exception": r.exception, "detail": r.detail[:400]} for r in broken[:20]],
        "hypothesis_seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if train and tiny is not None:
        train_started = time.perf_counter()
        files = fuzz_cases.refused_files(work / "cli", tokenizer, seed=seed)
        runs = work / "runs"
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = [(path, message, tiny, runs / str(i)) for i, (path, message) in enumerate(files.items())]
            failures = [f for f in pool.map(lambda job: fuzz_cases.train_on(*job), jobs) if f]
        out["through_qtuning_train"] = {
            "cases_tried": len(files),
            "behaved_as_promised": len(files) - len(failures),
            "not_as_promised": [f[:600] for f in failures[:10]],
            "seconds": round(time.perf_counter() - train_started, 1),
        }
        print(f"[reliability] qtuning train on {len(files)} refused files: {len(failures)} failures", flush=True)
    return out


def cli_bad_arguments(work: Path, tiny: Path) -> dict:
    import cli_cases

    started = time.perf_counter()
    w = cli_cases.build_workspace(work / "bad-arguments", tiny)
    prefix, note = cli_cases.unreadable_status(w)
    cells = [c for c in cli_cases.matrix(w) if prefix is not None or c.kind != "unreadable"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda c: cli_cases.run_cell(c, prefix if c.kind == "unreadable" else None), cells))
    rows = []
    for o in outcomes:
        known = cli_cases.KNOWN_FAILURES.get(o.cell)
        rows.append(
            {
                "cell": o.cell,
                "as_promised": o.ok,
                "exit_status": o.returncode,
                "seconds": o.seconds,
                "error_line": o.error_line[:300],
                "problem": o.problem[:300],
                **({"where_and_fix": known} if known and not o.ok else {}),
            }
        )
        print(f"[reliability] {o.cell:28} {'ok' if o.ok else 'NOT OK'} {o.problem[:100]}", flush=True)
    failures = [o for o in outcomes if not o.ok]
    return {
        "cases_tried": len(outcomes),
        "behaved_as_promised": len(outcomes) - len(failures),
        "tracebacks": sum(o.problem.startswith("traceback") for o in failures),
        "exception_types": sorted(
            {o.problem.split(":")[1].strip() for o in failures if o.problem.startswith("traceback")}
        ),
        "silent_exit_0": [o.cell for o in failures if o.returncode == 0],
        "argparse_form": sum(
            ": error: " in o.error_line and not o.error_line.startswith("qtuning: error:") for o in outcomes
        ),
        "unreadable_paths": note,
        "not_applicable": {f"{c}-{k}": why for (c, k), why in cli_cases.NOT_APPLICABLE.items()},
        "cells": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=2.5, help="x the test suite's case counts (2.5: ~5,000)")
    parser.add_argument("--seed", type=int, default=29, help="hypothesis seed of the fuzzing")
    parser.add_argument("--skip-train", action="store_true", help="no `qtuning train` runs on refused files")
    parser.add_argument("--skip-matrix", action="store_true", help="no command-line matrix")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reliability.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from helpers import tiny_tokenizer
    from test_cli import make_tiny_model_dir

    with tempfile.TemporaryDirectory(prefix="qtuning-reliability-") as tmp:
        work = Path(tmp)
        tiny = make_tiny_model_dir(work / "tiny-model")
        result = {
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "command": " ".join(["benchmarks/reliability.py", *sys.argv[1:]]),
            "fuzzed_data": fuzzed_data(
                args.scale, args.seed, not args.skip_train, work / "fuzz", tiny_tokenizer(), tiny
            ),
        }
        if not args.skip_matrix:
            result["cli_bad_arguments"] = cli_bad_arguments(work, tiny)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    fuzz = result["fuzzed_data"]
    print(f"[reliability] fuzzed data: {fuzz['behaved_as_promised']}/{fuzz['cases_tried']} as promised")
    if "cli_bad_arguments" in result:
        cli = result["cli_bad_arguments"]
        print(f"[reliability] bad arguments: {cli['behaved_as_promised']}/{cli['cases_tried']} as promised")
    print(f"[reliability] wrote {args.out}")


if __name__ == "__main__":
    main()
