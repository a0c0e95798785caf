"""The statistics, logs, checkpoints and end-of-run summary of QTuningTrainerMixin: per-step metrics and
failure-signature notices, checkpoints that are complete or absent (Q-Tuning's state written last), SIGTERM
handling. A base of QTuningTrainerMixin; not used alone."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from ..data.plan_log import PlanLog, plan_log_path, plan_records
from ..data.row_groups import write_groups
from ..data.row_ids import ID_KEY
from ..data.run_files import (
    CHECKPOINT_GLOB,
    CHECKPOINT_STATE_FILE,
    GROUPS_FILE,
    SUMMARY_FILE,
    checkpoint_dir_name,
    score_cache_name,
)
from ..engine.history import ScoreWindow
from ..engine.selection import Role, SelectionPlan
from ..engine.signatures import COLLAPSE_SHARE, failure_signatures
from ..extras import missing_extra
from ..notices import notice
from .distributed import gather_objects
from .stale import ScoreCache

try:
    from transformers import TrainerCallback
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "mixin", "QTuningTrainerMixin (and QTuningSFTTrainer)") from None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint-N folder of a run that holds CHECKPOINT_STATE_FILE (written last, so the
    checkpoint is complete); None if there is none. A folder cut short (the run was killed, the disk filled
    while it was written) is passed over."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    complete = [
        (int(p.name.rsplit("-", 1)[1]), p)
        for p in folder.glob(CHECKPOINT_GLOB)
        if p.name.rsplit("-", 1)[1].isdigit() and (p / CHECKPOINT_STATE_FILE).is_file()
    ]
    return str(max(complete)[1]) if complete else None


class _Bookkeeping:
    """Metrics, logs, notices, checkpoints and the summary of a Q-Tuning run."""

    def _record_plan(self, plan: SelectionPlan, batch, index: int, attention: torch.Tensor, scored: bool):
        self._qt_metrics.add_plan(plan, attention, scored)
        ids = batch.get(ID_KEY)  # (B,) dataset row ids, or None
        if self._qt_groups is not None and ids is not None:
            kept = (plan.kept_role != Role.DROPPED).tolist()
            self._qt_metrics.add_groups([self._qt_groups[i] for i in ids.tolist()], kept)
        if self._plan_log is not None:  # unscored baselines too: PPL 1 and Ent 0, but who was kept
            self._plan_log.write(
                plan_records(
                    plan,
                    step=self.state.global_step + 1,
                    micro_batch=index,
                    rank=self.args.process_index,
                    sample_ids=None if ids is None else ids.tolist(),
                    input_ids=batch["input_ids"] if self.qt_settings.plan_log_tokens else None,
                )
            )

    def _sum_over_ranks(self):
        """The reduce RunMetrics sums with: over ranks on several processes, None on one."""
        return (lambda values: self.accelerator.reduce(values, reduction="sum")) if self.args.world_size > 1 else None

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.model.training and "loss" in logs:
            logs.update(self._window_metrics())
        super().log(logs, *args, **kwargs)

    def _window_metrics(self) -> dict[str, float]:
        w = self._qt_metrics.take_window(self._sum_over_ranks(), self.args.device)
        out = self._qt_metrics.log_metrics(w, stale=self._qt_cache is not None)
        if out:
            self._notice_failure_signatures(w)
        return out

    def _notice_failure_signatures(self, w: dict[str, float]) -> None:
        """The failure signatures (qtuning.engine.signatures) over the samples since the last log, as one-line
        `[qtuning]` notices on rank 0 (qtuning.notices); each kind at most every warn_every_steps steps."""
        if self.qt_settings.pruning_method == "none" or not w.get("samples") or not w.get("trainable_tokens"):
            return  # nothing scored since the last log (every row without a trainable token): nothing to judge
        step = self.state.global_step
        shares = [w.get(f"q{q}", 0) / w["samples"] for q in range(1, 5)]
        fired = failure_signatures(
            shares,
            plans=w["plans"],
            converged=w.get("converged", 0),
            kept=w.get("kept", 0),
            supplemented=w.get("supplemented", 0),
        )
        messages = {
            "collapse": f"quadrant collapse: Q1-Q4 shares {[round(s, 3) for s in shares]} (two or more under "
            f"{COLLAPSE_SHARE:.0%}); the thresholds barely separate the samples (try a larger selection "
            "pool)",
            "bisection": f"the bisection missed its tolerance in {1 - w.get('converged', 0) / w['plans']:.0%} of the "
            "plans: the kept fraction is set by the supplement, not by the quantiles",
            "supplement": f"the supplement chose {w.get('supplemented', 0) / max(1.0, w.get('kept', 0)):.0%} of the "
            "kept samples",
        }
        for kind, message in messages.items():
            last = self._qt_last_warned.get(kind)
            if fired[kind] and (last is None or step - last >= self.qt_settings.warn_every_steps):
                self._qt_last_warned[kind] = step
                if self.is_world_process_zero():
                    every = self.qt_settings.warn_every_steps
                    notice(f"failure signature at step {step}: {message} (each kind at most every {every} steps)")

    # ------------------------------------------------------------------ checkpoints and the summary
    def _save_checkpoint(self, model, trial, *args, **kwargs):
        """The Trainer's checkpoint, then Q-Tuning's state; complete or absent. The plan log is flushed first
        (a checkpoint implies its steps' plans are on disk); CHECKPOINT_STATE_FILE is written last and marks
        the checkpoint complete; older checkpoints are rotated out (save_total_limit) only after that. A
        failed write removes the partial folder and raises a StorageError naming the checkpoint kept; with
        several ranks, on every rank at once (they exchange their outcomes), so none waits for one that
        gave up."""
        from ..files import atomic_path, atomic_write_text

        run_dir = self._get_output_dir(trial)
        folder = Path(run_dir) / checkpoint_dir_name(self.state.global_step)
        limit = self.args.save_total_limit
        failure = None
        try:
            if self._plan_log is not None:
                self._plan_log.flush()
            self.args.save_total_limit = None  # no rotation before this checkpoint is complete
            try:
                super()._save_checkpoint(model, trial, *args, **kwargs)
            finally:
                self.args.save_total_limit = limit
            if self._qt_cache is not None and folder.is_dir():  # every rank its own: the rows it has seen
                with atomic_path(folder / score_cache_name(self.args.process_index)) as tmp:
                    torch.save(self._qt_cache.state_dict(), tmp)
        except Exception as exc:
            failure = exc
        # the marker below only once every rank's files (RNG states, caches) are in: the exchange is the barrier
        self._qt_checkpoint_outcome(folder, failure)
        # every rank reaches this point (the exchange above raised on all of them otherwise): sum the counts
        totals = self._qt_metrics.summed_totals(self._sum_over_ranks(), self.args.device)
        if self.is_world_process_zero() and folder.is_dir():
            state = {"totals": totals, "totals_over_ranks": True}
            if self._qt_history is not None:  # the score window: a resumed run selects as if never stopped
                state["history"] = self._qt_history.state_dict()
            if self._qt_chooser is not None:
                state["scoring_auto"] = self._qt_chooser.state_dict()
            try:  # written last (atomically): its presence marks a complete checkpoint
                atomic_write_text(folder / CHECKPOINT_STATE_FILE, json.dumps(state, indent=1))
            except Exception as exc:
                failure = exc
        if self.args.world_size > 1 or failure is not None:
            self._qt_checkpoint_outcome(folder, failure)  # rank 0's marker: the others learn of its failure
        self._qt_rotate_checkpoints(run_dir, limit)

    def _qt_checkpoint_outcome(self, folder: Path, failure: Exception | None) -> None:
        """Every rank's outcome of its part of a checkpoint, exchanged (a collective with several ranks):
        returns when all wrote theirs; otherwise removes what there is of the folder and raises, on every
        rank, a StorageError that names the rank(s) that failed, why, and the checkpoint kept. An error that
        is not a failed write (a bug) is re-raised as it is on its own rank."""
        import shutil

        from ..errors import QTuningError, StorageError
        from ..files import is_write_failure, reason, write_failure
        from .distributed import gather_objects

        own_bug = failure is not None and (
            isinstance(failure, QTuningError) or not (isinstance(failure, OSError) or is_write_failure(failure))
        )
        if failure is None:
            mine = None  # written
        elif own_bug:
            mine = (False, f"{type(failure).__name__}: {reason(failure)[:200]}")
        else:
            mine = (True, write_failure(failure, folder.parent))
        # [rank]: None, or (whether it was a failed write, why)
        outcomes = gather_objects(mine, step=self.state.global_step, owner="checkpoint")
        failed = [(rank, outcome) for rank, outcome in enumerate(outcomes) if outcome is not None]
        if not failed:
            return
        shutil.rmtree(folder, ignore_errors=True)
        if own_bug:
            raise failure
        kept = last_complete_checkpoint(folder.parent)
        resume = f"{kept} is intact: resume from it with --resume_from_checkpoint true" if kept else "none was kept"
        if all(write_failed for _, (write_failed, _) in failed):
            resume += " once there is room"
        where = "; ".join(f"rank {rank}: {why}" for rank, (_, why) in failed) if len(outcomes) > 1 else failed[0][1][1]
        error = StorageError(f"checkpoint {folder} could not be written ({where}) and was removed; {resume}")
        error.same_on_every_rank = len(outcomes) > 1
        raise error from failure

    def _qt_rotate_checkpoints(self, run_dir: str, limit: int | None) -> None:
        """What the Trainer's _save_checkpoint does last (delete checkpoints beyond save_total_limit), done
        after CHECKPOINT_STATE_FILE is written."""
        if not limit or not self.args.should_save:
            return
        try:
            from transformers.trainer_utils import rotate_checkpoints  # transformers >= 5
        except ImportError:  # transformers 4: a Trainer method, reading args.save_total_limit
            self._rotate_checkpoints(use_mtime=False, output_dir=run_dir)
            return
        rotate_checkpoints(
            output_dir=run_dir,
            save_total_limit=limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=True,
        )

    def _on_train_begin(self, resume_from: str | None):
        if self._qt_checks_pending:
            self._start_up_checks(self.model_wrapped)
        if resume_from and (Path(resume_from) / CHECKPOINT_STATE_FILE).is_file():
            saved = json.loads((Path(resume_from) / CHECKPOINT_STATE_FILE).read_text())
            totals = saved["totals"]
            if saved.get("totals_over_ranks") and self.args.process_index != 0:
                totals = dict.fromkeys(totals, 0.0)  # rank 0 carries the sums of every rank's counts so far
            self._qt_metrics.load_totals(totals)
            if self._qt_history is not None and "history" in saved:
                self._qt_history = ScoreWindow.from_state_dict(saved["history"])
            if self._qt_chooser is not None and "scoring_auto" in saved:
                self._qt_chooser.load_state_dict(saved["scoring_auto"])
        groups = self._qt_groups
        names = sorted(set(groups)) if groups is not None else []
        if groups is not None and self.args.world_size > 1:  # the union: a rank may hold other rows
            names = sorted(set().union(*gather_objects(names, owner="group_field")))
        self._qt_metrics.start_groups(names)  # after load_totals: a resumed run counts on
        if resume_from and self._qt_cache is not None:
            path = Path(resume_from) / score_cache_name(self.args.process_index)
            if path.is_file():
                self._qt_cache = ScoreCache.from_state_dict(torch.load(path, weights_only=True))
        if self.qt_settings.plan_log and self.qt_settings.pruning_method != "none":
            # On resume, drop what was logged after the checkpoint: those steps are about to run again.
            self._plan_log = PlanLog(
                plan_log_path(self.args.output_dir, self.args.process_index), keep_up_to_step=self.state.global_step
            )
            if self.is_world_process_zero() and groups is not None:  # the plan log's row ids -> their groups
                write_groups(self.args.output_dir, self.qt_settings.group_field, groups)
            elif self.is_world_process_zero() and not resume_from:  # an earlier run's groups: not this log's
                (Path(self.args.output_dir) / GROUPS_FILE).unlink(missing_ok=True)
        self._qt_reuse_index = 0
        self._qt_train_started = time.perf_counter()

    def _on_step_end(self):
        if self._qt_step_started is not None:
            if self._qt_chooser is not None and self._qt_chooser.chosen is None and torch.cuda.is_available():
                torch.cuda.synchronize()  # scoring="auto" is timing this step: count its queued kernels
            step_s = time.perf_counter() - self._qt_step_started
            self._qt_metrics.add(step_s=step_s, scoring_s=self._qt_step_scoring_s)
            if self._qt_chooser is not None:
                self._record_step_time(self.state.global_step, step_s)
        self._qt_reuse_index = 0

    def _record_step_time(self, step: int, seconds: float) -> None:
        """scoring="auto": feed a finished step's time; announce the choice once it is made."""
        chosen = self._qt_chooser.record(step, self._qt_step_mode, seconds)
        if chosen is not None and self.is_world_process_zero():
            c = self._qt_chooser
            print(
                f"[qtuning] scoring auto: {chosen} from step {step + 1} on (fastest step {min(c.probe_s):.3f} "
                f"s probe, {min(c.reuse_s):.3f} s reuse)",
                flush=True,
            )

    def _on_train_end(self):
        if self._plan_log is not None:
            self._plan_log.close()
        summary = self._qt_metrics.summary(
            self._sum_over_ranks(),
            self.args.device,
            wall_clock_s=time.perf_counter() - self._qt_train_started,
            optimizer_steps=self.state.global_step,
            scoring_mode=self._qt_chooser.chosen if self._qt_chooser is not None else self.qt_settings.scoring,
            output_dir=str(self.args.output_dir),
            plan_log=str(self._plan_log.path) if self._plan_log is not None else None,
        )
        from .environment import environment

        summary["environment"] = environment(self.args.device, self.args.world_size)
        self.qtuning_summary = summary
        if self.is_world_process_zero():
            from ..files import atomic_write_text

            os.makedirs(self.args.output_dir, exist_ok=True)
            atomic_write_text(Path(self.args.output_dir) / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")


class _QTuningCallback(TrainerCallback):
    def __init__(self, trainer: _Bookkeeping):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._on_train_begin(getattr(self.trainer, "_qt_resume_from", None))

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._on_step_end()
        if self.trainer._qt_stop_signal is not None:  # SIGTERM: a checkpoint at this step's end, then stop
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer._on_train_end()


class _SigtermStop:
    """SIGTERM during train() on a single process: a one-line notice, then the current step finishes, a
    checkpoint is saved and train() raises TrainingStopped (the `qtuning` command exits with 143). A second
    SIGTERM ends the process at once (a checkpoint cut short is passed over on resume). Installed only on one
    process, from the main thread, over the default handler: under torchrun the agent's SIGTERM ends every
    rank (the ranks could not agree on where to stop), and a handler the caller set is left alone."""

    def __init__(self, trainer: _Bookkeeping):
        self.trainer = trainer
        self.installed = False

    def __enter__(self):
        trainer = self.trainer
        trainer._qt_stop_signal = None
        if (
            trainer.args.world_size == 1
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
        ):
            signal.signal(signal.SIGTERM, self._handle)
            self.installed = True
        return self

    def _handle(self, signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM: the default, the process ends
        self.trainer._qt_stop_signal = "SIGTERM"
        # print, not qtuning.notices: a signal handler must not wait for a logging lock the interrupted code holds
        print(
            f"[qtuning] SIGTERM: stopping after step {self.trainer.state.global_step + 1} with a checkpoint "
            "(send it again to stop at once, without one)",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        if self.installed and signal.getsignal(signal.SIGTERM) == self._handle:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return False
