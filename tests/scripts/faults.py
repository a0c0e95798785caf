"""`qtuning` (the command) with one fault injected, for tests/test_faults.py (run directly or under torchrun).

    QT_FAULT=probe QT_FAULT_RANK=1 QT_FAULT_STEP=3 [QT_FAULT_SIGNAL=KILL] python tests/scripts/faults.py train ...

QT_FAULT says where the rank QT_FAULT_RANK sends itself QT_FAULT_SIGNAL (KILL, STOP or TERM; or ENOSPC:
an OSError "No space left on device" raised there) at optimizer step QT_FAULT_STEP (1-based):
- probe: at the start of the step's probe forward (no grad);
- backward: when the step's backward pass reaches the loss (the first gradient computed);
- checkpoint: while checkpoint-N is written (after the weights and optimizer, before the RNG state, the
  trainer state and qtuning_state.json);
- collective: inside the selection's all_gather (qtuning.training.distributed.gather_objects), before it sends;
- step_end: at the end of the step (TERM: a SIGTERM between two steps).
QT_FAULT_MARK names a file that gets the time the signal was sent. Nothing is patched without QT_FAULT. Then the command runs as `qtuning` does (one-line errors, exit status).
"""

import errno
import os
import signal
import sys
import time
from pathlib import Path


def _fire(where: str, step: int) -> None:
    if os.environ.get("QT_FAULT") != where or int(os.environ.get("RANK", "0")) != int(os.environ["QT_FAULT_RANK"]):
        return
    if step != int(os.environ["QT_FAULT_STEP"]):
        return
    name = os.environ.get("QT_FAULT_SIGNAL", "KILL")
    if os.environ.get("QT_FAULT_MARK"):  # when it fired, for the test's seconds-to-exit
        Path(os.environ["QT_FAULT_MARK"]).write_text(repr(time.time()))
    if name == "ENOSPC":  # not a signal: this rank's disk is full
        print(f"[faults] rank {os.environ.get('RANK', '0')}: ENOSPC at the {where} of step {step}", flush=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    print(f"[faults] rank {os.environ.get('RANK', '0')}: SIG{name} at the {where} of step {step}", flush=True)
    os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


def install() -> None:
    fault = os.environ.get("QT_FAULT")
    if not fault:
        return
    import transformers

    import qtuning.training.distributed as distributed
    from qtuning.training.trainer_mixin import QTuningTrainerMixin

    if fault == "probe":
        probe = QTuningTrainerMixin._probe

        def _probe(self, batch):
            _fire("probe", self.state.global_step + 1)
            return probe(self, batch)

        QTuningTrainerMixin._probe = _probe
    elif fault == "backward":
        compute_loss = QTuningTrainerMixin.compute_loss

        def _compute_loss(self, model, inputs, *args, **kwargs):
            loss = compute_loss(self, model, inputs, *args, **kwargs)
            step = self.state.global_step + 1
            if loss.requires_grad:
                loss.register_hook(lambda grad: _fire("backward", step))
            return loss

        QTuningTrainerMixin.compute_loss = _compute_loss
    elif fault == "checkpoint":
        save_rng = transformers.Trainer._save_rng_state

        def _save_rng_state(self, output_dir):
            _fire("checkpoint", self.state.global_step)
            return save_rng(self, output_dir)

        transformers.Trainer._save_rng_state = _save_rng_state
    elif fault == "collective":
        gather = distributed.gather_objects

        def _gather(obj, local=False, step=None, owner="selection"):
            if owner == "selection":
                _fire("collective", step)
            return gather(obj, local, step=step, owner=owner)

        distributed.gather_objects = _gather
    elif fault == "step_end":
        on_step_end = QTuningTrainerMixin._on_step_end

        def _on_step_end(self):
            on_step_end(self)
            _fire("step_end", self.state.global_step)

        QTuningTrainerMixin._on_step_end = _on_step_end
    else:
        raise SystemExit(f"unknown QT_FAULT={fault!r}")


if __name__ == "__main__":
    install()
    from qtuning.cli import exit_process, main

    exit_process(main(sys.argv[1:]))
