"""Stages 1 and 2 of QTuningTrainerMixin, ahead of each optimizer step: fetch the step's micro-batches, score
them with the no-grad probe (or from the stale cache), and plan them (`plan_step`). A base of
QTuningTrainerMixin; not used alone."""

from __future__ import annotations

import contextlib
import time

import torch

from ..data.row_ids import ID_KEY
from ..engine.scoring import IGNORE_INDEX, shift_labels, shift_mask
from ..engine.seeds import derive_seed
from ..engine.selection import ScoredBatch, SelectionPlan, prepare_scores
from ..modeling.padding_free import unpack
from ..notices import notice
from .distributed import all_reduce_sum, plan_step
from .stale import rows_to_probe

PLAN_KEY = "qtuning_plan"  # where a micro-batch carries its plan from get_batch_samples to compute_loss
PACKED_KEY = "qtuning_packed"  # a micro-batch unpacked from a padding-free row: train it packed again


class _StepPlanning:
    """Fetching, scoring and planning the micro-batches of a step (`get_batch_samples` and its helpers)."""

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
