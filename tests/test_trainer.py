"""QTuningSFTTrainer on a tiny random-init Llama: the loss, the gradient, what gets computed."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from qtuning import QTuningConfig, plan_batch
from qtuning.data.plan_log import read_plan_log
from qtuning.engine.scoring import IGNORE_INDEX, shift_labels
from qtuning.modeling.probe import backbone_and_head, score_batch
from qtuning.training.sft_config import QTuningSFTConfig
from qtuning.training.trainer import PLAN_KEY, QTuningSFTTrainer
from tests.helpers import tiny_dataset, tiny_llama, tiny_tokenizer


def make_trainer(tmp_path, dataset=None, model=None, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=2,
        logging_steps=1,
        report_to=[],
        learning_rate=1e-2,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        probe_precision="same",
    )  # fp32 probe: the references below score in fp32
    settings.update(overrides)
    cfg = QTuningSFTConfig(**settings)
    return QTuningSFTTrainer(
        model=model or tiny_llama(),
        args=cfg,
        train_dataset=dataset or tiny_dataset(32),
        processing_class=tiny_tokenizer(),
    )


def first_batch(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    return {k: v for k, v in batch.items()}


def reference_loss_and_grads(model, batch, cfg: QTuningConfig):
    """Hand-built reference: the model's own full logits, masked CE over the plan's kept tokens."""
    scores, loss_mask, attention = score_batch(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    plan = plan_batch(scores.nll, scores.entropy, loss_mask, cfg, attention_mask=attention)
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    targets = torch.where(plan.token_keep, shift_labels(batch["labels"]), IGNORE_INDEX)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return plan, loss.detach(), grads


def trainer_loss_and_grads(trainer, batch, scoring):
    trainer.args.scoring = scoring
    model = trainer.model
    model.train()
    model.zero_grad()
    batches, num_items = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(model, batches[0], num_items_in_batch=num_items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads


@pytest.mark.parametrize("scoring", ["probe", "reuse"])
def test_probe_and_reuse_match_the_hand_built_reference(tmp_path, scoring):
    trainer = make_trainer(tmp_path)
    batch = first_batch(trainer)
    batch.pop("qtuning_id")
    plan, ref_loss, ref_grads = reference_loss_and_grads(trainer.model, batch, trainer.qt_config)
    assert 0 < plan.num_kept < batch["input_ids"].shape[0]  # a real selection happened
    assert plan.num_pruned_tokens > 0
    loss, grads = trainer_loss_and_grads(trainer, batch, scoring)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_only_kept_samples_reach_forward_with_grad(tmp_path):
    trainer = make_trainer(tmp_path)
    backbone, _ = backbone_and_head(trainer.model)
    calls = []
    backbone.register_forward_hook(
        lambda m, a, kw, out: calls.append((tuple(kw["input_ids"].shape), torch.is_grad_enabled())), with_kwargs=True
    )
    batch = first_batch(trainer)
    trainer.model.train()
    calls.clear()
    batches, num_items = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    plan = batches[0][PLAN_KEY]
    trainer.current_gradient_accumulation_steps = 1
    trainer.compute_loss(trainer.model, batches[0], num_items_in_batch=num_items).backward()
    probe_calls, train_call = calls[:-1], calls[-1]
    # the probe: every row once, no grad, in length-sorted groups of probe_batch_size (4)
    assert all(not grad for _, grad in probe_calls)
    assert sum(shape[0] for shape, _ in probe_calls) == batch["input_ids"].shape[0]
    assert all(shape[0] <= 4 for shape, _ in probe_calls)
    assert sum(shape[0] * shape[1] for shape, _ in probe_calls) < batch["input_ids"].numel()  # less padding
    kept = plan.sample_keep.nonzero().flatten()
    width = int(batch["attention_mask"][kept].sum(dim=1).max())  # trailing pad columns trimmed
    assert train_call == ((kept.numel(), width), True)  # training: the kept rows only
    assert width <= batch["input_ids"].shape[1]


def test_full_data_baseline_trains_every_token(tmp_path):
    trainer = make_trainer(tmp_path, pruning_method="none")
    batch = first_batch(trainer)
    batches, num_items = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    assert int(num_items) == int((shift_labels(batch["labels"]) != IGNORE_INDEX).sum())
    assert batches[0][PLAN_KEY].sample_keep.all()


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    # sample_ratio 1 and token_ratio 1: the kept tokens do not depend on the pool (with token pruning,
    # a supplemented sample's Q2/Q4 tag depends on the pool's min-max normalisation), so 2 micro-batches
    # of 4 must give exactly the update of 1 batch of 8. The micro-batches hold different numbers of
    # tokens: a per-micro-batch mean would weight them differently and fail this test.
    common = dict(
        sample_ratio=1.0,
        token_ratio=1.0,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
    )
    data = tiny_dataset(8)
    a = make_trainer(tmp_path / "a", dataset=data, per_device_train_batch_size=8, **common)
    b = make_trainer(
        tmp_path / "b", dataset=data, per_device_train_batch_size=4, gradient_accumulation_steps=2, **common
    )
    a.train()
    b.train()
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)
    assert a.state.log_history[0]["loss"] == pytest.approx(b.state.log_history[0]["loss"], rel=1e-5)
    # and the step really moved the weights
    assert not torch.equal(a.model.model.embed_tokens.weight, tiny_llama().model.embed_tokens.weight)


def test_logs_plan_file_and_summary(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3
    for entry in logs:
        assert entry["qtuning/kept_sample_fraction"] == pytest.approx(0.25)  # K = round(0.25 * 8) = 2, no excess
        assert sum(entry[f"qtuning/quadrant_q{q}"] for q in range(1, 5)) == pytest.approx(1.0)
        assert 0 < entry["qtuning/kept_token_fraction"] < 0.25
        assert entry["qtuning/tokens_trained"] < entry["qtuning/tokens_scored"]
        assert 0 <= entry["qtuning/scoring_time_share"] <= 1
    assert logs[-1]["qtuning/tokens_trained_total"] == sum(e["qtuning/tokens_trained"] for e in logs)
    lines = read_plan_log(tmp_path / "out" / "qtuning_plans.jsonl")
    assert [line["step"] for line in lines] == [1, 2, 3]
    first = lines[0]
    assert len(first["samples"]["id"]) == 8 and sum(r != 0 for r in first["samples"]["role"]) == 2
    for q2 in first["tokens"]:
        assert len(q2["token_ids"]) == len(q2["score"]) == len(q2["kept"])
        assert sum(q2["kept"]) == max(1, math.floor(0.5 * len(q2["kept"])))
    summary = json.loads((tmp_path / "out" / "qtuning_summary.json").read_text())
    assert summary["samples_scored"] == 24 and summary["samples_trained"] == 6
    assert 0.25 < summary["estimated_compute_vs_full_data"] < 1.0


def test_lora_trains_only_the_adapter(tmp_path):
    from peft import LoraConfig

    base = tiny_llama()
    before = {n: p.clone() for n, p in base.named_parameters()}
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        max_steps=2,
        report_to=[],
        learning_rate=1e-2,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = QTuningSFTTrainer(
        model=base,
        args=QTuningSFTConfig(**settings),
        train_dataset=tiny_dataset(32),
        processing_class=tiny_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if "lora_" in n and p.requires_grad}
    assert changed, "no LoRA parameters"
    for name, param in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            clean = name.replace("base_layer.", "")
            torch.testing.assert_close(param, before[clean], msg=name)
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: it moved


def test_packing_that_cuts_samples_and_packed_reuse_are_refused_at_start_up(tmp_path):
    from qtuning.engine.config import ConfigError

    for strategy in ("bfd_split", "wrapped"):
        with pytest.raises(ConfigError, match=f"packing_strategy='{strategy}' is not supported"):
            QTuningSFTConfig(output_dir=str(tmp_path), packing=True, packing_strategy=strategy)
    with pytest.raises(ConfigError, match="packing=True is not allowed with scoring='auto'"):
        QTuningSFTConfig(output_dir=str(tmp_path), packing=True, scoring="auto")
    assert QTuningSFTConfig(output_dir=str(tmp_path), packing=True).packing_strategy == "bfd"  # supported
    with pytest.raises(ConfigError, match="padding_free=True is not allowed with scoring='reuse'"):
        QTuningSFTConfig(output_dir=str(tmp_path), padding_free=True, scoring="reuse")
    assert QTuningSFTConfig(output_dir=str(tmp_path), padding_free=True).padding_free  # probe mode: supported


def test_probe_precision_auto_follows_the_hardware(tmp_path):
    from qtuning.training.sft_config import cpu_has_native_bf16

    auto = QTuningSFTConfig(output_dir=str(tmp_path), report_to=[])
    assert auto.probe_precision == "auto"
    assert auto.resolved_probe_precision() == ("bf16" if cpu_has_native_bf16() else "same")
    for explicit in ("same", "bf16"):
        cfg = QTuningSFTConfig(output_dir=str(tmp_path), report_to=[], probe_precision=explicit)
        assert cfg.resolved_probe_precision() == explicit


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    """The kept-rows path with activation checkpointing: same loss and gradients as without (1e-5); the
    probe runs without grad, so checkpointing never touches it (checked: only the kept-rows forward goes
    through torch.utils.checkpoint)."""
    plain = make_trainer(tmp_path / "plain")
    batch = first_batch(plain)
    batch.pop("qtuning_id")
    loss, grads = trainer_loss_and_grads(plain, batch, "probe")
    # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (the old names warn)
    model = tiny_llama()
    name = "activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "gradient_checkpointing"
    checkpointed = make_trainer(
        tmp_path / "ckpt", model=model, **{name: True, f"{name}_kwargs": {"use_reentrant": False}}
    )
    getattr(checkpointed.model, f"{name}_enable")(**{f"{name}_kwargs": {"use_reentrant": False}})
    assert getattr(checkpointed.model, f"is_{name}")
    checkpoint_calls = []
    layer = checkpointed.model.model.layers[0]
    wrapped = layer._gradient_checkpointing_func

    def counted(*args, **kwargs):  # the layer's forward goes through torch.utils.checkpoint
        checkpoint_calls.append(torch.is_grad_enabled())
        return wrapped(*args, **kwargs)

    layer._gradient_checkpointing_func = counted
    ckpt_loss, ckpt_grads = trainer_loss_and_grads(checkpointed, batch, "probe")
    # The kept-rows forward (with grad) checkpoints; the no-grad probe does not. Before transformers 5.24 the
    # checkpointing layers did not look at grad mode, so the probe's forward went through the checkpoint
    # function too, where without grad it is a plain forward (constraints-oldest.txt runs 5.0).
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("5.24"):
        assert checkpoint_calls == [True]
    else:
        assert checkpoint_calls[-1] is True and not any(checkpoint_calls[:-1]), checkpoint_calls
    torch.testing.assert_close(ckpt_loss, loss, atol=1e-5, rtol=1e-5)
    assert ckpt_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(ckpt_grads[name], grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_torch_compile_gives_the_same_losses_as_eager(tmp_path):
    """torch_compile through the Trainer (accelerate wraps the model; aot_eager: dynamo and AOT autograd
    tracing without a C++ toolchain): the kept-rows path, its forward hook included, trains the same."""
    losses = {}
    for compiled in (False, True):
        extra = dict(torch_compile=True, torch_compile_backend="aot_eager") if compiled else {}
        trainer = make_trainer(tmp_path / str(compiled), dataset=tiny_dataset(16), model=tiny_llama(seed=0), **extra)
        trainer.train()
        losses[compiled] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        if compiled:
            assert type(trainer.model_wrapped).__name__ == "OptimizedModule"
    assert len(losses[True]) == 2
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
