"""What the framework trainers record for the replay check and the step-time benchmark (off by default).

benchmarks/integrations.py checks each framework's Q-Tuning run against qtuning's own trainer and times
its steps against the framework's own; it switches these on through environment variables, which reach
the process that trains (Axolotl's `accelerate launch` child, the LLaMA-Factory launcher) unchanged:

- QTUNING_DUMP_BATCHES=DIR: the run writes what a replay needs, in DIR:
  meta.json (framework and library versions, the training arguments, the Q-Tuning settings, the model's
  dtype and attention, a digest of its frozen weights), initial_adapter/ (PEFT's save_pretrained before
  step 1), initial_trainable.pt (every trainable tensor before step 1), and step-NNNN.pt per optimizer
  step: the learning rate, each micro-batch exactly as the framework collated it (every tensor, the
  dataset row ids in `qtuning_id`) and its plan at full precision (`plan_tensors`).
  QTUNING_DUMP_WEIGHTS=1 adds trainable-NNNN.pt, the trainable tensors before each step (to locate drift).
- QTUNING_BENCH_ALTERNATE=FILE: every step's micro-batches are trained twice, once by Q-Tuning and once
  by the framework's own full-data step (the base trainer's get_batch_samples and compute_loss, Q-Tuning
  skipped), alternating which goes first (pair 0: Q-Tuning first, pair 1: full first, ...), so machine
  noise hits both alike; one JSON line per step in FILE: pair, mode, seconds from the batches in hand
  to the end of the optimizer step, the micro-batches' rows and their dataset ids, the load average.

`Instrumented` goes first in the glue trainers' bases (before QTuningTrainerMixin): with neither variable
set it only passes calls on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..data.row_ids import ID_KEY
from ..training.trainer_mixin import PLAN_KEY, framework_super

DUMP_ENV = "QTUNING_DUMP_BATCHES"
DUMP_WEIGHTS_ENV = "QTUNING_DUMP_WEIGHTS"
ALTERNATE_ENV = "QTUNING_BENCH_ALTERNATE"
MODES = ("qtuning", "full")


def plan_tensors(plan) -> dict[str, torch.Tensor]:
    """A SelectionPlan's per-sample and per-token results, full precision, for comparing two runs."""
    return {
        "kept_role": plan.kept_role.clone(),
        "quadrant": plan.quadrant.clone(),
        "supplemented": plan.supplemented.clone(),
        "sample_ppl": plan.sample_ppl.clone(),
        "sample_entropy": plan.sample_entropy.clone(),
        "num_trainable_tokens": plan.num_trainable_tokens.clone(),
        "token_keep": plan.token_keep.clone(),
        "token_score": plan.token_score.clone(),
    }


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def frozen_digest(model) -> str:
    """sha256 over the names, shapes, dtypes and bytes of the frozen weights: the same base model, bit for bit."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            continue
        t = p.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _versions(framework: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", framework):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class _Dump:
    """QTUNING_DUMP_BATCHES: the run's batches, plans, initial weights and settings, in `folder`."""

    def __init__(self, folder: str, weights: bool):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.weights = weights
        self.started = False

    def initial(self, trainer) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(model, "peft_config"):
            model.save_pretrained(self.folder / "initial_adapter")
        torch.save(trainable_state(model), self.folder / "initial_trainable.pt")
        config = model.config
        meta = {
            "framework": trainer.qtuning_framework,
            "versions": _versions(trainer.qtuning_framework),
            "model_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "name_or_path": getattr(config, "_name_or_path", None),
            "frozen_digest": frozen_digest(model),
            "num_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "qtuning": dataclasses.asdict(trainer.qt_settings),
            "args": json.loads(json.dumps(trainer.args.to_dict(), default=str)),
            "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
            "world_size": trainer.args.world_size,
        }
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        self.started = True

    def step(self, trainer, step: int, batches: list[dict]) -> None:
        if self.weights:
            model = trainer.accelerator.unwrap_model(trainer.model)
            torch.save(trainable_state(model), self.folder / f"trainable-{step:04d}.pt")
        record = {
            "step": step,
            "lr": float(trainer.optimizer.param_groups[0]["lr"]),
            "batches": [
                {k: v.detach().cpu().clone() for k, v in b.items() if isinstance(v, torch.Tensor)} for b in batches
            ],
            "plans": [plan_tensors(b[PLAN_KEY]) for b in batches if PLAN_KEY in b],
        }
        torch.save(record, self.folder / f"step-{step:04d}.pt")


class _Alternate:
    """QTUNING_BENCH_ALTERNATE: each step's batches trained twice, Q-Tuning and the framework's full step."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.cached: list[dict] = []
        self.record: dict | None = None

    def step_batches(self, trainer, epoch_iterator, num_batches: int) -> tuple[list[dict], str]:
        """(copies of this pair's micro-batches, the mode of this step); the pair's first step fetches them."""
        pair, second = divmod(trainer.state.global_step, 2)
        if not second:
            self.cached = []
            for _ in range(num_batches):
                try:
                    self.cached.append(next(epoch_iterator))
                except StopIteration:
                    break
        mode = MODES[(pair + second) % 2]
        copies = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in self.cached]
        ids = [int(i) for b in self.cached for i in b.get(ID_KEY, ())]
        self.record = {"step": trainer.state.global_step + 1, "pair": pair, "mode": mode, "ids": ids}
        return copies, mode

    def started(self, rows: int) -> None:
        self.record.update(rows=rows, started=time.perf_counter())

    def finished(self) -> None:
        if self.record is None:
            return
        record, self.record = self.record, None
        record["seconds"] = round(time.perf_counter() - record.pop("started"), 4)
        record["loadavg_1m"] = os.getloadavg()[0]
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


class _InstrumentCallback(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer._qt_alternate is not None:
            self.trainer._qt_alternate.finished()


class Instrumented:
    """First base of the glue trainers: the dump and the alternating benchmark, when their variables are set.

    Subclasses set `qtuning_framework` (the framework's distribution name, for meta.json)."""

    qtuning_framework = "unknown"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dump, weights, alternate = self.instrument_settings()
        self._qt_dump = _Dump(dump, weights) if dump else None
        self._qt_alternate = _Alternate(alternate) if alternate else None
        self._qt_full_step = False
        if self._qt_dump is not None or self._qt_alternate is not None:
            self.add_callback(_InstrumentCallback(self))

    def instrument_settings(self) -> tuple[str | None, bool, str | None]:
        """(the dump folder, dump the weights too?, the timing file), from the environment."""
        return os.environ.get(DUMP_ENV), os.environ.get(DUMP_WEIGHTS_ENV) == "1", os.environ.get(ALTERNATE_ENV)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        if self._qt_dump is None and self._qt_alternate is None:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        step = self.state.global_step + 1
        if self._qt_dump is not None and not self._qt_dump.started:
            self._qt_dump.initial(self)
        mode = "qtuning"
        if self._qt_alternate is not None:
            batches, mode = self._qt_alternate.step_batches(self, epoch_iterator, num_batches)
            epoch_iterator = iter(batches)
            self._qt_alternate.started(rows=sum(len(b["input_ids"]) for b in batches))
        self._qt_full_step = mode == "full"
        if self._qt_full_step:  # the framework's own step: its base class, Q-Tuning's methods skipped
            batches, count = framework_super(self).get_batch_samples(epoch_iterator, num_batches, device)
        else:
            batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
            if self._qt_dump is not None:
                self._qt_dump.step(self, step, batches)
        return batches, count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._qt_full_step and model.training:
            inputs.pop(ID_KEY, None)  # the row ids are Q-Tuning's; the model does not take them
            return framework_super(self).compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
