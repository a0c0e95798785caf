"""QTuningSFTTrainer: TRL's SFTTrainer with Q-Tuning's dynamic sample and token pruning.

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
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections import defaultdict
from itertools import accumulate
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from .distributed import all_reduce_sum, plan_step
from .errors import ConfigError
from .history import ScoreWindow
from .kept_batch import apply_plan, loss_on_kept
from .padding_free import pack, scatter_rows, unpack
from .plan_log import PlanLog, plan_log_path, plan_records
from .policies import needs_scores
from .probe import (
    check_head_path,
    check_packed_attention,
    forward_final_hidden,
    nll_sum,
    score_batch,
    scores_from_hidden,
)
from .scoring import IGNORE_INDEX, shift_labels, shift_mask
from .scoring_mode import ScoringModeChooser
from .seeds import derive_seed
from .selection import ScoredBatch, SelectionPlan, prepare_scores
from .sft_config import QTuningSFTConfig
from .signatures import COLLAPSE_SHARE, failure_signatures
from .stale import ScoreCache, rows_to_probe

PLAN_KEY = "qtuning_plan"  # where a micro-batch carries its plan from get_batch_samples to compute_loss
ID_KEY = "qtuning_id"  # dataset row index, carried through the collator for the plan log
PACKED_KEY = "qtuning_packed"  # a micro-batch unpacked from a padding-free row: train it packed again
# packing: the row id repeated on every token, so that it survives TRL's packing (which keeps list
# columns only); the collator turns it back into one id per packed segment
TOKEN_ID_KEY = "qtuning_token_row_id"
SUMMARY_FILE = "qtuning_summary.json"  # in output_dir at the end of training (run.py adds the held-out losses)
CHECKPOINT_STATE_FILE = "qtuning_state.json"  # in each checkpoint-*/: the running totals, for resuming
SCORE_CACHE_FILE = "qtuning_score_cache_rank{rank}.pt"  # in each checkpoint-*/ with scoring="stale"


class _CollatorWithIds:
    """Wraps a collator so that each batch also carries the dataset row index of its samples."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        ids = [ex.pop(ID_KEY) for ex in examples] if examples and ID_KEY in examples[0] else None
        if examples and TOKEN_ID_KEY in examples[0]:  # packed rows: one id per segment, in order
            ids = [i for ex in examples for i in _segment_ids(ex.pop(TOKEN_ID_KEY), ex.get("seq_lengths"))]
        batch = self.inner(examples)
        if ids is not None:
            batch[ID_KEY] = torch.tensor(ids, dtype=torch.long)
        return batch


class QTuningSFTTrainer(SFTTrainer):
    """Drop-in for `trl.SFTTrainer`: pass a `QTuningSFTConfig` as `args`."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if not isinstance(config, QTuningSFTConfig):
            raise TypeError(f"QTuningSFTTrainer needs args=QTuningSFTConfig(...), got {type(config).__name__}")
        for key in ("train_dataset", "eval_dataset"):
            kwargs[key] = _with_row_ids(kwargs.get(key))
        super().__init__(*args, **kwargs)
        self.qt_config = config.qtuning_config()
        self._qt_probe_precision = config.resolved_probe_precision()
        self.data_collator = _CollatorWithIds(self.data_collator)
        # compute_loss normalises by the kept tokens of the whole step (probe) or scales itself (reuse)
        self.loss_is_scaled_for_ga = True
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
        auto = config.scoring == "auto" and config.pruning_method == "qtuning"
        self._qt_chooser = ScoringModeChooser() if auto else None
        self._qt_step_mode = "probe" if config.scoring == "auto" else config.scoring
        # scoring="stale": each row's last scores, by dataset row id (qtuning.stale); saved in every checkpoint
        stale = config.scoring == "stale" and config.pruning_method == "qtuning" and self._qt_needs_scores
        self._qt_cache = ScoreCache() if stale else None
        self._qt_reference = None  # token_pruner="rho1" on a model without adapters: a frozen copy
        if self.qt_config.token_pruner == "rho1" and not hasattr(self.model, "disable_adapter"):
            import copy

            reference = copy.deepcopy(self.model).eval().requires_grad_(False)
            reference.__dict__.pop("forward", None)  # TRL's fused-head forward, bound to the original's closure
            self._qt_reference = reference
        self._qt_window: dict[str, float] = defaultdict(float)  # sums since the last log
        self._qt_totals: dict[str, float] = defaultdict(float)  # sums since the start of training (resumable)
        self._qt_last_warned: dict[str, int] = {}
        self._qt_step_started = None
        self._qt_step_scoring_s = 0.0
        self._plan_log = None
        self._qt_reuse_index = 0  # micro-batch index within the step, for the plan log in reuse mode
        self._qt_train_started = time.perf_counter()
        self.add_callback(_QTuningCallback(self))

    def _start_up_checks(self, model) -> None:
        """Refuse, with a clear error, a model whose logits or packed attention our fast paths would get wrong."""
        check_head_path(model)
        if self._qt_padding_free:
            check_packed_attention(model)
        self._qt_checks_pending = False

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ConfigError(f"resume_from_checkpoint=True, but {self.args.output_dir} holds no checkpoint")
        self._qt_resume_from = resume_from_checkpoint
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ------------------------------------------------------------------ data plumbing
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for key in (ID_KEY, TOKEN_ID_KEY):
            if key not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, key]

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """packing=True: TRL's preparation without packing (tokenise, labels, truncate), then the row id
        spread over every token and the rows packed as TRL packs them, so each segment keeps its id."""
        columns = getattr(dataset, "column_names", None) or []
        if not packing or ID_KEY not in columns:
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        from trl.data_utils import pack_dataset

        dataset = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func, dataset_name)
        dataset = dataset.map(
            lambda row: {TOKEN_ID_KEY: [row[ID_KEY]] * len(row["input_ids"])}, desc=f"Row ids for {dataset_name}"
        )
        dataset = dataset.select_columns(
            [c for c in ("input_ids", "labels", TOKEN_ID_KEY) if c in dataset.column_names]
        )
        # the packing strategy is "bfd" (QTuningSFTConfig refuses the others): whole samples, never split
        dataset = pack_dataset(dataset, args.max_length, args.packing_strategy, {"desc": f"Packing {dataset_name}"})
        return dataset.shuffle(seed=args.seed) if args.shuffle_dataset else dataset

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
        if self._qt_step_mode == "reuse" and self.args.pruning_method == "qtuning":
            return batches, None  # plans are made inside compute_loss, from the training forward
        scored = self.args.pruning_method != "none" and self._qt_needs_scores
        if self.args.pruning_method == "none":
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
            plans = plan_step(
                parts, self.qt_config, self.args.selection_pool, seed=seed, progress=progress, window=self._qt_history
            )
            self._qt_step_scoring_s += time.perf_counter() - started
        for index, (batch, plan) in enumerate(zip(batches, plans)):
            batch[PLAN_KEY] = plan
            self._record_plan(plan, batch, index, shift_mask(batch["attention_mask"]).cpu(), scored=scored)
        # The loss divides by the kept tokens of the whole step on every rank (see compute_loss).
        return batches, all_reduce_sum(sum(p.num_kept_tokens for p in plans), device)

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
        precision = (
            torch.autocast(self.args.device.type, dtype=torch.bfloat16)
            if self._qt_probe_precision == "bf16"
            else contextlib.nullcontext()
        )
        with precision:
            return score_batch(
                self.model_wrapped,
                batch["input_ids"].to(self.args.device),
                batch["attention_mask"].to(self.args.device),
                batch["labels"].to(self.args.device),
                self.qt_config.entropy_positions,
                self.args.score_chunk_size,
                self.args.resolved_probe_batch_size(),
            )

    def _score_micro_batch(self, batch) -> ScoredBatch:
        """The probe on one micro-batch: its scores, checked, on the CPU."""
        scores, loss_mask, attention = self._probe(batch)
        self._window_add(probed_positions=int(attention.sum()))
        part = prepare_scores(scores.nll, scores.entropy, loss_mask, self.qt_config, attention)
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
        probe = rows_to_probe(have, self.args.stale_reprobe_fraction, generator)  # (B,)
        if probe.any():  # one sub-batch, trimmed to its longest row (the whole batch in the first epoch)
            rows = probe.nonzero().flatten()
            width = int(positions[rows].any(dim=0).nonzero().max()) + 2  # unshifted columns in use
            sub = {k: batch[k][rows, :width] for k in ("input_ids", "attention_mask", "labels")}
            scores, _, sub_attention = self._probe(sub)
            self._window_add(probed_positions=int(sub_attention.sum()))
            nll[rows, :width] = scores.nll.cpu().double()
            entropy[rows, :width] = scores.entropy.cpu().double()
            self._qt_cache.put(
                [ids[r] for r in rows.tolist()], nll[rows], entropy[rows], positions[rows], self.state.global_step + 1
            )
        self._window_add(stale_rows=int((~probe).sum()))
        return prepare_scores(nll, entropy, loss_mask, self.qt_config, attention)

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
        with switch:
            scores, _, _ = score_batch(
                model,
                batch["input_ids"].to(self.args.device),
                batch["attention_mask"].to(self.args.device),
                batch["labels"].to(self.args.device),
                self.qt_config.entropy_positions,
                self.args.score_chunk_size,
                self.args.resolved_probe_batch_size(),
            )
        return scores.nll

    # ------------------------------------------------------------------ the loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plan = inputs.pop(PLAN_KEY, None)
        ids = inputs.pop(ID_KEY, None)
        packed = inputs.pop(PACKED_KEY, False)
        if return_outputs:  # evaluation asking for logits: TRL's own path
            return super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if not model.training or not torch.is_grad_enabled():
            return self._eval_loss(model, inputs)
        if plan is None:
            return self._reuse_loss(model, inputs)

        # Probe mode: forward+backward on the kept rows only, trailing pad columns trimmed.
        kept = apply_plan(inputs, plan)
        trained_positions = int(kept["attention_mask"].sum()) if plan.num_kept else 0
        batch = pack(kept) if packed else kept  # padding_free: the kept samples end to end, (1, L')
        if self._qt_cache is not None and plan.num_kept and ids is not None:
            loss, hidden = loss_on_kept(model, batch, num_items_in_batch, self.args.loss_chunk_size, return_hidden=True)
            hidden = scatter_rows(hidden, kept["attention_mask"]) if packed else hidden  # (B', T', H)
            self._refresh_cache(model, inputs, plan, ids, hidden)
        else:
            loss = loss_on_kept(model, batch, num_items_in_batch, self.args.loss_chunk_size)
        # num_items counts the kept tokens of every rank and DDP averages the gradients over ranks:
        # scaling by the world size makes the update sum(CE over all kept tokens) / (their count).
        loss = loss * self.args.world_size
        self._window_add(
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
            model, hidden, attention_mask, labels, self.qt_config.entropy_positions, self.args.score_chunk_size
        )
        self._qt_cache.put(
            ids[rows].tolist(), scores.nll, scores.entropy, (attention | loss_mask).cpu(), self.state.global_step + 1
        )
        self._qt_step_scoring_s += time.perf_counter() - started

    def _reuse_loss(self, model, inputs):
        """One forward with grad over the whole batch: scores from it, loss masked by the plan."""
        started = time.perf_counter()
        hidden = forward_final_hidden(model, inputs["input_ids"], inputs["attention_mask"])  # (B, T, H)
        scores, loss_mask, attention = scores_from_hidden(
            model,
            hidden.detach(),
            inputs["attention_mask"],
            inputs["labels"],
            self.qt_config.entropy_positions,
            self.args.score_chunk_size,
        )
        part = prepare_scores(scores.nll, scores.entropy, loss_mask, self.qt_config, attention)
        plan = plan_step([part], self.qt_config, self.args.selection_pool, window=self._qt_history)[0]
        self._qt_step_scoring_s += time.perf_counter() - started
        self._record_plan(plan, inputs, self._qt_reuse_index, attention.cpu(), scored=True)
        self._qt_reuse_index += 1
        targets = torch.where(plan.token_keep.to(hidden.device), shift_labels(inputs["labels"]), IGNORE_INDEX)
        total = nll_sum(model, hidden, targets, self.args.loss_chunk_size)
        # Normalised per micro-batch (its kept tokens over all ranks), averaged over accumulation steps.
        kept_here = all_reduce_sum(plan.num_kept_tokens, total.device).clamp(min=1)
        loss = total / kept_here * self.args.world_size / self.current_gradient_accumulation_steps
        self._window_add(
            trained_rows=inputs["input_ids"].shape[0],
            trained_tokens=plan.num_kept_tokens,
            trained_positions=int(inputs["attention_mask"].sum()),
        )
        return loss

    def _eval_loss(self, model, inputs):
        """Held-out loss: mean CE over every trainable token, nothing pruned."""
        return loss_on_kept(model, inputs, None, self.args.loss_chunk_size)

    # ------------------------------------------------------------------ statistics and logs
    def _window_add(self, **values):
        for key, value in values.items():
            self._qt_window[key] += value
            self._qt_totals[key] += value

    def _record_plan(self, plan: SelectionPlan, batch, index: int, attention: torch.Tensor, scored: bool):
        counts = {
            "plans": 1,
            "samples": plan.sample_keep.numel(),
            "kept": plan.num_kept,
            "supplemented": plan.num_supplemented,
            "converged": int(plan.converged),
            "iterations": plan.iterations,
            "alpha": plan.alpha,
            "beta": plan.beta,
            "scored_tokens": int(plan.num_trainable_tokens.sum()) if scored else 0,
            "scored_positions": int(attention.sum()) if scored else 0,
            "trainable_tokens": int(plan.num_trainable_tokens.sum()),
            "kept_tokens": plan.num_kept_tokens,
            "positions": int(attention.sum()),
        }
        for q in range(1, 5):
            counts[f"q{q}"] = int((plan.quadrant == q).sum())
        self._window_add(**counts)
        if self._plan_log is not None:  # unscored baselines too: PPL 1 and Ent 0, but who was kept
            ids = batch.get(ID_KEY)
            self._plan_log.write(
                plan_records(
                    plan,
                    step=self.state.global_step + 1,
                    micro_batch=index,
                    rank=self.args.process_index,
                    sample_ids=None if ids is None else ids.tolist(),
                    input_ids=batch["input_ids"] if self.args.plan_log_tokens else None,
                )
            )

    def _gathered_window(self) -> dict[str, float]:
        keys = sorted(self._qt_window)
        if not keys:
            return {}
        values = torch.tensor([self._qt_window[k] for k in keys], dtype=torch.float64, device=self.args.device)
        if self.args.world_size > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        return dict(zip(keys, values.tolist()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            logs.update(self._window_metrics())
        super().log(logs, start_time)

    def _window_metrics(self) -> dict[str, float]:
        w = self._gathered_window()
        self._qt_window.clear()
        if not w.get("plans"):
            return {}
        plans, samples = w["plans"], max(1.0, w["samples"])
        out = {
            "qtuning/kept_sample_fraction": w.get("kept", 0) / samples,
            "qtuning/supplemented": w.get("supplemented", 0) / plans,
            "qtuning/alpha": w.get("alpha", 0) / plans,
            "qtuning/beta": w.get("beta", 0) / plans,
            "qtuning/bisection_iterations": w.get("iterations", 0) / plans,
            "qtuning/bisection_converged_share": w.get("converged", 0) / plans,
            "qtuning/kept_token_fraction": w.get("kept_tokens", 0) / max(1.0, w.get("trainable_tokens", 0)),
            "qtuning/tokens_scored": w.get("scored_tokens", 0),
            "qtuning/tokens_trained": w.get("trained_tokens", 0),
            "qtuning/tokens_scored_total": self._qt_totals.get("scored_tokens", 0),
            "qtuning/tokens_trained_total": self._qt_totals.get("trained_tokens", 0),
            "qtuning/scoring_time_share": w.get("scoring_s", 0) / max(1e-9, w.get("step_s", 0)),
        }
        if self._qt_cache is not None:  # the share of samples selected with cached (not fresh) scores
            out["qtuning/stale_sample_share"] = w.get("stale_rows", 0) / samples
        for q in range(1, 5):
            out[f"qtuning/quadrant_q{q}"] = w.get(f"q{q}", 0) / samples
        self._warn_failure_signatures(w)
        return out

    def _warn_failure_signatures(self, w: dict[str, float]) -> None:
        """The failure signatures (qtuning.signatures) over the samples since the last log; each kind at most
        every warn_every_steps steps."""
        if self.args.pruning_method == "none" or not w.get("samples"):
            return
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
            if fired[kind] and (last is None or step - last >= self.args.warn_every_steps):
                self._qt_last_warned[kind] = step
                if self.is_world_process_zero():
                    warnings.warn(f"[qtuning] step {step}: {message}", stacklevel=2)

    # ------------------------------------------------------------------ checkpoints and the summary
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
        if self._qt_cache is not None and folder.is_dir():  # every rank its own: the rows it has seen
            torch.save(self._qt_cache.state_dict(), folder / SCORE_CACHE_FILE.format(rank=self.args.process_index))
        if self.is_world_process_zero() and folder.is_dir():
            state = {"totals": dict(self._qt_totals)}
            if self._qt_history is not None:  # the score window: a resumed run selects as if never stopped
                state["history"] = self._qt_history.state_dict()
            if self._qt_chooser is not None:
                state["scoring_auto"] = self._qt_chooser.state_dict()
            # written last: its presence marks a complete checkpoint
            (folder / CHECKPOINT_STATE_FILE).write_text(json.dumps(state, indent=1))
        if self._plan_log is not None:
            self._plan_log.flush()

    def _on_train_begin(self, resume_from: str | None):
        if self._qt_checks_pending:
            self._start_up_checks(self.model_wrapped)
        if resume_from and (Path(resume_from) / CHECKPOINT_STATE_FILE).is_file():
            saved = json.loads((Path(resume_from) / CHECKPOINT_STATE_FILE).read_text())
            self._qt_totals = defaultdict(float, saved["totals"])
            if self._qt_history is not None and "history" in saved:
                self._qt_history = ScoreWindow.from_state_dict(saved["history"])
            if self._qt_chooser is not None and "scoring_auto" in saved:
                self._qt_chooser.load_state_dict(saved["scoring_auto"])
        if resume_from and self._qt_cache is not None:
            path = Path(resume_from) / SCORE_CACHE_FILE.format(rank=self.args.process_index)
            if path.is_file():
                self._qt_cache = ScoreCache.from_state_dict(torch.load(path, weights_only=True))
        if self.args.plan_log and self.args.pruning_method != "none":
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
            self._window_add(step_s=step_s, scoring_s=self._qt_step_scoring_s)
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
        totals = self._qt_totals
        if self.args.world_size > 1:
            keys = sorted(totals)
            values = self.accelerator.reduce(
                torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=self.args.device), reduction="sum"
            )
            totals = dict(zip(keys, values.tolist()))
        trained_pos = totals.get("trained_positions", 0.0)
        # Full-data training would run forward+backward (~3 forward passes) over every position we scored
        # (every position of every sample); we ran 1 forward there plus 3 on the kept rows.
        all_pos = totals.get("positions", 0.0)
        cost = totals.get("probed_positions", 0.0) + 3 * trained_pos
        summary = {
            "wall_clock_s": time.perf_counter() - self._qt_train_started,
            "optimizer_steps": self.state.global_step,
            "samples_scored": totals.get("samples", 0.0),
            "samples_trained": totals.get("trained_rows", 0.0),
            "trainable_tokens_scored": totals.get("scored_tokens", 0.0),
            "tokens_trained": totals.get("trained_tokens", 0.0),
            "positions_forwarded_with_grad": trained_pos,
            "positions_probed": totals.get("probed_positions", 0.0),  # by a separate no-grad forward
            "samples_selected_with_stale_scores": totals.get("stale_rows", 0.0),  # scoring="stale"
            "scoring_s": totals.get("scoring_s", 0.0),
            "scoring_mode": self._qt_chooser.chosen if self._qt_chooser is not None else self.args.scoring,
            "estimated_compute_vs_full_data": cost / max(1.0, 3 * all_pos),
            "estimate_basis": "forward = 1, forward+backward = 3 per token position; full data = 3 x all positions",
            "output_dir": str(self.args.output_dir),
            "plan_log": str(self._plan_log.path) if self._plan_log is not None else None,
        }
        self.qtuning_summary = summary
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            (Path(self.args.output_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")


class _QTuningCallback(TrainerCallback):
    def __init__(self, trainer: QTuningSFTTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._on_train_begin(getattr(self.trainer, "_qt_resume_from", None))

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._on_step_end()

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer._on_train_end()


def _segment_ids(token_ids: list[int], seq_lengths: list[int] | None) -> list[int]:
    """The row id of each segment of a packed row: the id on the segment's first token."""
    lengths = seq_lengths or [len(token_ids)]
    return [token_ids[start] for start in accumulate(lengths[:-1], initial=0)]


def _with_row_ids(dataset):
    """Add the row index as a column, so the plan log can name each sample."""
    if dataset is None or isinstance(dataset, dict) or not hasattr(dataset, "add_column"):
        return dataset
    if ID_KEY in dataset.column_names:
        return dataset
    return dataset.add_column(ID_KEY, list(range(len(dataset))))
