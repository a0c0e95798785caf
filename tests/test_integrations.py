"""The framework integrations without the frameworks (fast): the start-up checks, and the instrumentation
that the replay check and the step-time benchmark rely on (qtuning.integrations.instrument,
benchmarks/integrations.py), on a tiny model behind the mixin on a plain transformers.Trainer.

qtuning.integrations.axolotl's checks need pydantic only (Axolotl's BasePlugin falls back to object when
Axolotl is absent); qtuning.integrations.llamafactory's need nothing. The runs inside the frameworks'
own environments (scripts/framework_env.sh) are in tests/test_frameworks.py.
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from qtuning.engine.training_config import QTuningTrainingConfig
from qtuning.errors import ConfigError
from qtuning.integrations import axolotl, llamafactory
from tests.helpers import run_cli

PLUGIN = {"plugins": [axolotl.PLUGIN]}


def test_axolotl_args_declare_every_training_field_with_the_prefix():
    names = {f.name for f in dataclasses.fields(QTuningTrainingConfig)}
    assert set(axolotl.QTuningArgs.model_fields) == {f"qtuning_{n}" for n in names}
    assert axolotl.QTuningPlugin().get_input_args() == "qtuning.integrations.axolotl.QTuningArgs"


def test_axolotl_settings_come_from_the_prefixed_keys():
    settings = axolotl.check_config({**PLUGIN, "qtuning_sample_ratio": 0.3, "qtuning_scoring": "stale"})
    assert (settings.sample_ratio, settings.scoring, settings.token_ratio) == (0.3, "stale", 0.5)
    assert axolotl.check_config(PLUGIN) == QTuningTrainingConfig()


@pytest.mark.parametrize(
    "cfg, words",
    [
        ({"qtuning_sampel_ratio": 0.3}, "did you mean qtuning_sample_ratio"),
        ({"sample_ratio": 0.3}, "write qtuning_sample_ratio"),
        ({"qtuning_sample_ratio": "abc"}, "qtuning_sample_ratio: Input should be a valid number"),
        ({"qtuning_sample_ratio": 2.0}, "sample_ratio=2.0 is not allowed"),
        ({"qtuning_scoring": "nope"}, "scoring='nope' is not allowed"),
        ({"sample_packing": True}, "set sample_packing: false"),
        ({"batch_flattening": True}, "set batch_flattening: false"),
        ({"liger_fused_linear_cross_entropy": True}, "set liger_fused_linear_cross_entropy: false"),
        ({"plugins": [axolotl.PLUGIN, axolotl.CCE_PLUGIN]}, "set cut_cross_entropy: false"),
        ({"chunked_cross_entropy": True}, "set chunked_cross_entropy: false"),
        ({"kd_trainer": True}, "set kd_trainer: false"),
        ({"rl": "dpo"}, "remove rl"),
        ({"use_eaft": True}, "set use_eaft: false"),
        ({"context_parallel_size": 2}, "set context_parallel_size: 1"),
    ],
)
def test_axolotl_refuses_in_one_line(cfg, words):
    with pytest.raises(ConfigError) as info:
        axolotl.check_config({**PLUGIN, **cfg})
    message = str(info.value)
    assert words in message and "\n" not in message


def test_axolotl_cut_cross_entropy_turned_off_is_accepted():
    axolotl.check_config({"plugins": [axolotl.PLUGIN, axolotl.CCE_PLUGIN], "cut_cross_entropy": False})


def test_axolotl_a_field_that_is_also_an_axolotl_key_is_not_refused():
    axolotl.check_config({**PLUGIN, "seed": 1, "scoring": "x"}, axolotl_keys={"scoring"})


def test_llamafactory_block_is_checked():
    assert llamafactory.settings_from_block({"sample_ratio": 0.3}, "t.yaml").sample_ratio == 0.3
    for block, words in (
        ({"sampel_ratio": 0.3}, "unknown key qtuning.sampel_ratio (did you mean sample_ratio?)"),
        ({"sample_ratio": 2}, "qtuning.sample_ratio=2 is not allowed"),
        ([0.3], "must be a mapping"),
    ):
        with pytest.raises(ConfigError) as info:
            llamafactory.settings_from_block(block, "t.yaml")
        assert words in str(info.value) and str(info.value).startswith("t.yaml: ")


@pytest.mark.parametrize(
    "key", ["use_dft_loss", "use_eaft_loss", "use_asft_loss", "enable_liger_kernel", "neat_packing", "packing"]
)
def test_llamafactory_refuses_in_one_line(key):
    message = llamafactory.incompatible_option({"stage": "sft", key: True})
    assert message and f"set {key}: false" in message and "\n" not in message


def test_llamafactory_sft_only():
    assert llamafactory.incompatible_option({"stage": "sft", "finetuning_type": "lora"}) is None
    assert "use stage: sft" in llamafactory.incompatible_option({"stage": "dpo"})


# ---------------------------------------------------------------- the instrumentation, on a tiny model
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def framework_trainer(tmp_path, max_steps=3, seed=0):
    """What the glue builds: Instrumented, the mixin, then a framework's Trainer (here transformers' own,
    counting its own compute_loss calls), on a LoRA model saved and loaded as a framework would."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from qtuning.integrations.instrument import Instrumented
    from qtuning.training.trainer_mixin import QTuningTrainerMixin
    from tests.helpers import tiny_dataset, tiny_llama, tiny_tokenizer

    class FrameworkTrainer(Trainer):  # the framework's own trainer
        own_loss_calls = 0

        def compute_loss(self, model, inputs, **kwargs):
            FrameworkTrainer.own_loss_calls += 1
            return super().compute_loss(model, inputs, **kwargs)

    class Glue(Instrumented, QTuningTrainerMixin, FrameworkTrainer):
        qtuning_framework = "transformers"

    folder = tmp_path / "model"
    if not folder.is_dir():
        tiny_llama().save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(folder), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )

    def collate(examples):  # right-padded to the longest row (pad id 2), as the frameworks' collators do
        width = max(len(e["input_ids"]) for e in examples)
        pad = [width - len(e["input_ids"]) for e in examples]
        return {
            "input_ids": torch.tensor([e["input_ids"] + [2] * n for e, n in zip(examples, pad)]),
            "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * n for e, n in zip(examples, pad)]),
            "labels": torch.tensor([e["labels"] + [-100] * n for e, n in zip(examples, pad)]),
        }

    args = TrainingArguments(
        output_dir=str(tmp_path / "framework"),
        per_device_train_batch_size=8,
        max_steps=max_steps,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        disable_tqdm=True,
    )
    settings = QTuningTrainingConfig(sample_ratio=0.25, token_ratio=0.5, probe_precision="same")
    trainer = Glue(
        model=model, args=args, train_dataset=tiny_dataset(40), data_collator=collate, qtuning_config=settings
    )
    return trainer, FrameworkTrainer


@pytest.mark.parametrize("kind", ["mixin", "sft"])
def test_a_dumped_run_replays_to_the_same_plans(tmp_path, monkeypatch, kind):
    import integrations

    dump = tmp_path / "dump"
    monkeypatch.setenv("QTUNING_DUMP_BATCHES", str(dump))
    monkeypatch.setenv("QTUNING_DUMP_WEIGHTS", "1")
    trainer, _ = framework_trainer(tmp_path)
    trainer.train()
    meta = json.loads((dump / "meta.json").read_text())
    assert meta["framework"] == "transformers" and meta["qtuning"]["sample_ratio"] == 0.25
    assert sorted(p.name for p in dump.glob("step-*.pt")) == ["step-0001.pt", "step-0002.pt", "step-0003.pt"]
    monkeypatch.delenv("QTUNING_DUMP_BATCHES")

    info = integrations.replay(dump, tmp_path / "replay", kind, weights=True)
    assert info["frozen_digest_equal"] and info["initial_trainable_equal"]
    result = integrations.compare(dump, tmp_path / "replay" / "dump")
    assert result["all_equal"] and result["steps_compared"] == 3, result
    for row in result["steps"]:
        assert row["batches_equal"] and row["lr_equal"] and len(row["kept_ids"]) == 2  # 25% of 8
        assert row["max_abs_diff_ppl"] == row["max_abs_diff_entropy"] == 0.0
        assert row["max_abs_diff_weights_before_step"] == 0.0  # the same updates, bit for bit
    # the replay's own plan log names the framework's rows
    framework_log = (tmp_path / "framework" / "qtuning_plans.jsonl").read_text().splitlines()
    replay_log = (tmp_path / "replay" / "qtuning_plans.jsonl").read_text().splitlines()
    assert [json.loads(line)["samples"]["id"] for line in framework_log] == [
        json.loads(line)["samples"]["id"] for line in replay_log
    ]


def test_compare_finds_the_first_differing_step(tmp_path, monkeypatch):
    import integrations

    for name in ("a", "b"):
        monkeypatch.setenv("QTUNING_DUMP_BATCHES", str(tmp_path / name))
        framework_trainer(tmp_path)[0].train()
    assert integrations.compare(tmp_path / "a", tmp_path / "b")["all_equal"]  # deterministic
    path = tmp_path / "b" / "step-0002.pt"
    step = torch.load(path, weights_only=True)
    step["plans"][0]["sample_ppl"][0] += 2e-5
    torch.save(step, path)
    result = integrations.compare(tmp_path / "a", tmp_path / "b")
    assert not result["all_equal"] and result["first_differing_step"] == 2
    assert result["steps"][1]["kept_ids_equal"] and not result["steps"][1]["scores_within_tolerance"]
    step["plans"][0]["kept_role"] = step["plans"][0]["kept_role"].roll(1)
    torch.save(step, path)
    assert not integrations.compare(tmp_path / "a", tmp_path / "b")["steps"][1]["roles_equal"]


def test_alternate_times_qtuning_and_the_framework_step_on_the_same_batches(tmp_path, monkeypatch):
    record = tmp_path / "steps.jsonl"
    monkeypatch.setenv("QTUNING_BENCH_ALTERNATE", str(record))
    trainer, framework = framework_trainer(tmp_path, max_steps=4)
    trainer.train()
    steps = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(s["step"], s["pair"], s["mode"]) for s in steps] == [
        (1, 0, "qtuning"),
        (2, 0, "full"),
        (3, 1, "full"),
        (4, 1, "qtuning"),
    ]
    assert steps[0]["ids"] == steps[1]["ids"] != steps[2]["ids"] == steps[3]["ids"]  # each pair: one batch
    assert all(s["rows"] == 8 and s["seconds"] > 0 for s in steps)
    assert framework.own_loss_calls == 2  # the full steps ran the framework's own loss, on all 8 rows
    plans = [json.loads(line) for line in (tmp_path / "framework" / "qtuning_plans.jsonl").read_text().splitlines()]
    assert [p["step"] for p in plans] == [1, 4] and all(p["num_kept"] == 2 for p in plans)


def test_qtuning_llamafactory_subcommand_without_the_framework(tmp_path):
    """`qtuning llamafactory` is listed by --help; where LLaMA-Factory is absent (this venv) it says, in
    one line, what to install, before reading anything."""
    import importlib.util

    assert importlib.util.find_spec("llamafactory") is None  # this venv has no LLaMA-Factory
    config = tmp_path / "train.yaml"
    config.write_text("stage: sft\nqtuning:\n  sample_ratio: 0.25\n")
    helped = run_cli("--help")
    assert "llamafactory" in helped.stdout
    proc = run_cli("llamafactory", str(config))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qtuning: error: `qtuning llamafactory` needs llamafactory")
    assert "pip install llamafactory==0.9.5" in lines[0]
    usage = run_cli("llamafactory")
    assert usage.returncode == 2 and "usage: qtuning llamafactory train.yaml" in usage.stderr
