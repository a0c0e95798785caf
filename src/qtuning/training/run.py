"""A complete fine-tuning run from a RunConfig and a QTuningSFTConfig: what `qtuning train` does.

trainer, reports = build_trainer(run, args)   # steps 1-3
summary = run_training(run, args)             # steps 1-5

1. load the model (built-in, .gguf, folder or hub id) and its tokenizer
2. load and normalise the data, hold out an evaluation split, report skipped/truncated rows
3. build the QTuningSFTTrainer (LoRA when lora_r > 0)
4. held-out loss before, train (resumable), held-out loss after
5. save the model or adapter, the logs and the summary in output_dir
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from ..data.run_files import CHECKPOINT_GLOB, GROUPS_FILE, RUN_FILE, SUMMARY_FILE
from ..notices import notice
from .sft_config import QTuningSFTConfig, RunConfig


def compact_progress_callback():
    """The Trainer's progress bar (with ETA), with one short line per log instead of a dict dump."""
    from transformers.trainer_callback import ProgressCallback

    class CompactProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or self.training_bar is None or not logs:
                return
            if "eval_loss" in logs:
                self.training_bar.write(
                    f"step {state.global_step}/{state.max_steps} | eval loss {logs['eval_loss']:.4f}"
                )
            if "loss" not in logs:
                return  # the end-of-training dict: run.py prints its own summary
            parts = [f"step {state.global_step}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
            if "learning_rate" in logs:
                parts.append(f"lr {logs['learning_rate']:.2e}")
            if "qtuning/kept_sample_fraction" in logs:
                quadrants = "/".join(f"{100 * logs[f'qtuning/quadrant_q{q}']:.0f}" for q in range(1, 5))
                parts += [
                    f"kept {logs['qtuning/kept_sample_fraction']:.1%} samples, "
                    f"{logs['qtuning/kept_token_fraction']:.1%} tokens",
                    f"Q1-Q4 {quadrants}%",
                    f"bisection ok {logs['qtuning/bisection_converged_share']:.0%}",
                    f"scoring {logs['qtuning/scoring_time_share']:.0%} of step time",
                ]
            self.training_bar.write(" | ".join(parts))

    return CompactProgress()


def build_trainer(run: RunConfig, args: QTuningSFTConfig, *, model=None, tokenizer=None, callbacks=None):
    """Model, data and trainer for a run; returns (trainer, data reports).

    run: what to load (model unless given, data, held-out split, LoRA); args: the trainer's settings."""
    from transformers import set_seed

    from ..data import count_truncation, load_records, split_records, to_dataset
    from ..data.models import load_model_and_tokenizer
    from .trainer import QTuningSFTTrainer

    set_seed(args.seed)
    if args.deepspeed:
        # ZeRO-3 partitions the weights while they load (deepspeed.zero.Init), which needs the process
        # group: TrainingArguments sets it up when its device is first asked for
        _ = args.device
    # the data first: a bad file is refused in a second, before a model loads
    records, report = load_records(run.data, args.group_field)
    eval_loaded = load_records(run.eval_data) if run.eval_data else None
    if model is None:
        model, tokenizer = load_model_and_tokenizer(run.model)
    if args.pruning_method != "none" and any(r.get("token_keep") is not None for r in records):
        notice(
            f"{run.data} carries static token masks (qtuning_token_keep, from `qtuning select`) "
            f"and pruning_method={args.pruning_method!r} selects and prunes again on top of them; "
            "use --pruning_method none to train on the static selection as it is"
        )
    reports = [report]
    if run.eval_data:
        eval_records, eval_report = eval_loaded
        reports.append(eval_report)
        train_records, _ = split_records(records, 0.0, args.seed, run.max_train_samples)
        eval_records = eval_records[: run.max_eval_samples] if run.max_eval_samples else eval_records
    else:
        train_records, eval_records = split_records(
            records, run.eval_fraction, args.seed, run.max_train_samples, run.max_eval_samples
        )
    count_truncation(tokenizer, train_records, args.max_length, report)
    peft_config = None
    if run.lora_r > 0:
        from peft import LoraConfig

        targets = run.lora_target_modules
        peft_config = LoraConfig(
            r=run.lora_r,
            lora_alpha=run.lora_alpha,
            lora_dropout=run.lora_dropout,
            task_type="CAUSAL_LM",
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        )
    # padding_free: TRL refuses a max_length it would not enforce, so the rows are tokenised and
    # truncated here and TRL is told there is nothing left to truncate
    pretokenize = bool(args.padding_free and args.max_length)
    train_dataset = to_dataset(train_records, tokenizer, args.max_length, pretokenize, args.group_field)
    eval_dataset = to_dataset(eval_records, tokenizer, args.max_length, tokenize=pretokenize) if eval_records else None
    if pretokenize:
        args.max_length = None
    with warnings.catch_warnings():
        # peft (0.21) reads the model's `is_gradient_checkpointing`, which transformers (5.24) deprecates in
        # favour of `is_activation_checkpointing`: a warning between two libraries, about nothing the run set
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        trainer = QTuningSFTTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    return trainer, reports


# the trainer settings that, with every RunConfig and Q-Tuning field, make a run what it is
_RECIPE_TRAINER_FIELDS = (
    "seed",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "max_steps",
    "num_train_epochs",
)
_NOT_RECIPE = {
    "overwrite_output_dir",
    "plan_log",
    "plan_log_tokens",
    "group_field",
    "warn_every_steps",
}  # change no result


def run_recipe(run: RunConfig, args: QTuningSFTConfig) -> dict:
    """What makes a run what it is (model, data, selection and optimisation settings), as JSON values."""
    import dataclasses

    from ..engine.training_config import QTuningTrainingConfig

    names = [f.name for cls in (RunConfig, QTuningTrainingConfig) for f in dataclasses.fields(cls)]
    values = {name: getattr(run if hasattr(run, name) else args, name, None) for name in names}
    values.update({name: getattr(args, name, None) for name in _RECIPE_TRAINER_FIELDS})
    return {k: v for k, v in json.loads(json.dumps(values, default=str)).items() if k not in _NOT_RECIPE}


def run_inputs(run: RunConfig) -> dict:
    """Fingerprints of the model and data a run reads (qtuning_summary.json's "inputs";
    `qtuning.training.environment.input_fingerprint`)."""
    from ..data.builtin import BUILTIN_SOURCES
    from ..data.models import BUILTIN_MODELS
    from .environment import input_fingerprint

    inputs = {
        "model": input_fingerprint(run.model, BUILTIN_MODELS),
        "data": input_fingerprint(run.data, BUILTIN_SOURCES),
    }
    if run.eval_data:
        inputs["eval_data"] = input_fingerprint(run.eval_data, BUILTIN_SOURCES)
    return inputs


def check_output_dir(run: RunConfig, args: QTuningSFTConfig) -> Path:
    """Before any model loads: output_dir can be written, and holds no other run.

    Another run: its RUN_FILE records a different recipe, and this run neither resumes it
    (--resume_from_checkpoint) nor replaces it (--overwrite_output_dir true, which removes its
    checkpoints and plan logs). Raises a UsageError naming the folder and the settings that differ."""
    import shutil

    from ..data.plan_log import plan_log_paths
    from ..errors import UsageError
    from ..files import check_output_folder

    out = check_output_folder(args.output_dir, "output_dir", UsageError)
    previous = out / RUN_FILE
    if args.resume_from_checkpoint or not previous.is_file():
        return out
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        old = None  # unreadable: nothing to compare with
    recipe = run_recipe(run, args)
    changed = [k for k in sorted(recipe) if isinstance(old, dict) and k in old and old[k] != recipe[k]]
    if not changed:
        return out
    overwrite = getattr(run, "overwrite_output_dir", False) or getattr(args, "overwrite_output_dir", False)
    if not overwrite:
        details = "; ".join(f"{k}: {old[k]!r} there, {recipe[k]!r} now" for k in changed[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        raise UsageError(
            f"output_dir {out} holds another run ({details}{more}); use another output_dir, resume that run "
            "with --resume_from_checkpoint true, or replace it with --overwrite_output_dir true"
        )
    if int(os.environ.get("RANK", "0")) == 0:  # replace it: its checkpoints and plan logs would mix with ours
        for path in [*out.glob(CHECKPOINT_GLOB), *plan_log_paths(out), out / GROUPS_FILE, previous]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        print(f"[qtuning] --overwrite_output_dir: removed the checkpoints and plan logs of the run in {out}")
    return out


def run_training(run: RunConfig, args: QTuningSFTConfig) -> dict:
    """The whole run; returns the summary that is also written to output_dir/qtuning_summary.json.

    The output_dir is checked first (writable, not another run's: check_output_dir); a disk that fills
    while the run writes ends it with a StorageError that names the last complete checkpoint."""
    print(
        f"[qtuning] model {run.model} | data {run.data} | pruning {args.pruning_method} "
        f"({args.sample_ratio:.3g} of samples x {args.token_ratio:.3g} of Q2 tokens, scoring={args.scoring}) "
        f"| output {args.output_dir}"
    )
    check_output_dir(run, args)
    with _disk_full_is_a_storage_error(args.output_dir):
        return _train_and_save(run, args)


@contextlib.contextmanager
def _disk_full_is_a_storage_error(output_dir):
    """A disk-full error (or a file size limit) while the run writes: a StorageError naming output_dir, the
    error and the last complete checkpoint to resume from, instead of a traceback."""
    from ..errors import QTuningError, StorageError
    from ..files import is_write_failure, write_failure

    def resume_hint() -> str:
        from .trainer_mixin import last_complete_checkpoint

        last = last_complete_checkpoint(output_dir)
        where = f"resume from {last} with --resume_from_checkpoint true" if last else "no checkpoint to resume from"
        return f"{where} once there is room"

    try:
        yield
    except StorageError as exc:
        if "resume" in str(exc):  # the checkpoint's own message says it
            raise
        raise StorageError(f"{exc}; {resume_hint()}") from exc
    except QTuningError:
        raise
    except Exception as exc:
        if not is_write_failure(exc):
            raise
        raise StorageError(
            f"writing into output_dir {output_dir} failed: {write_failure(exc, output_dir)}; {resume_hint()}"
        ) from exc


def _train_and_save(run: RunConfig, args: QTuningSFTConfig) -> dict:
    from ..files import atomic_write_text

    trainer, reports = build_trainer(run, args)
    inputs = None
    if trainer.is_world_process_zero():  # the recipe of the run that now writes here (check_output_dir)
        atomic_write_text(Path(args.output_dir) / RUN_FILE, json.dumps(run_recipe(run, args), indent=1) + "\n")
        inputs = run_inputs(run)  # before training: the files as they were read
    if not args.disable_tqdm:
        from transformers.trainer_callback import ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(compact_progress_callback())
    for report in reports:
        for line in report.lines():
            print(f"[qtuning] {line}")
    print(
        f"[qtuning] {len(trainer.train_dataset)} training rows, "
        f"{len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0} held-out rows"
    )
    has_eval = trainer.eval_dataset is not None
    before = trainer.evaluate()["eval_loss"] if has_eval else None
    if before is not None:
        print(f"[qtuning] held-out loss before training: {before:.4f}")
    resume = args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last", "latest"):
        resume = True
    trainer.train(resume_from_checkpoint=resume or None)
    after = trainer.evaluate()["eval_loss"] if has_eval else None
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json (the log history) next to the model
    summary = dict(trainer.qtuning_summary)
    summary.update(
        eval_loss_before=before,
        eval_loss_after=after,
        data=[
            {
                "source": r.source,
                "rows_read": r.rows_read,
                "rows_used": r.rows_used,
                "empty_response_skipped": len(r.empty_response_rows),
                "truncated": r.truncated_rows,
            }
            for r in reports
        ],
        inputs=inputs,
    )
    if trainer.is_world_process_zero():
        os.makedirs(args.output_dir, exist_ok=True)
        atomic_write_text(Path(args.output_dir) / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    minutes, seconds = divmod(summary["wall_clock_s"], 60)
    lines = [
        "",
        "[qtuning] ---------------------------------------------------------------- summary",
        f"  wall-clock (training)   {int(minutes)} min {seconds:.0f} s, {summary['optimizer_steps']} optimizer steps",
        f"  samples                 {summary['samples_scored']:.0f} scored, {summary['samples_trained']:.0f} trained "
        f"({summary['samples_trained'] / max(1, summary['samples_scored']):.1%})",
        f"  response tokens         {summary['trainable_tokens_scored']:.0f} scored, {summary['tokens_trained']:.0f} "
        f"carried a loss ({summary['tokens_trained'] / summary['trainable_tokens_scored']:.1%})"
        if summary["trainable_tokens_scored"]
        else f"  response tokens         {summary['tokens_trained']:.0f} carried "
        "a loss (none scored: pruning_method none)",
        f"  compute vs full data    {summary['estimated_compute_vs_full_data']:.1%} (estimated: {summary['estimate_basis']})",
        f"  scoring time            {summary['scoring_s']:.1f} s",
    ]
    if summary.get("eval_loss_before") is not None:
        lines.append(
            f"  held-out loss           {summary['eval_loss_before']:.4f} before -> "
            f"{summary['eval_loss_after']:.4f} after"
        )
    shares = summary.get("kept_share_by_group")
    if shares:  # group_field: the groups most scored first, at most 8 on the line
        shown = ", ".join(f"{g} {v:.0%}" for g, v in list(shares.items())[:8] if v is not None)
        more = f" (+{len(shares) - 8} more: qtuning report)" if len(shares) > 8 else ""
        lines.append(f"  kept, by group          {shown}{more}")
    lines += [
        f"  outputs                 {summary['output_dir']} (adapter/model, trainer_state.json, qtuning_summary.json)"
    ]
    if summary.get("plan_log"):
        lines.append(f"  plan log                {summary['plan_log']}")
    env = summary.get("environment")
    if env:
        versions = ", ".join(
            f"{k} {v}" for k, v in env["packages"].items() if k in ("torch", "transformers", "trl", "peft")
        )
        ranks = f"{env['world_size']} rank{'s' if env['world_size'] != 1 else ''}"
        lines.append(f"  ran with                {versions}; {env['accelerator'] or env['device']}, {ranks}")
    print("\n".join(lines))
