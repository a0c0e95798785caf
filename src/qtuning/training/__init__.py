"""Training with Q-Tuning: `QTuningTrainerMixin` on any transformers Trainer (`trainer_mixin`, with its
bases `step_planning` and `bookkeeping`), `QTuningSFTTrainer` on TRL's SFTTrainer (`trainer`), their
configurations (`sft_config`), selection across ranks (`distributed`), stale scores and the automatic
scoring mode (`stale`, `scoring_mode`), the run's metrics (`run_metrics`) and `qtuning train` (`run`).
The only folder that imports trl at module level (`trainer`, `sft_config`)."""
