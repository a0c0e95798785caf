"""QTuningTrainerMixin: Q-Tuning's dynamic sample and token pruning inside any transformers.Trainer.

    class MyTrainer(QTuningTrainerMixin, SomeTrainer): ...      # the mixin first, then the Trainer
    trainer = MyTrainer(model=..., args=training_args, train_dataset=tokenized, data_collator=...,
                        qtuning_config=QTuningTrainingConfig(sample_ratio=0.25, token_ratio=0.5))

The settings come from `args` when it is a QTuningTrainingConfig (QTuningSFTConfig is one), else from
the `qtuning_config=` keyword (how a framework with its own TrainingArguments uses it). The batches
must carry input_ids, attention_mask and labels (B, T), right-padded, labels -100 where no loss is
taken. Imports transformers, not trl; `QTuningSFTTrainer` (qtuning.trainer) is this mixin on TRL's
SFTTrainer.

Per optimizer step (probe mode, the default):
  1. `get_batch_samples` fetches the step's micro-batches, scores each with a no-grad probe and
     plans them (`plan_step`: per micro-batch, per global batch across ranks, or over the whole
     step, by `selection_pool`); the kept trainable tokens of the whole step are counted.
  2. `compute_loss` runs forward+backward on the kept rows only, pad columns that no kept row
     needs trimmed, with the LM head applied only at kept loss positions.
  3. The loss is sum(CE over kept tokens) / (kept tokens of the whole step, all ranks), so
     gradient accumulation gives exactly the gradient of one big batch of the same kept tokens.
Reuse mode (the authors' code) plans inside `compute_loss` from the training forward itself;
there the loss is normalised per micro-batch and averaged over the accumulation steps.
Stale mode is probe mode in which rows scored before keep their cached scores (qtuning.stale):
only unscored rows and a random share of the others are probed, and the kept rows' scores are
refreshed from their training forward.

Row ids (the plan log's sample ids, stale mode's cache keys): a `datasets.Dataset` passed as
train_dataset= gets an id column and the collator is wrapped to carry it (qtuning.data.row_ids). Other
datasets get none: the plan log names each sample by its position in the micro-batch instead, and
`scoring: stale` is refused at start-up.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from .data.plan_log import PlanLog, plan_log_path, plan_records
from .data.row_ids import ID_KEY, TOKEN_ID_KEY, CollatorWithIds, carries_row_ids, with_row_ids
from .data.run_files import (
    CHECKPOINT_GLOB,
    CHECKPOINT_STATE_FILE,
    SCORE_CACHE_FILE,
    SUMMARY_FILE,
    checkpoint_dir_name,
    score_cache_name,
)
from .distributed import all_reduce_sum, plan_step
from .engine.history import ScoreWindow
from .engine.policies import needs_scores
from .engine.scoring import IGNORE_INDEX, shift_labels, shift_mask
from .engine.seeds import derive_seed
from .engine.selection import ScoredBatch, SelectionPlan, prepare_scores
from .engine.signatures import COLLAPSE_SHARE, failure_signatures
from .engine.training_config import QTuningTrainingConfig
from .errors import ConfigError
from .extras import missing_extra
from .modeling.kept_batch import apply_plan, loss_on_kept
from .modeling.padding_free import pack, scatter_rows, unpack
from .modeling.probe import (
    ProbeSettings,
    check_head_path,
    check_packed_attention,
    forward_final_hidden,
    nll_sum,
    scores_from_hidden,
)
from .notices import notice
from .run_metrics import RunMetrics
from .scoring_mode import ScoringModeChooser
from .stale import ScoreCache, rows_to_probe

try:
    from transformers import Trainer, TrainerCallback
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "mixin", "QTuningTrainerMixin (and QTuningSFTTrainer)") from None

PLAN_KEY = "qtuning_plan"  # where a micro-batch carries its plan from get_batch_samples to compute_loss
PACKED_KEY = "qtuning_packed"  # a micro-batch unpacked from a padding-free row: train it packed again
# transformers < 5 has no Trainer.loss_is_scaled_for_ga: it divides the loss by the accumulation steps
# unless the model "accepts loss kwargs" and get_batch_samples returned a token count
_LEGACY_GA_SCALING = not hasattr(Trainer, "loss_is_scaled_for_ga")

__all__ = [
    "CHECKPOINT_STATE_FILE",
    "ID_KEY",
    "PLAN_KEY",
    "QTuningTrainerMixin",
    "SCORE_CACHE_FILE",
    "SUMMARY_FILE",
    "TOKEN_ID_KEY",
]


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


class QTuningTrainerMixin:
    """Q-Tuning inside a transformers.Trainer subclass: put it first, `class T(QTuningTrainerMixin, Trainer)`.

    Keyword `qtuning_config`: a QTuningTrainingConfig, required unless `args` is one (QTuningSFTConfig).
    After construction: `qt_settings` (the QTuningTrainingConfig in use), `qt_config` (its engine part),
    and at the end of training `qtuning_summary` (also written to output_dir/qtuning_summary.json).
    """

    def __init__(self, *args, qtuning_config: QTuningTrainingConfig | None = None, **kwargs):
        for key in ("train_dataset", "eval_dataset"):
            if key in kwargs:
                kwargs[key] = with_row_ids(kwargs[key])
        super().__init__(*args, **kwargs)
        self._qt_setup(qtuning_config)

    def _qt_setup(self, qtuning_config: QTuningTrainingConfig | None) -> None:
        """Everything Q-Tuning keeps on the trainer, once the Trainer itself is built."""
        in_args = isinstance(self.args, QTuningTrainingConfig)
        if in_args and qtuning_config is not None:
            raise TypeError(
                f"{type(self).__name__}: args is a {type(self.args).__name__}, which holds the Q-Tuning settings; "
                "do not pass qtuning_config= as well"
            )
        settings = self.args if in_args else qtuning_config
        if not isinstance(settings, QTuningTrainingConfig):
            raise TypeError(
                f"{type(self).__name__} needs qtuning_config=QTuningTrainingConfig(...) (or args that are one, "
                f"e.g. QTuningSFTConfig), got {type(settings).__name__}"
            )
        # the settings object itself (not a copy): a change to args.scoring etc. is seen, as before the split
        self.qt_settings = settings
        self.qt_config = settings.qtuning_config()
        self._qt_probe = ProbeSettings.resolve(settings, self.args.device)
        self._qt_check_row_ids()
        self.data_collator = CollatorWithIds(self.data_collator)
        # compute_loss normalises by the kept tokens of the whole step (probe) or scales itself (reuse)
        self.loss_is_scaled_for_ga = True
        if _LEGACY_GA_SCALING:  # probe mode returns the step's count, so older Trainers skip their division
            self.model_accepts_loss_kwargs = True
        # padding_free: micro-batches arrive as one row of concatenated samples; they are unpacked for
        # scoring and selection, and the kept samples are packed again for the forward with grad
        self._qt_padding_free = bool(getattr(self, "padding_free", False))
        # Under DeepSpeed ZeRO-3 the weights are sharded and only the DeepSpeed engine (built when
        # training starts) can run the model: the start-up checks wait for it.
        self._qt_checks_pending = any(hasattr(p, "ds_id") for p in self.model.parameters())
        if not self._qt_checks_pending:
            self._start_up_checks(self.model)
        self._qt_needs_scores = needs_scores(self.qt_config.sample_pruner, self.qt_config.token_pruner)
        # thresholds="history": the (PPL, Ent) of recent scored samples; saved in every checkpoint
        history = self.qt_config.thresholds == "history" and self.qt_config.sample_pruner == "qtuning"
        self._qt_history = ScoreWindow(self.qt_config.history_window) if history else None
        # scoring="auto": time both modes over the first steps, then keep the faster (qtuning.scoring_mode)
        auto = settings.scoring == "auto" and settings.pruning_method == "qtuning"
        self._qt_chooser = ScoringModeChooser() if auto else None
        self._qt_step_mode = "probe" if settings.scoring == "auto" else settings.scoring
        # scoring="stale": each row's last scores, by dataset row id (qtuning.stale); saved in every checkpoint
        stale = settings.scoring == "stale" and settings.pruning_method == "qtuning" and self._qt_needs_scores
        self._qt_cache = ScoreCache() if stale else None
        self._qt_reference = None  # token_pruner="rho1" on a model without adapters: a frozen copy
        if self.qt_config.token_pruner == "rho1" and not hasattr(self.model, "disable_adapter"):
            reference = copy.deepcopy(self.model).eval().requires_grad_(False)
            reference.__dict__.pop("forward", None)  # TRL's fused-head forward, bound to the original's closure
            self._qt_reference = reference
        self._qt_metrics = RunMetrics()
        self._qt_last_warned: dict[str, int] = {}
        self._qt_noticed: set[str] = set()  # the kinds of one-line notice already shown (_qt_notice)
        self._qt_stop_signal = None  # SIGTERM received: stop with a checkpoint at the step's end (_SigtermStop)
        self._qt_step_started = None
        self._qt_step_scoring_s = 0.0
        self._plan_log = None
        self._qt_reuse_index = 0  # micro-batch index within the step, for the plan log in reuse mode
        self._qt_train_started = time.perf_counter()
        self.add_callback(_QTuningCallback(self))

    def _qt_check_row_ids(self) -> None:
        """scoring="stale" caches scores by dataset row id: refuse a training set whose rows carry none."""
        settings = self.qt_settings
        if settings.scoring != "stale" or settings.pruning_method != "qtuning" or self.train_dataset is None:
            return
        if not carries_row_ids(self.train_dataset):
            raise ConfigError(
                f"scoring='stale' needs the dataset row of every sample, and this {type(self.train_dataset).__name__} "
                "has no row ids: pass a datasets.Dataset as train_dataset= (the trainer adds the ids), or use "
                "scoring: probe"
            )

    @property
    def _qt_totals(self) -> dict[str, float]:
        """The run's totals since the start of training (RunMetrics.totals)."""
        return self._qt_metrics.totals

    def _start_up_checks(self, model) -> None:
        """Refuse, with a clear error, a model whose logits or packed attention our fast paths would get wrong."""
        check_head_path(model)
        if self._qt_padding_free:
            check_packed_attention(model)
        self._qt_checks_pending = False

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:  # the newest complete checkpoint: one cut short is passed over
            from transformers.trainer_utils import get_last_checkpoint

            newest = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                incomplete = f" complete ({newest} lacks {CHECKPOINT_STATE_FILE})" if newest else ""
                raise ConfigError(
                    f"resume_from_checkpoint=True, but {self.args.output_dir} holds no checkpoint{incomplete}"
                )
            passed_over = newest is not None and Path(newest).name != Path(resume_from_checkpoint).name
            if passed_over and self.is_world_process_zero():
                print(
                    f"[qtuning] {newest} is incomplete (no {CHECKPOINT_STATE_FILE}: the run stopped while writing "
                    f"it); resuming from {resume_from_checkpoint}",
                    flush=True,
                )
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)) and os.path.isdir(resume_from_checkpoint):
            if not (Path(resume_from_checkpoint) / CHECKPOINT_STATE_FILE).is_file():  # named, but cut short
                found = last_complete_checkpoint(Path(resume_from_checkpoint).parent)
                instead = f"resume from {found} instead" if found else "there is no complete checkpoint beside it"
                raise ConfigError(
                    f"checkpoint {resume_from_checkpoint} is incomplete (no {CHECKPOINT_STATE_FILE}, which is "
                    f"written last: the run stopped while writing it); {instead}"
                )
        self._qt_resume_from = resume_from_checkpoint
        try:
            with _SigtermStop(self):
                result = super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            if self._plan_log is not None:  # a run that raised never reached on_train_end
                self._plan_log.close()
        if self._qt_stop_signal is not None:  # SIGTERM: the step finished and a checkpoint was saved
            from .errors import TrainingStopped

            saved = last_complete_checkpoint(self.args.output_dir)
            where = f"{saved} holds it: resume with resume_from_checkpoint=True" if saved else "no checkpoint was kept"
            raise TrainingStopped(
                f"stopped by {self._qt_stop_signal} after step {self.state.global_step} of {self.state.max_steps}; "
                f"{where}"
            )
        return result

    # ------------------------------------------------------------------ data plumbing
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for key in (ID_KEY, TOKEN_ID_KEY):
            if key not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, key]

    # ------------------------------------------------------------------ stage 1+2, ahead of the step
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = []
        for _ in range(num_batches):
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        self._qt_step_started = time.perf_counter()
        self._qt_step_scoring_s = 0.0
        if self._qt_padding_free:
            batches = [self._unpacked(batch) for batch in batches]
        if self._qt_chooser is not None:
            self._qt_step_mode = self._qt_chooser.mode_for_step(self.state.global_step + 1)
        pruning_method = self.qt_settings.pruning_method
        if self._qt_step_mode == "reuse" and pruning_method == "qtuning":
            return batches, None  # plans are made inside compute_loss, from the training forward
        scored = pruning_method != "none" and self._qt_needs_scores
        if pruning_method == "none":
            plans = [SelectionPlan.keep_all((shift_labels(b["labels"]) != IGNORE_INDEX).cpu()) for b in batches]
        else:
            started = time.perf_counter()
            if not scored:
                parts = [self._unscored_micro_batch(batch) for batch in batches]
            elif self._qt_cache is not None:
                parts = [self._score_with_cache(batch, index) for index, batch in enumerate(batches)]
            else:
                parts = [self._score_micro_batch(batch) for batch in batches]
            # A new random stream per step, the same on every rank (the baselines' random draws).
            seed = derive_seed(self.args.seed, self.state.global_step, "step")
            progress = self.state.global_step / max(1, self.state.max_steps)
            self._notice_non_finite(parts)
            plans = plan_step(
                parts,
                self.qt_config,
                self.qt_settings.selection_pool,
                seed=seed,
                progress=progress,
                window=self._qt_history,
                step=self.state.global_step + 1,
            )
            self._qt_step_scoring_s += time.perf_counter() - started
        for index, (batch, plan) in enumerate(zip(batches, plans)):
            batch[PLAN_KEY] = plan
            self._record_plan(plan, batch, index, shift_mask(batch["attention_mask"]).cpu(), scored=scored)
        # The loss divides by the kept tokens of the whole step on every rank (see compute_loss).
        kept_here = sum(p.num_kept_tokens for p in plans)
        kept = all_reduce_sum(kept_here, device, step=self.state.global_step + 1)
        if not kept_here and batches and not int(kept):  # every rank agrees: nothing of the step carries a loss
            self._qt_notice(
                "no_tokens",
                f"step {self.state.global_step + 1}: no token of the step carries a loss on any rank (every row "
                "pruned, or no row with a trainable token): the step runs with a zero loss and gradient",
            )
        return batches, kept

    def _qt_notice(self, kind: str, message: str, every_rank: bool = False) -> None:
        """A one-line `[qtuning]` notice on stderr (qtuning.notices), once per run and kind (rank 0's, unless every_rank: then
        each rank prints what it saw itself, prefixed with its rank)."""
        if kind in self._qt_noticed:
            return
        self._qt_noticed.add(kind)
        if every_rank and self.args.world_size > 1:
            message = f"rank {self.args.process_index}: {message}"
        elif not self.is_world_process_zero():
            return
        notice(f"{message} (shown once per run)")

    def _notice_non_finite(self, parts: list[ScoredBatch]) -> None:
        dropped = sum(part.non_finite_rows for part in parts)
        if dropped:
            self._qt_metrics.add(non_finite_rows=dropped)
            rows = sum(part.loss_mask.shape[0] for part in parts)
            self._qt_notice(
                "non_finite",
                f"step {self.state.global_step + 1}: {dropped} of {rows} row(s) have NaN or inf scores (e.g. an "
                "fp16 overflow in the probe): they are left out of this step's selection and not trained",
                every_rank=True,
            )

    def _unpacked(self, batch) -> dict:
        """A padding-free micro-batch (1, L) as a right-padded one (B, T), one row per sample."""
        ids = batch.get(ID_KEY)
        pad_id = getattr(self.data_collator.inner, "pad_token_id", None) or 0  # pad positions are masked anyway
        padded = unpack(batch, pad_id, num_samples=None if ids is None else len(ids))
        if ids is not None:
            padded[ID_KEY] = ids
        padded[PACKED_KEY] = True
        return padded

    def _probe(self, batch):
        """The no-grad probe forward on a micro-batch: (TokenScores, loss mask, attention), shifted grid."""
        return self._qt_probe.score(self.model_wrapped, batch)

    def _score_micro_batch(self, batch) -> ScoredBatch:
        """The probe on one micro-batch: its scores, checked, on the CPU."""
        scores, loss_mask, attention = self._probe(batch)
        self._qt_metrics.add(probed_positions=int(attention.sum()))
        part = prepare_scores(scores.nll, scores.entropy, loss_mask, self.qt_config, attention, non_finite="drop")
        if self.qt_config.token_pruner == "rho1":
            part.reference_nll = torch.where(part.loss_mask, self._reference_nll(batch).cpu().double(), 0.0)
        return part

    def _score_with_cache(self, batch, index: int) -> ScoredBatch:
        """scoring="stale": cached scores where the row has them, the probe for the other rows and for
        a random stale_reprobe_fraction of the cached ones; the probed rows' scores are cached."""
        ids = batch[ID_KEY].tolist()
        loss_mask = (shift_labels(batch["labels"]) != IGNORE_INDEX).cpu()  # (B, T)
        attention = shift_mask(batch["attention_mask"]).cpu()  # (B, T)
        positions = attention | loss_mask
        nll, entropy, have = self._qt_cache.lookup(ids, positions)  # (B, T), (B, T), (B,)
        step_seed = derive_seed(self.args.seed, self.state.global_step, "step")
        generator = torch.Generator().manual_seed(derive_seed(step_seed, index + 1, "reprobe"))
        probe = rows_to_probe(have, self.qt_settings.stale_reprobe_fraction, generator)  # (B,)
        if probe.any():  # one sub-batch, trimmed to its longest row (the whole batch in the first epoch)
            rows = probe.nonzero().flatten()
            width = int(positions[rows].any(dim=0).nonzero().max()) + 2  # unshifted columns in use
            sub = {k: batch[k][rows, :width] for k in ("input_ids", "attention_mask", "labels")}
            scores, _, sub_attention = self._probe(sub)
            self._qt_metrics.add(probed_positions=int(sub_attention.sum()))
            nll[rows, :width] = scores.nll.cpu().double()
            entropy[rows, :width] = scores.entropy.cpu().double()
            self._qt_cache.put(
                [ids[r] for r in rows.tolist()], nll[rows], entropy[rows], positions[rows], self.state.global_step + 1
            )
        self._qt_metrics.add(stale_rows=int((~probe).sum()))
        return prepare_scores(nll, entropy, loss_mask, self.qt_config, attention, non_finite="drop")

    def _unscored_micro_batch(self, batch) -> ScoredBatch:
        """A pruner that reads no scores (random, longest): the masks alone, no forward pass."""
        loss_mask = (shift_labels(batch["labels"]) != IGNORE_INDEX).cpu()  # (B, T)
        zeros = torch.zeros(loss_mask.shape, dtype=torch.float64)
        return prepare_scores(zeros, zeros, loss_mask, self.qt_config, shift_mask(batch["attention_mask"]).cpu())

    def _reference_nll(self, batch) -> torch.Tensor:
        """Token NLL (B, T) of the reference model for Rho-1: the initial model, i.e. the adapters
        switched off (PEFT) or the frozen copy taken at start-up."""
        if self._qt_reference is not None:
            model, switch = self._qt_reference, contextlib.nullcontext()
        else:
            model, switch = self.model_wrapped, self.model.disable_adapter()
        with switch:  # in the training precision: the reference is not the probe
            scores, _, _ = self._qt_probe.score(model, batch, in_probe_precision=False)
        return scores.nll

    # ------------------------------------------------------------------ the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plan = inputs.pop(PLAN_KEY, None)
        ids = inputs.pop(ID_KEY, None)
        packed = inputs.pop(PACKED_KEY, False)
        if return_outputs:  # evaluation asking for logits: the Trainer's own path
            return super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if not model.training or not torch.is_grad_enabled():
            return self._eval_loss(model, inputs)
        if plan is None:
            return self._reuse_loss(model, inputs, ids)

        # Probe mode: forward+backward on the kept rows only, trailing pad columns trimmed.
        loss_chunk_size = self.qt_settings.loss_chunk_size
        kept = apply_plan(inputs, plan)
        trained_positions = int(kept["attention_mask"].sum()) if plan.num_kept else 0
        batch = pack(kept) if packed else kept  # padding_free: the kept samples end to end, (1, L')
        if self._qt_cache is not None and plan.num_kept and ids is not None:
            loss, hidden = loss_on_kept(model, batch, num_items_in_batch, loss_chunk_size, return_hidden=True)
            hidden = scatter_rows(hidden, kept["attention_mask"]) if packed else hidden  # (B', T', H)
            self._refresh_cache(model, inputs, plan, ids, hidden)
        else:
            loss = loss_on_kept(model, batch, num_items_in_batch, loss_chunk_size)
        # num_items counts the kept tokens of every rank and DDP averages the gradients over ranks:
        # scaling by the world size makes the update sum(CE over all kept tokens) / (their count).
        loss = loss * self.args.world_size
        self._qt_metrics.add(
            trained_rows=plan.num_kept, trained_tokens=plan.num_kept_tokens, trained_positions=trained_positions
        )
        return loss

    def _refresh_cache(self, model, inputs, plan: SelectionPlan, ids: torch.Tensor, hidden: torch.Tensor) -> None:
        """scoring="stale": the kept rows' scores from their own training forward (hidden (B', T', H),
        detached): the LM head over their response positions, no second pass through the model."""
        started = time.perf_counter()
        rows = plan.sample_keep.nonzero().flatten()  # (B',)
        width = hidden.shape[1]
        labels = inputs["labels"][rows.to(inputs["labels"].device), :width]  # unpruned: every response token
        attention_mask = inputs["attention_mask"][rows.to(labels.device), :width]
        scores, loss_mask, attention = scores_from_hidden(
            model, hidden, attention_mask, labels, self._qt_probe.entropy_positions, self._qt_probe.chunk_size
        )
        self._qt_cache.put(
            ids[rows].tolist(), scores.nll, scores.entropy, (attention | loss_mask).cpu(), self.state.global_step + 1
        )
        self._qt_step_scoring_s += time.perf_counter() - started

    def _reuse_loss(self, model, inputs, ids: torch.Tensor | None = None):
        """One forward with grad over the whole batch: scores from it, loss masked by the plan. ids (B,):
        the rows' dataset ids, for the plan log."""
        started = time.perf_counter()
        hidden = forward_final_hidden(model, inputs["input_ids"], inputs["attention_mask"])  # (B, T, H)
        scores, loss_mask, attention = scores_from_hidden(
            model,
            hidden.detach(),
            inputs["attention_mask"],
            inputs["labels"],
            self._qt_probe.entropy_positions,
            self._qt_probe.chunk_size,
        )
        part = prepare_scores(scores.nll, scores.entropy, loss_mask, self.qt_config, attention, non_finite="drop")
        self._notice_non_finite([part])
        plan = plan_step([part], self.qt_config, self.qt_settings.selection_pool, window=self._qt_history)[0]
        self._qt_step_scoring_s += time.perf_counter() - started
        logged = inputs if ids is None else {**inputs, ID_KEY: ids}  # the plan log names dataset rows
        self._record_plan(plan, logged, self._qt_reuse_index, attention.cpu(), scored=True)
        self._qt_reuse_index += 1
        targets = torch.where(plan.token_keep.to(hidden.device), shift_labels(inputs["labels"]), IGNORE_INDEX)
        total = nll_sum(model, hidden, targets, self.qt_settings.loss_chunk_size)
        # Normalised per micro-batch (its kept tokens over all ranks), averaged over accumulation steps
        # (by the Trainer itself before transformers 5: it divides a loss that came without a count).
        kept_here = all_reduce_sum(plan.num_kept_tokens, total.device).clamp(min=1)
        accumulation = 1 if _LEGACY_GA_SCALING else self.current_gradient_accumulation_steps
        loss = total / kept_here * self.args.world_size / accumulation
        self._qt_metrics.add(
            trained_rows=inputs["input_ids"].shape[0],
            trained_tokens=plan.num_kept_tokens,
            trained_positions=int(inputs["attention_mask"].sum()),
        )
        return loss

    def _eval_loss(self, model, inputs):
        """Held-out loss: mean CE over every trainable token, nothing pruned."""
        return loss_on_kept(model, inputs, None, self.qt_settings.loss_chunk_size)

    # ------------------------------------------------------------------ statistics and logs
    def _record_plan(self, plan: SelectionPlan, batch, index: int, attention: torch.Tensor, scored: bool):
        self._qt_metrics.add_plan(plan, attention, scored)
        if self._plan_log is not None:  # unscored baselines too: PPL 1 and Ent 0, but who was kept
            ids = batch.get(ID_KEY)
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
        failed write removes the partial folder and raises a StorageError naming the checkpoint kept."""
        from .files import atomic_path, atomic_write_text

        run_dir = self._get_output_dir(trial)
        folder = Path(run_dir) / checkpoint_dir_name(self.state.global_step)
        limit = self.args.save_total_limit
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
            if self.args.world_size > 1:  # the marker below only once every rank's files (RNG states, caches) are in
                self.accelerator.wait_for_everyone()
            if self.is_world_process_zero() and folder.is_dir():
                state = {"totals": dict(self._qt_metrics.totals)}
                if self._qt_history is not None:  # the score window: a resumed run selects as if never stopped
                    state["history"] = self._qt_history.state_dict()
                if self._qt_chooser is not None:
                    state["scoring_auto"] = self._qt_chooser.state_dict()
                # written last (atomically): its presence marks a complete checkpoint
                atomic_write_text(folder / CHECKPOINT_STATE_FILE, json.dumps(state, indent=1))
        except Exception as exc:
            self._qt_checkpoint_failed(folder, exc)
        self._qt_rotate_checkpoints(run_dir, limit)

    def _qt_checkpoint_failed(self, folder: Path, exc: Exception):
        """A checkpoint that could not be written: remove what there is of it, then say what is kept."""
        import shutil

        from .errors import QTuningError, StorageError
        from .files import is_write_failure, write_failure

        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, QTuningError) or not (isinstance(exc, OSError) or is_write_failure(exc)):
            raise exc
        kept = last_complete_checkpoint(folder.parent)
        resume = f"{kept} is intact: resume from it with --resume_from_checkpoint true" if kept else "none was kept"
        raise StorageError(
            f"checkpoint {folder} could not be written ({write_failure(exc, folder.parent)}) and was removed; "
            f"{resume} once there is room"
        ) from exc

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
            self._qt_metrics.load_totals(saved["totals"])
            if self._qt_history is not None and "history" in saved:
                self._qt_history = ScoreWindow.from_state_dict(saved["history"])
            if self._qt_chooser is not None and "scoring_auto" in saved:
                self._qt_chooser.load_state_dict(saved["scoring_auto"])
        if resume_from and self._qt_cache is not None:
            path = Path(resume_from) / score_cache_name(self.args.process_index)
            if path.is_file():
                self._qt_cache = ScoreCache.from_state_dict(torch.load(path, weights_only=True))
        if self.qt_settings.plan_log and self.qt_settings.pruning_method != "none":
            # On resume, drop what was logged after the checkpoint: those steps are about to run again.
            self._plan_log = PlanLog(
                plan_log_path(self.args.output_dir, self.args.process_index), keep_up_to_step=self.state.global_step
            )
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
        self.qtuning_summary = summary
        if self.is_world_process_zero():
            from .files import atomic_write_text

            os.makedirs(self.args.output_dir, exist_ok=True)
            atomic_write_text(Path(self.args.output_dir) / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")


class _QTuningCallback(TrainerCallback):
    def __init__(self, trainer: QTuningTrainerMixin):
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

    def __init__(self, trainer: QTuningTrainerMixin):
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
