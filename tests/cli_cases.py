"""Every `qtuning` subcommand with bad arguments: the matrix that tests/test_cli_bad_arguments.py and
benchmarks/reliability.py both run (issue 29, item 6).

Each cell is one subcommand x one kind of bad argument, run as a subprocess. The promise (README, "The
command line"): exit status 1 or 2, one error line, no traceback. The error line is `qtuning: error: ...`
for the library's errors; argparse's own (a wrong type for an option) print `qtuning <command>: error: ...`
after a usage block: both count as the one line. Cells that do not apply (a subcommand without a numeric
option, a model or a data name) are listed in NOT_APPLICABLE with the reason, so the matrix is complete.

Unreadable paths: the tests usually run as root, where chmod 000 is not enforced (CAP_DAC_OVERRIDE). The
unreadable cells then run under `setpriv --bounding-set -dac_override,-dac_read_search`, which drops those
capabilities so that mode 000 holds; `unreadable_status` says which case applies, or why it cannot be
enforced (then those cells are reported as not enforceable, never silently passed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import QTUNING_CLI

KINDS = ("missing_file", "wrong_type", "unknown_model", "unknown_name", "unreadable", "unwritable_output")
COMMANDS = ("train", "plan", "fetch", "eval", "analyze", "report", "select", "compare", "ab")
NOT_APPLICABLE = {
    ("fetch", "wrong_type"): "fetch has no numeric option",
    ("report", "unknown_name"): "report reads no data set or task by name",
    ("select", "unknown_model"): "select takes no model (the analysis names it)",
    ("compare", "unknown_model"): "compare takes no model",
}
DROP_READ_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]

# Cells that break the promise, each with where the traceback (or the silent exit) comes from and the fix:
# empty since the 15 listed at first were fixed (issue 29: unreadable recipe, records, model, run state and
# eval files; outputs under a regular file checked before any model loads; `fetch` and `report` refusing an
# unknown model). A cell listed here that starts keeping the promise fails the test too: remove it then.
KNOWN_FAILURES: dict[str, str] = {}


@dataclass
class Cell:
    command: str
    kind: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.command}-{self.kind}"


@dataclass
class Outcome:
    cell: str
    returncode: int | None
    ok: bool
    problem: str  # why not ok ("" when ok)
    error_line: str
    seconds: float


def build_workspace(root: Path, tiny_model: Path) -> dict[str, Path]:
    """The files the cells point at: valid inputs (so that only the one bad argument is bad), a missing
    path, unreadable copies (mode 000) and a regular file to put outputs under (so they cannot be written)."""
    from qtuning.data import load_records
    from qtuning.data.run_files import META_FILE, TOKEN_SCORES_FILE
    from qtuning.engine.config import QTuningConfig
    from qtuning.insight.store import data_fingerprint

    root.mkdir(parents=True, exist_ok=True)
    w = {"root": root, "tiny": tiny_model, "missing": root / "missing", "blocker": root / "blocker"}
    w["blocker"].write_text("a regular file: nothing can be written under it\n")
    rows = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(8)]
    w["data"] = root / "data.jsonl"
    w["data"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    w["recipe"] = root / "recipe.yaml"
    w["recipe"].write_text(f"model: {tiny_model}\ndata: {w['data']}\nmax_steps: 1\n")
    # compare: two `qtuning eval --engine native -o` files, per-item scores of one task
    for side, scores in (("a", [1, 0, 1, 1]), ("b", [0, 0, 1, 0])):
        w[f"eval_{side}"] = root / f"eval_{side}.json"
        w[f"eval_{side}"].write_text(
            json.dumps(
                {
                    "tasks": {"arith": {"exact_match": sum(scores) / 4, "n": 4}},
                    "samples": {"arith": [{"id": str(i), "exact_match": s} for i, s in enumerate(scores)]},
                }
            )
        )
    # report: the smallest run directory `qtuning report` reads (a Trainer state with logged losses)
    w["run"] = root / "run"
    w["run"].mkdir(exist_ok=True)
    state = {"log_history": [{"step": s, "loss": 2.0 - 0.1 * s, "learning_rate": 1e-4} for s in (1, 2, 3)]}
    (w["run"] / "trainer_state.json").write_text(json.dumps(state))
    # select: an analysis of the data above, as `qtuning analyze` writes it (scores, token scores, meta)
    import pyarrow as pa
    import pyarrow.parquet as pq

    records, _ = load_records(str(w["data"]))
    w["analysis"] = root / "analysis"
    w["analysis"].mkdir(exist_ok=True)
    n = len(records)
    pq.write_table(
        pa.Table.from_pydict(
            {
                "index": list(range(n)),
                "row": list(range(n)),
                "id": [r["id"] for r in records],
                "ppl": [1.5 + 0.3 * i for i in range(n)],
                "entropy": [2.0 - 0.2 * i for i in range(n)],
                "has_response": [True] * n,
            }
        ),
        w["analysis"] / "scores.parquet",
    )
    pq.write_table(
        pa.Table.from_pydict(
            {
                "index": list(range(n)),
                "token_nll": [[0.5, 1.5, 0.25] for _ in range(n)],
                "positions": [3] * n,
                "response_tokens_total": [3] * n,
            }
        ),
        w["analysis"] / TOKEN_SCORES_FILE,
    )
    meta = {
        "model": str(tiny_model),
        "data": str(w["data"]),
        "num_records": n,
        "data_sha": data_fingerprint(records),
        "max_length": 64,
        "entropy_positions": QTuningConfig().entropy_positions,
        "shard_rows": 256,
    }
    (w["analysis"] / META_FILE).write_text(json.dumps(meta))
    w["scores"] = w["analysis"] / "scores.parquet"
    # unreadable copies: mode 000 (a recipe, a data file, a model file, an eval file, scores, a run's state)
    w["unreadable"] = root / "unreadable"
    w["unreadable"].mkdir(exist_ok=True)
    for name, source in (
        ("recipe.yaml", w["recipe"]),
        ("data.jsonl", w["data"]),
        ("eval.json", w["eval_a"]),
        ("scores.parquet", w["scores"]),
    ):
        shutil.copy(source, w["unreadable"] / name)
    (w["unreadable"] / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    shutil.copytree(w["run"], w["unreadable"] / "run", dirs_exist_ok=True)
    for path in [*(w["unreadable"]).glob("*.*"), w["unreadable"] / "run" / "trainer_state.json"]:
        path.chmod(0)
    return w


def unreadable_status(w: dict[str, Path]) -> tuple[list[str] | None, str]:
    """(command prefix under which mode 000 is enforced, or None if it cannot be; what was found)."""
    probe = w["unreadable"] / "data.jsonl"
    try:
        probe.read_bytes()
    except PermissionError:
        return [], "mode 000 is enforced for this user"
    if os.geteuid() == 0 and shutil.which("setpriv"):
        proc = subprocess.run([*DROP_READ_OVERRIDE, "cat", str(probe)], capture_output=True)
        if proc.returncode != 0 and b"Permission denied" in proc.stderr:
            return (
                DROP_READ_OVERRIDE,
                "root: mode 000 enforced by dropping CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv)",
            )
    return None, (
        f"mode 000 is NOT enforceable here (euid {os.geteuid()}, setpriv {'found' if shutil.which('setpriv') else 'absent'} "
        "but could not drop CAP_DAC_OVERRIDE): the unreadable cells cannot be tested"
    )


def matrix(w: dict[str, Path]) -> list[Cell]:
    """Every (command, kind) cell that applies; each fails in argument parsing or before a (real) model loads.
    Where the command loads a model before it reads the bad argument, the tiny model is passed to keep it fast."""
    tiny, data, missing, blocker, u = str(w["tiny"]), str(w["data"]), w["missing"], w["blocker"], w["unreadable"]
    out = str(w["root"] / "out")
    quick_train = ["--max_steps", "1", "--max_train_samples", "4", "--max_eval_samples", "2", "--report_to", "none"]
    cells = [
        # train: the recipe is read while parsing; the model loads before the data is read
        Cell("train", "missing_file", ["train", "--config", str(missing / "recipe.yaml")]),
        Cell("train", "wrong_type", ["train", "--max_steps", "many", "--output_dir", out]),
        Cell("train", "unknown_model", ["train", "--model", "nosuchmodel", "--output_dir", out]),
        Cell("train", "unknown_name", ["train", "--model", tiny, "--data", "nosuchdata", "--output_dir", out]),
        Cell("train", "unreadable", ["train", "--config", str(u / "recipe.yaml"), "--output_dir", out]),
        Cell(
            "train",
            "unwritable_output",
            ["train", "--model", tiny, "--data", data, *quick_train, "--output_dir", str(blocker / "run")],
        ),
        # plan
        Cell("plan", "missing_file", ["plan", "--model", tiny, "--data", str(missing / "data.jsonl")]),
        Cell("plan", "wrong_type", ["plan", "--num-samples", "many"]),
        Cell("plan", "unknown_model", ["plan", "--model", "nosuchmodel"]),
        Cell("plan", "unknown_name", ["plan", "--model", tiny, "--data", "nosuchdata"]),
        Cell("plan", "unreadable", ["plan", "--model", tiny, "--data", str(u / "data.jsonl")]),
        Cell(
            "plan",
            "unwritable_output",
            ["plan", "--model", tiny, "--data", data, "--num-samples", "4", "--output", str(blocker / "plan.json")],
        ),
        # fetch (no numeric option)
        Cell("fetch", "missing_file", ["fetch", "--models", str(missing / "model.gguf"), "--datasets"]),
        Cell("fetch", "unknown_model", ["fetch", "--models", "nosuchmodel", "--datasets"]),
        Cell("fetch", "unknown_name", ["fetch", "--models", "--datasets", "nosuchdata"]),
        Cell("fetch", "unreadable", ["fetch", "--models", str(u / "model.gguf"), "--datasets"]),
        Cell(
            "fetch",
            "unwritable_output",
            ["fetch", "--models", "--datasets", "alpaca-demo"],
            env={"QTUNING_CACHE": str(blocker / "cache")},
        ),
        # eval
        Cell(
            "eval",
            "missing_file",
            ["eval", "--model", tiny, "--tasks", f"arith={missing / 'arith.jsonl'}", "--engine", "native"],
        ),
        Cell("eval", "wrong_type", ["eval", "--limit", "many"]),
        Cell("eval", "unknown_model", ["eval", "--model", "nosuchmodel", "--tasks", "arith", "--engine", "native"]),
        Cell("eval", "unknown_name", ["eval", "--model", tiny, "--tasks", "nosuchtask", "--engine", "native"]),
        Cell(
            "eval",
            "unreadable",
            ["eval", "--model", tiny, "--tasks", f"arith={u / 'data.jsonl'}", "--engine", "native"],
        ),
        Cell(
            "eval",
            "unwritable_output",
            ["eval", "--model", tiny, "--tasks", "arith", "--limit", "2", "--engine", "native"]
            + ["-o", str(blocker / "eval.json")],
        ),
        # analyze
        Cell("analyze", "missing_file", ["analyze", "--model", tiny, "--data", str(missing / "d.jsonl"), "-o", out]),
        Cell("analyze", "wrong_type", ["analyze", "--batch-size", "many"]),
        Cell("analyze", "unknown_model", ["analyze", "--model", "nosuchmodel", "--data", data, "-o", out + "-m"]),
        Cell("analyze", "unknown_name", ["analyze", "--model", tiny, "--data", "nosuchdata", "-o", out]),
        Cell("analyze", "unreadable", ["analyze", "--model", tiny, "--data", str(u / "data.jsonl"), "-o", out]),
        Cell("analyze", "unwritable_output", ["analyze", "--model", tiny, "--data", data, "-o", str(blocker / "a")]),
        # report
        Cell("report", "missing_file", ["report", str(missing / "run")]),
        Cell("report", "wrong_type", ["report", str(w["run"]), "--token-samples", "many"]),
        Cell("report", "unknown_model", ["report", str(w["run"]), "--tokenizer", "nosuchmodel"]),
        Cell("report", "unreadable", ["report", str(u / "run")]),
        Cell("report", "unwritable_output", ["report", str(w["run"]), "-o", str(blocker / "report.html")]),
        # select
        Cell("select", "missing_file", ["select", "--scores", str(missing / "scores.parquet")]),
        Cell("select", "wrong_type", ["select", "--pool-size", "many"]),
        Cell("select", "unknown_name", ["select", "--scores", str(w["scores"]), "--data", "nosuchdata"]),
        Cell("select", "unreadable", ["select", "--scores", str(u / "scores.parquet")]),
        Cell("select", "unwritable_output", ["select", "--scores", str(w["scores"]), "-o", str(blocker / "s.jsonl")]),
        # compare
        Cell("compare", "missing_file", ["compare", "--a", str(missing / "a.json"), "--b", str(w["eval_b"])]),
        Cell("compare", "wrong_type", ["compare", "--resamples", "many"]),
        Cell(
            "compare",
            "unknown_name",
            ["compare", "--a", str(w["eval_a"]), "--b", str(w["eval_b"]), "--metrics", "nosuchmetric"],
        ),
        Cell("compare", "unreadable", ["compare", "--a", str(u / "eval.json"), "--b", str(w["eval_b"])]),
        Cell(
            "compare",
            "unwritable_output",
            ["compare", "--a", str(w["eval_a"]), "--b", str(w["eval_b"]), "--resamples", "100"]
            + ["--output", str(blocker / "cmp.json")],
        ),
        # ab: the recipe, held-out rows, tasks and output folders are checked before any run trains; the
        # model loads first in the first run (the held-out rows are the training data: any train format reads)
        Cell("ab", "missing_file", ["ab", "--config", str(w["recipe"]), "--heldout", str(missing / "held.jsonl")]),
        Cell("ab", "wrong_type", ["ab", "--seeds", "many"]),
        Cell(
            "ab",
            "unknown_model",
            ["ab", "--config", str(w["recipe"]), "--heldout", data, "--train_args=--model nosuchmodel"]
            + ["--output_dir", out],
        ),
        Cell(
            "ab",
            "unknown_name",
            ["ab", "--config", str(w["recipe"]), "--heldout", data, "--tasks", "nosuchtask", "--output_dir", out],
        ),
        Cell("ab", "unreadable", ["ab", "--config", str(w["recipe"]), "--heldout", str(u / "data.jsonl")]),
        Cell(
            "ab",
            "unwritable_output",
            ["ab", "--config", str(w["recipe"]), "--heldout", data, "--output_dir", str(blocker / "ab")],
        ),
    ]
    covered = {(c.command, c.kind) for c in cells}
    every = {(c, k) for c in COMMANDS for k in KINDS}
    assert covered | set(NOT_APPLICABLE) == every and not covered & set(NOT_APPLICABLE), "the matrix has a hole"
    return cells


def error_lines(stderr: str) -> list[str]:
    """The error lines: `qtuning: error: ...`, or argparse's `qtuning <command>: error: ...`."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("qtuning: error: ")
        or (line.startswith("qtuning ") and ": error: " in line and line.split(": error: ")[0].count(" ") == 1)
    ]


def judge(returncode: int | None, stderr: str) -> tuple[bool, str, str]:
    """(kept the promise, why not, the error line) of one finished command."""
    lines = error_lines(stderr)
    if returncode is None:
        return False, "timed out", ""
    if "Traceback" in stderr:
        last = [line for line in stderr.splitlines() if line.strip()][-1:]
        return False, f"traceback: {last[0][:200] if last else '?'}", ""
    if returncode not in (1, 2):
        return False, f"exit status {returncode}", lines[0] if lines else ""
    if len(lines) != 1:
        return False, f"{len(lines)} error lines", ""
    return True, "", lines[0]


def run_cell(cell: Cell, prefix: list[str] | None = None, timeout: float = 300) -> Outcome:
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **cell.env}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [*(prefix or []), *QTUNING_CLI, *cell.argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        returncode, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        returncode, stderr = None, ""
    ok, problem, line = judge(returncode, stderr)
    return Outcome(cell.name, returncode, ok, problem, line, round(time.perf_counter() - started, 1))
