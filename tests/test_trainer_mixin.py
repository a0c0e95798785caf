"""QTuningTrainerMixin on a plain transformers.Trainer (no trl), settings from `qtuning_config=`: it trains
on a pre-tokenised dataset, writes the plan log, and plans exactly as QTuningSFTTrainer on the same batches.

trl is imported only inside the tests that compare with QTuningSFTTrainer (`-k "not sft"` runs the rest
where trl is absent, e.g. next to LLaMA-Factory's transformers 4.55).
"""

import json

import pytest
import torch
from transformers import Trainer, TrainingArguments

from qtuning import QTuningTrainerMixin, QTuningTrainingConfig
from qtuning.data.plan_log import read_plan_log
from qtuning.engine.config import ConfigError
from tests.helpers import tiny_dataset, tiny_llama, tiny_tokenizer

# the TrainingArguments both trainers share; the SFT trainer gets them inside its QTuningSFTConfig
COMMON = dict(
    per_device_train_batch_size=8,
    max_steps=3,
    logging_steps=1,
    report_to=[],
    learning_rate=1e-2,
    save_strategy="no",
    seed=0,
    disable_tqdm=True,
)
QTUNING = dict(sample_ratio=0.25, token_ratio=0.5, probe_precision="same")  # fp32 probe on both sides


class PlainQTuningTrainer(QTuningTrainerMixin, Trainer):
    """What a framework does: its own Trainer class with the mixin in front."""


def right_padded(examples, pad_id: int = 2):
    """A framework's collator (no tokenizer needed): input_ids, attention_mask, labels (B, T), right-padded
    to the longest row with SmolLM2's pad id and -100, as TRL's collator pads them."""
    width = max(len(e["input_ids"]) for e in examples)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for e in examples:
        pad = width - len(e["input_ids"])
        batch["input_ids"].append(e["input_ids"] + [pad_id] * pad)
        batch["attention_mask"].append([1] * len(e["input_ids"]) + [0] * pad)
        batch["labels"].append(e["labels"] + [-100] * pad)
    return {key: torch.tensor(rows) for key, rows in batch.items()}


def plain_trainer(out, dataset, training=None, **qtuning):
    """The mixin on transformers' own Trainer; `training` overrides COMMON, `qtuning` QTUNING."""
    return PlainQTuningTrainer(
        model=tiny_llama(),
        args=TrainingArguments(output_dir=str(out), **{**COMMON, **(training or {})}),
        train_dataset=dataset,
        data_collator=right_padded,
        qtuning_config=QTuningTrainingConfig(**{**QTUNING, **qtuning}),
    )


def sft_trainer(out, dataset):
    from qtuning.training.sft_config import QTuningSFTConfig
    from qtuning.training.trainer import QTuningSFTTrainer

    return QTuningSFTTrainer(
        model=tiny_llama(),
        args=QTuningSFTConfig(output_dir=str(out), **COMMON, **QTUNING),
        train_dataset=dataset,
        processing_class=tiny_tokenizer(),
    )


def test_mixin_on_a_plain_trainer_trains_and_plans_as_the_sft_trainer(tmp_path):
    data = tiny_dataset(32)
    plain = plain_trainer(tmp_path / "plain", data)
    assert plain.qt_settings.sample_ratio == 0.25 and plain.qt_config.token_ratio == 0.5
    before = plain.model.model.embed_tokens.weight.detach().clone()
    plain.train()
    sft = sft_trainer(tmp_path / "sft", data)
    sft.train()

    logs = [h for h in plain.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(h["qtuning/kept_sample_fraction"] == pytest.approx(0.25) for h in logs)
    assert not torch.equal(plain.model.model.embed_tokens.weight, before)  # it trained
    summary = json.loads((tmp_path / "plain" / "qtuning_summary.json").read_text())
    assert summary["samples_scored"] == 24 and summary["samples_trained"] == 6

    ours = read_plan_log(tmp_path / "plain" / "qtuning_plans.jsonl")
    theirs = read_plan_log(tmp_path / "sft" / "qtuning_plans.jsonl")
    assert [line["step"] for line in ours] == [1, 2, 3]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        sa, sb = a["samples"], b["samples"]
        assert sa["id"] == sb["id"] and None not in sa["id"]  # the same rows, named by their dataset ids
        assert sa["role"] == sb["role"] and sa["kept_tokens"] == sb["kept_tokens"]  # the same selection
        assert sa["ppl"] == pytest.approx(sb["ppl"], abs=1e-5, rel=1e-5)
        assert sa["entropy"] == pytest.approx(sb["entropy"], abs=1e-5, rel=1e-5)
        assert [t["kept"] for t in a["tokens"]] == [t["kept"] for t in b["tokens"]]
        for ta, tb in zip(a["tokens"], b["tokens"]):
            assert ta["score"] == pytest.approx(tb["score"], abs=1e-5, rel=1e-5)
    sft_losses = [h["loss"] for h in sft.state.log_history if "loss" in h]
    assert [h["loss"] for h in logs] == pytest.approx(sft_losses, abs=1e-5)


def test_settings_come_from_the_keyword(tmp_path):
    with pytest.raises(TypeError, match=r"needs qtuning_config=QTuningTrainingConfig"):
        PlainQTuningTrainer(
            model=tiny_llama(), args=TrainingArguments(output_dir=str(tmp_path), report_to=[]), train_dataset=None
        )
    with pytest.raises(ConfigError, match="scoring='reuse'"):  # the trainer fields are checked on their own
        QTuningTrainingConfig(scoring="reuse", selection_pool="accumulation")


def test_sft_settings_come_from_args_not_also_the_keyword(tmp_path):
    from qtuning.training.sft_config import QTuningSFTConfig
    from qtuning.training.trainer import QTuningSFTTrainer

    data = tiny_dataset(8)
    with pytest.raises(TypeError, match="do not pass qtuning_config= as well"):
        QTuningSFTTrainer(
            model=tiny_llama(),
            args=QTuningSFTConfig(output_dir=str(tmp_path), report_to=[]),
            train_dataset=data,
            processing_class=tiny_tokenizer(),
            qtuning_config=QTuningTrainingConfig(),
        )


def test_a_dataset_without_row_ids_trains_and_refuses_stale_scoring(tmp_path):
    """A torch-style dataset (here a list of dicts) cannot take an id column: the plan log names each sample by
    its position in the micro-batch, and scoring='stale', which caches scores by row id, is refused at start-up."""
    rows = [dict(r) for r in tiny_dataset(16)]
    with pytest.raises(ConfigError, match="scoring='stale' needs the dataset row"):
        plain_trainer(tmp_path / "stale", rows, scoring="stale")
    trainer = plain_trainer(tmp_path / "probe", rows)
    trainer.args.max_steps = 1
    trainer.train()
    (line,) = read_plan_log(tmp_path / "probe" / "qtuning_plans.jsonl")
    assert line["samples"]["id"] == list(range(8)) and sum(r != 0 for r in line["samples"]["role"]) == 2


def test_stale_scoring_on_a_plain_trainer_caches_by_row_id(tmp_path):
    trainer = plain_trainer(tmp_path, tiny_dataset(16), scoring="stale")
    trainer.args.max_steps = 4  # two epochs of 16 rows in batches of 8: the second reuses cached scores
    trainer.train()
    assert len(trainer._qt_cache) == 16  # every row, by its dataset id
    stale = trainer.qtuning_summary["samples_selected_with_stale_scores"]
    assert 0 < stale < 16  # epoch 1 probes everything; epoch 2 re-probes only a share (stale_reprobe_fraction)


# One SGD step, everything kept: the update depends only on how the loss is normalised.
ONE_STEP = dict(max_steps=1, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0)


def test_gradient_accumulation_on_a_plain_trainer_equals_one_big_batch(tmp_path):
    """Probe mode divides by the kept tokens of the whole step: 2 micro-batches of 4 give the update of 1
    batch of 8, whether the Trainer reads loss_is_scaled_for_ga (transformers 5) or not (4.x)."""
    data = tiny_dataset(8)
    a = plain_trainer(tmp_path / "a", data, ONE_STEP, sample_ratio=1.0, token_ratio=1.0)
    b = plain_trainer(
        tmp_path / "b",
        data,
        {**ONE_STEP, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
        sample_ratio=1.0,
        token_ratio=1.0,
    )
    a.train()
    b.train()
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(a.model.model.embed_tokens.weight, tiny_llama().model.embed_tokens.weight)


def test_reuse_mode_averages_the_micro_batch_losses_once(tmp_path):
    """scoring='reuse': each micro-batch's mean CE over its kept tokens, averaged over the accumulation
    steps exactly once (by the mixin on transformers 5, by the Trainer before); the plan log names dataset rows."""
    data = tiny_dataset(8)
    trainer = plain_trainer(
        tmp_path,
        data,
        {**ONE_STEP, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
        scoring="reuse",
        sample_ratio=1.0,
        token_ratio=1.0,
    )
    trainer.train()
    lines = read_plan_log(tmp_path / "qtuning_plans.jsonl")
    assert [line["micro_batch"] for line in lines] == [0, 1]
    assert sorted(i for line in lines for i in line["samples"]["id"]) == list(range(8))  # dataset ids
    model = tiny_llama()  # the weights the first step's losses were taken with
    means = []
    with torch.no_grad():
        for line in lines:
            total, count = 0.0, 0
            for i in line["samples"]["id"]:
                ids, labels = torch.tensor([data[i]["input_ids"]]), torch.tensor(data[i]["labels"][1:])
                logits = model(input_ids=ids).logits[0, :-1]  # (T - 1, V)
                total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
                count += int((labels != -100).sum())
            means.append(total / count)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged == [pytest.approx(sum(means) / 2, abs=1e-4)]
