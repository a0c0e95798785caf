"""The per-step plan log: one JSON line per planned micro-batch, for the analysis tools.

Line format (columnar per sample, so that `pandas.DataFrame(line["samples"])` works):

    {"step": 3, "micro_batch": 0, "rank": 0, "pool_size": 8, "target_count": 2, "alpha": 0.43, ...,
     "samples": {"id": [...], "ppl": [...], "entropy": [...], "quadrant": [...], "role": [...],
                 "supplemented": [...], "trainable_tokens": [...], "kept_tokens": [...]},
     "tokens": [{"id": 17, "token_ids": [...], "score": [...], "kept": [...]}, ...]}

`step` is the optimizer step the micro-batch belongs to (1-based). "tokens" lists the token-prunable
kept samples only (Q2; under a baseline sample pruner, every kept sample): their response tokens,
scores (smoothed s_i, or the baseline token pruner's priority) and kept flags.
Resuming truncates the lines of steps after the checkpoint, so nothing is duplicated. Every rank
writes its own log (`plan_log_path`); `read_plan_log` reads one, `read_run_plans` a whole run's.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ..engine.selection import Role, SelectionPlan
from ..errors import PlanLogError, StorageError
from ..files import atomic_write_text, write_failure
from .run_files import PLAN_LOG_FILE, PLAN_LOG_RANKS_GLOB, plan_log_name  # noqa: F401  (PLAN_LOG_FILE: its old home)

# the plan's scalars, but the kept samples' trainable tokens (the "samples" columns give them)
_SCALARS = tuple(name for name in SelectionPlan.SCALARS if name != "num_trainable_tokens_kept_samples")


def plan_records(
    plan: SelectionPlan,
    *,
    step: int,
    micro_batch: int,
    rank: int = 0,
    sample_ids: list[int] | None = None,
    input_ids: torch.Tensor | None = None,
) -> dict:
    """One log line for one plan. input_ids (B, T), unshifted, to log the Q2 samples' tokens."""
    batch = plan.sample_keep.shape[0]
    ids = sample_ids if sample_ids is not None else list(range(batch))
    record = {"step": step, "micro_batch": micro_batch, "rank": rank}
    record.update({name: getattr(plan, name) for name in _SCALARS})
    record["samples"] = {
        "id": ids,
        "ppl": [round(v, 6) for v in plan.sample_ppl.tolist()],
        "entropy": [round(v, 6) for v in plan.sample_entropy.tolist()],
        "quadrant": plan.quadrant.tolist(),
        "role": plan.kept_role.tolist(),
        "supplemented": plan.supplemented.tolist(),
        "trainable_tokens": plan.num_trainable_tokens.tolist(),
        "kept_tokens": plan.token_keep.sum(dim=1).tolist(),
    }
    if input_ids is not None:
        input_ids = input_ids.cpu()
        targets = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)  # target of position t is token t + 1
        candidates = plan.token_score != 0
        tokens = []
        prunable = (plan.kept_role == Role.Q2) | (plan.kept_role == Role.KEPT)  # (B,)
        for b in prunable.nonzero().flatten().tolist():
            where = candidates[b]
            tokens.append(
                {
                    "id": ids[b],
                    "token_ids": targets[b][where].tolist(),
                    "score": [round(v, 4) for v in plan.token_score[b][where].tolist()],
                    "kept": plan.token_keep[b][where].tolist(),
                }
            )
        record["tokens"] = tokens
    return record


class PlanLog:
    """Append-only JSONL writer that can drop lines of steps after a resumed checkpoint.

    A write that fails (the disk or a file size limit is full) raises a StorageError naming the file and
    closes it: what it holds up to the last checkpoint was flushed then, and the line cut short that may
    follow is dropped when the run resumes."""

    def __init__(self, path: str | os.PathLike, keep_up_to_step: int = 0):
        self.path = Path(path)
        self._handle = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                # A line cut short by a crash ends the readable log: nothing after it is trustworthy.
                kept = [line for _, line, rec in _lines(self.path, strict=False) if rec["step"] <= keep_up_to_step]
                atomic_write_text(self.path, "".join(kept))
            self._handle = open(self.path, "a")
        except OSError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: OSError) -> StorageError:
        """Close the file without writing what is buffered (the write would fail again, at exit)."""
        if self._handle is not None and not self._handle.closed:
            with contextlib.suppress(OSError, ValueError):
                self._handle.close()  # marks it closed even when its last flush fails
        return StorageError(f"plan log {self.path} could not be written: {write_failure(exc, self.path.parent)}")

    def write(self, record: dict) -> None:
        try:
            self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:
            raise self._failed(exc) from exc

    def flush(self) -> None:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise self._failed(exc) from exc

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            try:
                self._handle.close()
            except OSError as exc:
                raise self._failed(exc) from exc


def _lines(path: Path, strict: bool) -> Iterator[tuple[int, str, dict]]:
    """(line number, the line with its newline, its record) of each non-empty line of a plan log.

    A line that is not a plan record (not JSON, or no 'step' and 'samples'): a PlanLogError when
    `strict`, else the end of the log (what a crash mid-write leaves)."""
    try:
        handle = open(path)
    except OSError as exc:
        raise PlanLogError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if not strict:
                    return
                raise PlanLogError(
                    f"{path}: line {number} is not valid JSON ({exc.msg}); expected one plan per "
                    "line, as `qtuning train` writes"
                ) from exc
            if not isinstance(record, dict) or "step" not in record or "samples" not in record:
                if not strict:
                    return
                raise PlanLogError(f"{path}: line {number} is not a plan record (expected 'step' and 'samples')")
            yield number, line if line.endswith("\n") else line + "\n", record


def read_plan_log(path: str | os.PathLike) -> list[dict]:
    """The records of one plan log, in order; a PlanLogError names the first line that is not one."""
    return [record for _, _, record in _lines(Path(path), strict=True)]


def plan_log_path(output_dir: str | os.PathLike, rank: int = 0) -> Path:
    """Where rank `rank` of a run logs its plans: PLAN_LOG_FILE, or qtuning_plans.rank<N>.jsonl."""
    return Path(output_dir) / plan_log_name(rank)


def plan_log_paths(output_dir: str | os.PathLike) -> list[Path]:
    """Every rank's plan log in a run's output_dir (rank 0 first), those that exist."""
    folder = Path(output_dir)
    ranks = sorted(folder.glob(PLAN_LOG_RANKS_GLOB))
    return [p for p in [plan_log_path(folder), *ranks] if p.is_file()]


def read_run_plans(output_dir: str | os.PathLike) -> list[dict]:
    """Every plan record of a run (all ranks), ordered by step, rank, micro-batch."""
    plans = [record for path in plan_log_paths(output_dir) for record in read_plan_log(path)]
    plans.sort(key=lambda p: (p["step"], p.get("rank", 0), p.get("micro_batch", 0)))
    return plans
