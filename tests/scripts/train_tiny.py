"""A short QTuningSFTTrainer run on the tiny model, for the resume tests (run as a subprocess).

    python tests/scripts/train_tiny.py OUTPUT_DIR [--resume] [--sleep SECONDS]

--sleep pauses after every optimizer step, so that a test can kill the run mid-way.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.helpers

from transformers import TrainerCallback  # noqa: E402

from qtuning.training.sft_config import QTuningSFTConfig  # noqa: E402
from qtuning.training.trainer import QTuningSFTTrainer  # noqa: E402
from tests.helpers import tiny_dataset, tiny_llama, tiny_tokenizer  # noqa: E402


class Sleep(TrainerCallback):
    def __init__(self, seconds):
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--history", action="store_true", help="thresholds='history' (a window of 20 samples)")
    parser.add_argument("--stale", action="store_true", help="scoring='stale' (epoch 2 starts at step 7)")
    args = parser.parse_args()
    cfg = QTuningSFTConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=8,
        max_steps=8,
        logging_steps=1,
        save_steps=2,
        save_strategy="steps",
        report_to=[],
        learning_rate=1e-2,
        seed=0,
        disable_tqdm=True,
        thresholds="history" if args.history else "pool",
        history_window=20,
        scoring="stale" if args.stale else "probe",
    )
    trainer = QTuningSFTTrainer(
        model=tiny_llama(),
        args=cfg,
        train_dataset=tiny_dataset(48),
        processing_class=tiny_tokenizer(),
        callbacks=[Sleep(args.sleep)],
    )
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    print("finished", trainer.state.global_step)


if __name__ == "__main__":
    main()
