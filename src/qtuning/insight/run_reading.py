"""Reading what `qtuning train` leaves in its output_dir (trainer state, plan logs, the summary) and the per-
step tables the run report draws."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..data.plan_log import plan_log_path, read_run_plans
from ..data.row_groups import read_groups
from ..data.run_files import CHECKPOINT_GLOB, GROUPS_FILE, PLAN_LOG_FILE, SUMMARY_FILE, TRAINER_STATE_FILE
from ..engine.selection import Role
from ..errors import PlanLogError, ReportError


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except OSError as exc:  # no permission, a broken disk
        raise ReportError(f"{path} cannot be read ({exc.strerror or exc}); expected {what}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected {what}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected {what}") from exc


def find_state(run_dir: Path) -> Path | None:
    """trainer_state.json of the run, or of its newest checkpoint if the run did not finish."""
    if (run_dir / TRAINER_STATE_FILE).is_file():
        return run_dir / TRAINER_STATE_FILE

    def number(path: Path) -> int:
        suffix = path.parent.name.rsplit("-", 1)[-1]
        return int(suffix) if suffix.isdigit() else -1

    checkpoints = sorted(run_dir.glob(f"{CHECKPOINT_GLOB}/{TRAINER_STATE_FILE}"), key=number)
    return checkpoints[-1] if checkpoints else None


@dataclass
class Run:
    """What a run directory holds."""

    path: Path
    log_history: list[dict]
    plans: list[dict]
    summary: dict | None
    state_path: Path | None
    group_field: str | None = None  # the trainer's group_field, when the run logged groups
    groups: list[str] | None = None  # row id -> group (GROUPS_FILE)


def read_run(run_dir: str | os.PathLike) -> Run:
    path = Path(run_dir).expanduser()
    expected = (
        f"the output_dir of a `qtuning train` run (holding {TRAINER_STATE_FILE} and {PLAN_LOG_FILE}, "
        f"or a {CHECKPOINT_GLOB}/{TRAINER_STATE_FILE})"
    )
    if not path.exists():
        raise ReportError(f"{path}: no such directory; expected {expected}")
    if not path.is_dir():
        raise ReportError(f"{path}: is a file, not a directory; expected {expected}")
    state_path = find_state(path)
    plans_path = plan_log_path(path)
    if state_path is None and not plans_path.is_file():
        contents = sorted(p.name for p in path.iterdir())[:8]
        raise ReportError(f"{path}: {'empty' if not contents else 'holds ' + ', '.join(contents)}; expected {expected}")
    history = []
    if state_path is not None:
        state = read_json(state_path, "the Trainer's state with a log_history list")
        if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
            raise ReportError(f"{state_path}: no 'log_history' list; expected the Trainer's trainer_state.json")
        history = state["log_history"]
    # every rank writes its own log (qtuning_plans.rank1.jsonl, ...): a step's statistics cover all of them
    try:
        plans = read_run_plans(path)
    except PlanLogError as exc:
        raise ReportError(str(exc)) from exc
    summary_path = path / SUMMARY_FILE
    summary = read_json(summary_path, "the run's summary object") if summary_path.is_file() else None
    if not plans and not any("loss" in h for h in history):
        raise ReportError(
            f"{path}: the run logged no training step yet ({state_path or plans_path} is empty); nothing to report"
        )
    group_field, groups = read_groups(path)
    if groups is not None:
        top = max((int(i) for plan in plans for i in plan["samples"].get("id", [])), default=-1)
        if top >= len(groups):
            raise ReportError(
                f"{path}: the plan log names row id {top}, but {GROUPS_FILE} holds groups for {len(groups)} rows: "
                f"the two files are not from the same run (delete {GROUPS_FILE} to report without groups)"
            )
    return Run(
        path=path,
        log_history=history,
        plans=plans,
        summary=summary,
        state_path=state_path,
        group_field=group_field,
        groups=groups,
    )


def per_step_from_plans(plans: list[dict]) -> dict[int, dict]:
    """Per optimizer step, over every micro-batch (and rank) of that step: the Q-Tuning statistics."""
    acc: dict[int, dict] = defaultdict(lambda: defaultdict(float))
    for plan in plans:
        s = plan["samples"]
        a = acc[int(plan["step"])]
        roles = s.get("role", [])
        a["plans"] += 1
        a["samples"] += len(roles)
        a["kept"] += sum(1 for r in roles if r)
        for q in range(1, 5):
            a[f"q{q}"] += sum(1 for v in s.get("quadrant", []) if v == q)
        a["alpha"] += plan.get("alpha", 0.0)
        a["beta"] += plan.get("beta", 0.0)
        a["trainable_tokens"] += sum(s.get("trainable_tokens", []))
        a["kept_tokens"] += sum(s.get("kept_tokens", []))
        a["converged"] += int(bool(plan.get("converged", False)))
    out = {}
    for step, a in sorted(acc.items()):
        n = max(1.0, a["samples"])
        out[step] = {
            "kept_sample_fraction": a["kept"] / n,
            "alpha": a["alpha"] / a["plans"],
            "beta": a["beta"] / a["plans"],
            "kept_token_fraction": a["kept_tokens"] / max(1.0, a["trainable_tokens"]),
            "tokens_scored": a["trainable_tokens"],
            "tokens_trained": a["kept_tokens"],
            "bisection_converged_share": a["converged"] / a["plans"],
            **{f"quadrant_q{q}": a[f"q{q}"] / n for q in range(1, 5)},
        }
    return out


def kept_by_length_quarter(plans: list[dict]) -> list[dict]:
    """Which samples a run kept, by length: every scored sample of the plan log (one entry per time it
    was scored), sorted by its trainable response tokens and cut into four equal-count quarters
    (shortest first; ties keep log order). Per quarter: its token range, the samples scored, and the
    shares kept, kept as Q2 (token-pruned) and kept as Q4 (whole). A selection that favours short or
    long responses shows here; a uniform one keeps the same share of every quarter."""
    scored = [
        (tokens, role)
        for plan in plans
        for tokens, role in zip(plan["samples"].get("trainable_tokens", []), plan["samples"].get("role", []))
    ]
    if len(scored) < 4:
        return []
    scored.sort(key=lambda entry: entry[0])  # stable: equal lengths keep their log order
    out = []
    for q in range(4):
        part = scored[q * len(scored) // 4 : (q + 1) * len(scored) // 4]
        n = len(part)
        out.append(
            {
                "quarter": q + 1,
                "response_tokens": f"{part[0][0]}-{part[-1][0]}",
                "samples_scored": n,
                "kept_share": round(sum(1 for _, r in part if r != Role.DROPPED) / n, 3),
                "q2_share": round(sum(1 for _, r in part if r == Role.Q2) / n, 3),
                "q4_share": round(sum(1 for _, r in part if r == Role.Q4) / n, 3),
            }
        )
    return out


def _group_of(groups: list[str], row_id: int) -> str:
    if not 0 <= row_id < len(groups):
        raise ReportError(
            f"the plan log names row id {row_id}, but the run's groups cover {len(groups)} rows: "
            "the groups file and the plan log are not from the same run"
        )
    return groups[row_id]


def kept_by_group(plans: list[dict], groups: list[str]) -> list[dict]:
    """Which groups of rows (the trainer's group_field: source, task, family) the selection kept.

    Per group, largest first: `rows` in the training set and `rows_trained` (distinct rows kept at least
    once); `samples_scored` (one per time one of its rows was scored); the shares of those kept, kept as
    Q2 and kept as Q4; and the group's share of all response tokens scored against its share of the
    loss tokens trained. A selection blind to the groups keeps about the same share of each, and
    gives each about its scored share of the loss; one that moves the budget between groups shows here.

    Raises:
        ReportError: a row id of the plan log has no group (the files are from different runs).
    """
    acc: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    trained_rows: dict[str, set] = defaultdict(set)
    for plan in plans:
        s = plan["samples"]
        for row_id, role, scored, kept in zip(
            s.get("id", []), s.get("role", []), s.get("trainable_tokens", []), s.get("kept_tokens", [])
        ):
            group = _group_of(groups, int(row_id))
            a = acc[group]
            a["samples"] += 1
            a["kept"] += role != Role.DROPPED
            a["q2"] += role == Role.Q2
            a["q4"] += role == Role.Q4
            a["tokens_scored"] += scored
            a["tokens_trained"] += kept if role != Role.DROPPED else 0
            if role != Role.DROPPED:
                trained_rows[group].add(int(row_id))
    rows_per_group: dict[str, int] = defaultdict(int)
    for group in groups:
        rows_per_group[group] += 1
    all_scored = max(1.0, sum(a["tokens_scored"] for a in acc.values()))
    all_trained = max(1.0, sum(a["tokens_trained"] for a in acc.values()))
    out = []
    for group in sorted(rows_per_group, key=lambda g: (-rows_per_group[g], g)):
        a = acc.get(group, {})
        n = a.get("samples", 0)
        out.append(
            {
                "group": group,
                "rows": rows_per_group[group],
                "rows_trained": len(trained_rows.get(group, ())),
                "samples_scored": int(n),
                "kept_share": round(a["kept"] / n, 3) if n else None,
                "q2_share": round(a["q2"] / n, 3) if n else None,
                "q4_share": round(a["q4"] / n, 3) if n else None,
                "tokens_scored_share": round(a.get("tokens_scored", 0) / all_scored, 3),
                "tokens_trained_share": round(a.get("tokens_trained", 0) / all_trained, 3),
            }
        )
    return out


def kept_share_by_group_over_steps(
    plans: list[dict], groups: list[str], bins: int = 10
) -> tuple[list[int], dict[str, list[float | None]]]:
    """Each group's kept share over the run, in up to `bins` equal ranges of optimizer steps (the
    per-step shares are too few samples to read). Returns (the last step of each range, {group: shares}),
    a share None where the range scored none of the group's rows."""
    steps = sorted({int(p["step"]) for p in plans})
    if not steps:
        return [], {}
    first, last = steps[0], steps[-1]
    bins = max(1, min(bins, last - first + 1))
    width = (last - first + 1) / bins
    ends = [first + round((b + 1) * width) - 1 for b in range(bins)]
    counts: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in range(bins)])
    for plan in plans:
        b = min(bins - 1, int((int(plan["step"]) - first) / width))
        s = plan["samples"]
        for row_id, role in zip(s.get("id", []), s.get("role", [])):
            cell = counts[_group_of(groups, int(row_id))][b]
            cell[0] += 1
            cell[1] += role != Role.DROPPED
    series = {g: [kept / n if n else None for n, kept in counts[g]] for g in sorted(counts)}
    return ends, series


def per_step_from_history(history: list[dict]) -> dict[int, dict]:
    """The training log entries (those with a loss), keyed by step, 'qtuning/' prefixes dropped."""
    out = {}
    for entry in history:
        if "loss" in entry and "step" in entry:
            out[int(entry["step"])] = {k.removeprefix("qtuning/"): v for k, v in entry.items()}
    return out
