"""Padding-free batches: unpacked for selection, the kept samples packed again; the same plans, loss
and gradients as the padded batch of the same samples."""

import pytest
import torch

from qtuning.engine.scoring import IGNORE_INDEX
from qtuning.errors import ConfigError
from qtuning.modeling.padding_free import pack, scatter_rows, segment_lengths, unpack
from qtuning.modeling.probe import check_packed_attention
from qtuning.training.trainer import ID_KEY, PLAN_KEY
from tests.helpers import tiny_dataset, tiny_llama
from tests.test_trainer import first_batch, make_trainer


def test_unpack_and_pack_by_hand():
    packed = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 9, 3, 4, 0, 0]]),
        "labels": torch.tensor([[-100, -100, 7, 8, -100, -100, 4, -100, -100]]),
        "position_ids": torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 0]]),  # 2 samples + a pad tail of 2
    }
    assert segment_lengths(packed["position_ids"]) == [4, 3, 1, 1]
    padded = unpack(packed, pad_token_id=0, num_samples=2)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 8], [9, 3, 4, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert padded["labels"].tolist() == [[-100, -100, 7, 8], [-100, -100, 4, -100]]
    # keep sample 1 only, with a loss weight: the packed row holds its 3 tokens, positions from 0
    kept = {k: v[1:] for k, v in padded.items()}
    kept["loss_weight"] = torch.tensor([2.0])
    again = pack(kept)
    assert again["input_ids"].tolist() == [[9, 3, 4]]
    assert again["position_ids"].tolist() == [[0, 1, 2]]
    assert again["labels"].tolist() == [[IGNORE_INDEX, -100, 4]]
    assert again["loss_weight"].tolist() == [[2.0, 2.0, 2.0]]
    assert "attention_mask" not in again
    hidden = torch.arange(3.0).view(1, 3, 1)
    assert scatter_rows(hidden, kept["attention_mask"]).flatten().tolist() == [0.0, 1.0, 2.0, 0.0]


def test_pack_never_predicts_across_a_boundary():
    rows = {
        "input_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "labels": torch.tensor([[1, 2, 3], [4, 5, -100]]),  # labels on every token, first ones too
    }
    packed = pack(rows)
    assert packed["labels"].tolist() == [[IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]]  # token 4 starts a sample


def test_a_bad_packed_row_is_refused_with_its_shape():
    with pytest.raises(ValueError, match="one row"):
        segment_lengths(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="holds 1 samples, but the collator received 3"):
        unpack(
            {"input_ids": torch.ones(1, 3), "labels": torch.ones(1, 3), "position_ids": torch.tensor([[0, 1, 2]])},
            0,
            num_samples=3,
        )


def test_attention_that_mixes_packed_samples_is_refused():
    model = tiny_llama()
    check_packed_attention(model)  # sdpa: the block-diagonal mask from position_ids
    hook = model.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, args, kwargs: (args, {**kwargs, "attention_mask": None}), with_kwargs=True
    )  # now every position attends to everything before it, across samples
    try:
        with pytest.raises(ConfigError, match="does not keep packed samples apart"):
            check_packed_attention(model)
    finally:
        hook.remove()


def _train_step(trainer, batches, num_items):
    """compute_loss + backward on a planned micro-batch: (plan, loss, gradients)."""
    plan = batches[0][PLAN_KEY]
    loss = trainer.compute_loss(trainer.model, dict(batches[0]), num_items_in_batch=num_items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return plan, loss.detach(), grads


def _assert_same_step(a, b, num_samples: int) -> None:
    """The same kept samples and tokens, loss and gradients within 1e-5."""
    (plan_a, loss_a, grads_a), (plan_b, loss_b, grads_b) = a, b
    assert torch.equal(plan_a.sample_keep, plan_b.sample_keep)
    assert torch.equal(plan_a.token_keep, plan_b.token_keep)
    assert 0 < plan_a.num_kept < num_samples
    assert torch.allclose(loss_a, loss_b, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5), name


@pytest.mark.parametrize("scoring", ["probe", "stale"])
def test_padding_free_equals_padded_plans_loss_and_gradients(tmp_path, scoring):
    results = {}
    for padding_free in (False, True):
        trainer = make_trainer(
            tmp_path / str(padding_free),
            dataset=tiny_dataset(16),
            model=tiny_llama(seed=0),
            padding_free=padding_free,
            scoring=scoring,
            max_length=None,  # TRL: padding-free without packing does not truncate
        )
        trainer.model.train()
        batch = first_batch(trainer)
        if padding_free:
            assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch
        batches, num_items = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
        results[padding_free] = (batches[0][ID_KEY].tolist(), _train_step(trainer, batches, num_items), trainer)
    (ids_a, step_a, _), (ids_b, step_b, packed) = results[False], results[True]
    assert ids_a == ids_b
    _assert_same_step(step_a, step_b, len(ids_a))
    plan_a = step_a[0]
    if scoring == "stale":  # the kept rows' scores, refreshed from the packed forward, land under their ids
        kept_ids = sorted(ids_a[i] for i in plan_a.sample_keep.nonzero().flatten().tolist())
        assert all(i in packed._qt_cache for i in kept_ids)


def test_padding_free_training_runs_and_logs_segments(tmp_path):
    trainer = make_trainer(tmp_path, dataset=tiny_dataset(32), padding_free=True, max_steps=2, max_length=None)
    trainer.train()
    from qtuning.data.plan_log import read_plan_log

    lines = read_plan_log(tmp_path / "out" / "qtuning_plans.jsonl")
    assert [len(line["samples"]["id"]) for line in lines] == [8, 8]  # each segment scored as a sample
    assert sorted(i for line in lines for i in line["samples"]["id"]) == sorted(
        set(i for line in lines for i in line["samples"]["id"])
    )
    assert trainer.qtuning_summary["samples_trained"] == 4  # 25% of 16


def test_segment_ids_by_hand():
    from qtuning.training.trainer import _segment_ids

    assert _segment_ids([7, 7, 7, 3, 3, 9], [3, 2, 1]) == [7, 3, 9]
    assert _segment_ids([4, 4], None) == [4]  # an unpacked row is one segment


def _packed_trainer(tmp_path, **overrides):
    settings = dict(dataset=tiny_dataset(32), model=tiny_llama(seed=0), packing=True, max_length=64)
    settings.update(overrides)
    return make_trainer(tmp_path, per_device_train_batch_size=2, **settings)


def test_packed_rows_equal_the_padded_batch_of_their_samples(tmp_path):
    """packing: true: each segment of a packed row keeps its row id, and the step (plan, loss,
    gradients) equals the padded step of the same samples."""
    packed = _packed_trainer(tmp_path / "packed")
    packed.model.train()
    batch = first_batch(packed)
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch
    batches, num_items = packed.get_batch_samples(iter([batch]), 1, packed.args.device)
    ids = batches[0][ID_KEY].tolist()
    assert len(ids) == len(set(ids)) > 2  # several whole samples, each once
    source = tiny_dataset(32)
    for row, sample in enumerate(ids):  # segment k is dataset row ids[k], whole
        length = int(batches[0]["attention_mask"][row].sum())
        assert batches[0]["input_ids"][row, :length].tolist() == source[sample]["input_ids"]

    padded = make_trainer(tmp_path / "padded", dataset=tiny_dataset(32), model=tiny_llama(seed=0), max_length=64)
    padded.model.train()
    rows = {r[ID_KEY]: r for r in padded.train_dataset}
    padded_batch = padded.data_collator([dict(rows[i]) for i in ids])
    padded_batches, padded_items = padded.get_batch_samples(iter([padded_batch]), 1, padded.args.device)
    assert padded_batches[0][ID_KEY].tolist() == ids
    _assert_same_step(
        _train_step(packed, batches, num_items), _train_step(padded, padded_batches, padded_items), len(ids)
    )


def test_packed_training_sees_every_sample_once_per_epoch(tmp_path):
    from qtuning.data.plan_log import read_plan_log

    trainer = _packed_trainer(tmp_path, max_steps=-1, num_train_epochs=1)
    trainer.train()
    lines = read_plan_log(tmp_path / "out" / "qtuning_plans.jsonl")
    seen = [i for line in lines for i in line["samples"]["id"]]
    assert sorted(seen) == list(range(32))  # every sample scored once, under its own id
    kept = sum(role != 0 for line in lines for role in line["samples"]["role"])
    assert trainer.qtuning_summary["samples_trained"] == kept
    assert 0 < kept < 32
