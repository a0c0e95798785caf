"""QTuningTrainerMixin: Q-Tuning's dynamic sample and token pruning inside any transformers.Trainer.

    class MyTrainer(QTuningTrainerMixin, SomeTrainer): ...      # the mixin first, then the Trainer
    trainer = MyTrainer(model=..., args=training_args, train_dataset=tokenized, data_collator=...,
                        qtuning_config=QTuningTrainingConfig(sample_ratio=0.25, token_ratio=0.5))

The settings come from `args` when it is a QTuningTrainingConfig (QTuningSFTConfig is one), else from
the `qtuning_config=` keyword (how a framework with its own TrainingArguments uses it). The batches
must carry input_ids, attention_mask and labels (B, T), right-padded, labels -100 where no loss is
taken. Imports transformers, not trl; `QTuningSFTTrainer` (qtuning.training.trainer) is this mixin on TRL's
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
Stale mode is probe mode in which rows scored before keep their cached scores (qtuning.training.stale):
only unscored rows and a random share of the others are probed, and the kept rows' scores are
refreshed from their training forward.

Row ids (the plan log's sample ids, stale mode's cache keys): a `datasets.Dataset` passed as
train_dataset= gets an id column and the collator is wrapped to carry it (qtuning.data.row_ids). Other
datasets get none: the plan log names each sample by its position in the micro-batch instead, and
`scoring: stale` is refused at start-up.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import torch

from ..data.row_groups import row_groups
from ..data.row_ids import ID_KEY, TOKEN_ID_KEY, CollatorWithIds, carries_row_ids, with_row_ids
from ..data.run_files import CHECKPOINT_STATE_FILE, SCORE_CACHE_FILE, SUMMARY_FILE
from ..engine.history import ScoreWindow
from ..engine.policies import needs_scores
from ..engine.scoring import IGNORE_INDEX, shift_labels
from ..engine.selection import SelectionPlan, prepare_scores
from ..engine.training_config import QTuningTrainingConfig
from ..errors import ConfigError
from ..extras import missing_extra
from ..modeling.kept_batch import apply_plan, loss_on_kept
from ..modeling.padding_free import pack, scatter_rows
from ..modeling.probe import (
    ProbeSettings,
    check_head_path,
    check_packed_attention,
    forward_final_hidden,
    nll_sum,
    scores_from_hidden,
)
from .bookkeeping import _Bookkeeping, _QTuningCallback, _SigtermStop, last_complete_checkpoint
from .distributed import all_reduce_sum, plan_step
from .run_metrics import RunMetrics
from .scoring_mode import ScoringModeChooser
from .stale import ScoreCache
from .step_planning import PACKED_KEY, PLAN_KEY, _StepPlanning

try:
    from transformers import Trainer
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "mixin", "QTuningTrainerMixin (and QTuningSFTTrainer)") from None

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


def framework_super(trainer: QTuningTrainerMixin):
    """`super()` past every base of QTuningTrainerMixin: the framework Trainer's own methods (a full step).

    For code that must run the framework's own step (e.g. its get_batch_samples or compute_loss) on a
    trainer that has the mixin, without Q-Tuning's overrides.

    Args:
        trainer: An instance of a class built as `class T(QTuningTrainerMixin, TheirTrainer)`.

    Returns:
        A `super` proxy bound to `trainer` that resolves attributes from the class after the mixin's
        last base in `type(trainer).__mro__`: the framework Trainer (and its own bases).
    """
    return super(_Bookkeeping, trainer)  # the mixin's last base in the MRO


class QTuningTrainerMixin(_StepPlanning, _Bookkeeping):
    """Q-Tuning inside a transformers.Trainer subclass: put it first, `class T(QTuningTrainerMixin, Trainer)`.

    Construction: `T(*args, qtuning_config=..., **kwargs)`. The Trainer is built first with its own
    arguments (a `datasets.Dataset` passed as train_dataset= or eval_dataset= gets a row-id column),
    then the collator is wrapped to carry the row ids and the start-up checks run on the model
    (deferred to the start of training under DeepSpeed ZeRO-3, where only the engine can run it).

    Args:
        *args: The Trainer's positional arguments (model, args, ...).
        qtuning_config: The Q-Tuning settings: required unless `args` is a QTuningTrainingConfig
            (QTuningSFTConfig is one), and refused if it is.
        **kwargs: The Trainer's keyword arguments (args=, train_dataset=, data_collator=, ...). The
            batches must carry input_ids, attention_mask and labels (B, T), right-padded, labels -100
            where no loss is taken (with the Trainer's padding_free: one row (1, L) of input_ids,
            labels and position_ids).

    Attributes:
        qt_settings: The QTuningTrainingConfig in use (the object itself: `args` or `qtuning_config`).
        qt_config: Its engine part, the QTuningConfig that every selection reads.
        qtuning_summary: Set at the end of training: the run's totals (also written to
            output_dir/qtuning_summary.json).

    Raises:
        TypeError: No QTuningTrainingConfig in `args` or `qtuning_config`, or one in both.
        ConfigError: scoring="stale" with a training set whose rows carry no row ids (not a
            `datasets.Dataset`); group_field naming a column the training set does not have; padding-free training with an attention that does not keep packed
            samples apart.
        ModelSpecError: The model's logits are not its LM head applied to its final hidden states (a
            transform qtuning does not reproduce), or it returns no usable logits.
    """

    def __init__(self, *args, qtuning_config: QTuningTrainingConfig | None = None, **kwargs):
        for key in ("train_dataset", "eval_dataset"):
            if key in kwargs:
                kwargs[key] = with_row_ids(kwargs[key])
        raw_train = kwargs.get("train_dataset")  # before the trainer tokenises it: the user's own columns
        self._qt_groups = None  # set below; the Trainer's own set-up may already log or plan
        super().__init__(*args, **kwargs)
        self._qt_setup(qtuning_config)
        field_name = self.qt_settings.group_field
        # group_field: the group of every row id, written to output_dir when training starts (row_groups.py)
        if field_name and raw_train is None:  # passed by position: the trainer's copy (it may lack the column)
            raw_train = self.train_dataset
        self._qt_groups = row_groups(raw_train, field_name) if field_name else None

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
        # scoring="auto": time both modes over the first steps, then keep the faster (qtuning.training.scoring_mode)
        auto = settings.scoring == "auto" and settings.pruning_method == "qtuning"
        self._qt_chooser = ScoringModeChooser() if auto else None
        self._qt_step_mode = "probe" if settings.scoring == "auto" else settings.scoring
        # scoring="stale": each row's last scores, by dataset row id (qtuning.training.stale); saved in every checkpoint
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
        """The Trainer's `train`, resuming only from complete checkpoints and stopping cleanly on SIGTERM.

        On SIGTERM the current optimizer step finishes, a checkpoint is saved, and TrainingStopped is
        raised. The plan log is closed even when training raises.

        Args:
            resume_from_checkpoint: None or False: start afresh. True: the newest complete checkpoint
                in output_dir (a newer one cut short while being written is passed over, with a
                notice). A path: that checkpoint, which must be complete.
            *args: Passed on to the Trainer's `train`.
            **kwargs: Passed on to the Trainer's `train`.

        Returns:
            What the Trainer's `train` returns (a TrainOutput).

        Raises:
            ConfigError: resume_from_checkpoint=True and output_dir holds no complete checkpoint, or
                the checkpoint named is incomplete (the message names a complete one beside it).
            TrainingStopped: SIGTERM was received; the message names the checkpoint to resume from.
        """
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
            from ..errors import TrainingStopped

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

    # ------------------------------------------------------------------ the loss
    def compute_loss(self, model: torch.nn.Module, inputs: dict, return_outputs=False, num_items_in_batch=None):
        """The loss of one micro-batch: on its kept rows and tokens only (probe mode).

        Probe mode (the micro-batch carries its plan from `get_batch_samples`): forward+backward on the
        plan's kept rows, trailing pad columns trimmed (packed again for padding-free batches), as
        sum(CE over kept tokens) / num_items_in_batch x world size. Reuse mode (no plan): one forward
        with grad over the whole batch gives both the scores and the plan-masked loss, normalised per
        micro-batch. Outside training (eval mode or no grad): mean CE over every trainable token,
        nothing pruned. With return_outputs, the Trainer's own compute_loss.

        Args:
            model: The model the Trainer passes (possibly wrapped by DDP, FSDP or DeepSpeed).
            inputs: The micro-batch: input_ids, attention_mask, labels (B, T), plus Q-Tuning's keys
                (the plan, the row ids, the packed flag), which are removed from it.
            return_outputs: Return (loss, outputs) through the Trainer's own compute_loss (evaluation
                asking for logits).
            num_items_in_batch: The kept tokens of the whole optimizer step over all ranks (probe
                mode's denominator); None: the micro-batch's own.

        Returns:
            The loss, a scalar tensor with grad in training; (loss, outputs) with return_outputs.
        """
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
        """scoring="stale": the kept rows' scores from their own training forward.

        hidden (B', T', H), detached: the LM head over their response positions, no second pass
        through the model.
        """
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
        """One forward with grad over the whole batch: scores from it, loss masked by the plan.

        ids (B,): the rows' dataset ids, for the plan log.
        """
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
