"""Reliability figures for failed ranks, SIGTERM and odd numbers (issue 29, items 1 and 3).

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reliability_ranks.py [--skip-ranks] [--skip-numbers]

1. ranks: the runners of tests/test_faults.py, once each, on the tiny model through `qtuning train`
   (tests/scripts/faults.py injects the fault): SIGKILL of one of 2 gloo ranks during the probe, during
   backward and while checkpoint-4 is written (torchrun ends the run and names the rank; the checkpoints
   left are complete, or the one being written), a resume from the kill during the checkpoint (plans and
   weights equal to a run that never failed), SIGSTOP of a rank inside the selection's all_gather (the
   other exits with one line after ddp_timeout), ENOSPC on rank 0 or 1 while it writes its part of
   checkpoint-4 (every rank stops at once, one line from rank 0 naming the rank, no traceback), SIGTERM
   to one process (exit 143, a complete checkpoint, an exact resume). Worst figure: seconds from the fault to the end of every process.
2. numbers: the cases of tests/test_numbers.py through the trainer (NaN/inf probe scores, masked rows,
   one-row micro-batches, ratios that round to zero, steps that keep nothing), each run as the test does.

Replaces the "ranks" and "numbers" keys of benchmarks/results/reliability.json (read just before writing;
the other keys are left as they are).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"
sys.path.insert(0, str(ROOT))  # tests: the runners are the test suite's

from tests import test_faults as f  # noqa: E402
from tests import test_numbers as n  # noqa: E402


def ranks(work: Path) -> dict:
    cases = []

    def case(name, ok, seconds=None, detail=""):
        cases.append({"case": name, "as_promised": bool(ok), "exit_after_fault_s": seconds, "detail": detail[-300:]})
        print(f"[reliability] {name}: {'ok' if ok else 'NOT as promised'} {seconds}", flush=True)

    for moment in ("probe", "backward", "checkpoint"):
        r = f.run_killed_rank(work, moment)
        incomplete = sorted(n for n, c in r["checkpoints"].items() if not c)
        ok = (
            r["returncode"] != 0
            and r["exit_after_fault_s"] is not None
            and r["exit_after_fault_s"] < 60
            and r["names_the_rank"]
            and incomplete in ([["checkpoint-4"], []] if moment == "checkpoint" else [[]])
        )
        case(f"sigkill_rank{r['killed_rank']}_during_{moment}", ok, round(r["exit_after_fault_s"] or -1, 1))
    straight = f.run_straight(work, 2)
    resumed = f.run_resumed(work / "killed-checkpoint", 2)
    same = resumed["returncode"] == 0 and f.plans_of(work / "killed-checkpoint") == f.plans_of(straight)
    diff = f.max_weight_difference(work / "killed-checkpoint", straight) if resumed["returncode"] == 0 else None
    case("resume_2_ranks_after_kill_during_checkpoint", same and diff == 0.0, detail=f"max weight diff {diff}")
    hung_lines = {}
    for launcher in ("torchrun", "accelerate"):
        hung = f.run_hung_rank(work, launcher)
        line = hung_lines[launcher] = hung["errors"][0] if len(hung["errors"]) == 1 else ""
        ok = hung["returncode"] != 0 and "all_gather at step 3 timed out after" in line
        name = "sigstop_rank1_in_the_selection_all_gather" + ("" if launcher == "torchrun" else "_accelerate_launch")
        case(name, ok, round(hung["exit_after_fault_s"] or -1, 1), line)
    for rank in (0, 1):
        r = f.run_full_disk_rank(work, rank)
        line = r["errors"][0] if len(r["errors"]) == 1 else ""
        ok = (
            r["returncode"] == 1
            and f"could not be written (rank {rank}: No space left on device" in line
            and not r["rank_tracebacks"]
            and (r["exit_after_fault_s"] or 99) < f.DDP_TIMEOUT
            and r["checkpoints"] == {"checkpoint-2": True}
        )
        case(f"enospc_rank{rank}_writing_its_part_of_a_checkpoint", ok, round(r["exit_after_fault_s"] or -1, 1), line)
    r = f.run_killed_rank(work, "backward", launcher="accelerate")
    ok = r["returncode"] != 0 and (r["exit_after_fault_s"] or 99) < 60 and r["names_the_rank"]
    case("sigkill_rank1_during_backward_accelerate_launch", ok, round(r["exit_after_fault_s"] or -1, 1))
    straight1 = f.run_straight(work, 1)
    term = f.run_sigterm(work)
    complete = term["checkpoints"] == {"checkpoint-2": True, "checkpoint-3": True}
    resumed1 = f.run_resumed(term["out"], 1)
    exact = resumed1["returncode"] == 0 and f.plans_of(term["out"]) == f.plans_of(straight1)
    exact = exact and f.max_weight_difference(term["out"], straight1) == 0.0
    ok = term["returncode"] == 143 and len(term["errors"]) == 1 and complete and exact
    case("sigterm_single_process_then_resume", ok, detail=term["errors"][0] if term["errors"] else "")
    seconds = [c["exit_after_fault_s"] for c in cases if c["exit_after_fault_s"] is not None]
    kills = [c["exit_after_fault_s"] for c in cases if c["case"].startswith("sigkill")]
    return {
        "cases_tried": len(cases),
        "behaved_as_promised": sum(c["as_promised"] for c in cases),
        "worst": {
            "seconds_to_exit_after_a_rank_was_killed": max(kills),
            "seconds_to_exit_after_a_rank_hung": max(seconds),
            "hung_rank_message": hung_lines["torchrun"],
            "ddp_timeout_s": f.DDP_TIMEOUT,
        },
        "note": "a hung (SIGSTOP) rank: the other exits after ddp_timeout with the one-line CollectiveError; "
        "torch's elastic agent (torchrun, and `accelerate launch --multi_gpu`, which starts the CPU ranks the same "
        "way) then SIGKILLs the stopped rank when its SIGTERM goes unanswered for 30 s",
        "cases": cases,
    }


def numbers(work: Path) -> dict:
    from tests.helpers import tiny_dataset
    from tests.test_trainer_mixin import plain_trainer

    cases = []
    for name, (masked, training, qtuning, overflow, notice) in n.CASES.items():
        started = time.perf_counter()
        out = work / name
        dataset = tiny_dataset(32) if masked is None else n._masked(tiny_dataset(32), masked)
        detail, ok = "", False
        try:
            trainer = plain_trainer(out, dataset, training={"max_steps": 5, **training}, **qtuning)
            if overflow is not None:
                trainer.add_callback(n._ProbeOverflow(trainer.model, *overflow))
            trainer.train()
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            ok = trainer.state.global_step == 5 and all(v == v and abs(v) != float("inf") for v in losses)
            detail = f"losses {[round(v, 3) for v in losses]}"
        except Exception as exc:  # noqa: BLE001 - recorded, not raised: the figure is what happened
            detail = f"{type(exc).__name__}: {exc}"
        cases.append(
            {
                "case": name,
                "as_promised": ok,
                "notice_expected": notice,
                "seconds": round(time.perf_counter() - started, 1),
                "detail": detail[:300],
            }  # fmt: skip
        )
        print(f"[reliability] {name}: {'ok' if ok else 'NOT as promised'} ({detail[:80]})", flush=True)
    return {
        "cases_tried": len(cases),
        "behaved_as_promised": sum(c["as_promised"] for c in cases),
        "worst": {"runs_that_stopped": sum(not c["as_promised"] for c in cases)},
        "before_the_fix": "NaN/inf probe scores ended the run with ScoreError (3 cases); a step that kept nothing "
        "trained silently with misleading failure-signature warnings; the rest ran",
        "cases": cases,
        "engine_cases": "tests/test_numbers.py: NaN/inf NLL or entropy, an overflowing mean NLL, broken scores "
        "outside the scored positions, every row broken or masked, history windows, one row, ratios rounding to 0",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ranks", action="store_true")
    parser.add_argument("--skip-numbers", action="store_true")
    args = parser.parse_args()
    command = "nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reliability_ranks.py " + " ".join(
        sys.argv[1:]
    )
    found = {}
    with tempfile.TemporaryDirectory(prefix="qtuning-reliability-") as tmp:
        if not args.skip_ranks:
            found["ranks"] = ranks(Path(tmp) / "ranks")
        if not args.skip_numbers:
            found["numbers"] = numbers(Path(tmp) / "numbers")
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}  # others write other keys
    for key, value in found.items():
        data[key] = {**value, "date": date.today().isoformat(), "command": command.strip()}
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: {"tried": v["cases_tried"], "ok": v["behaved_as_promised"]} for k, v in found.items()}))
    return 0 if all(v["cases_tried"] == v["behaved_as_promised"] for v in found.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
