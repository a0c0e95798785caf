"""scoring="stale": the score cache follows rows by id, across padding widths and epochs."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from qtuning import QTuningConfig
from qtuning.data.plan_log import read_plan_log
from qtuning.engine.scoring import IGNORE_INDEX, shift_labels, shift_mask
from qtuning.errors import ConfigError
from qtuning.training.sft_config import QTuningSFTConfig
from qtuning.training.stale import ScoreCache, rows_to_probe
from qtuning.training.trainer import ID_KEY, PLAN_KEY
from tests.helpers import tiny_dataset
from tests.test_trainer import first_batch, make_trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import stale_agreement  # noqa: E402


def test_cache_places_a_rows_scores_in_any_padding_width():
    cache = ScoreCache()
    positions = torch.tensor([[True, True, True, False], [True, True, False, False]])  # (2, 4)
    nll = torch.tensor([[0.5, 1.0, 1.5, 9.0], [2.0, 2.5, 9.0, 9.0]])
    entropy = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, 0.5, 9.0, 9.0]])
    cache.put([7, 3], nll, entropy, positions, step=5)
    # later: row 3 first, row 7 second, a wider batch, and an unknown row 11
    later = torch.tensor([[True, True, False, False, False], [True, True, True, False, False], [True] * 5])
    got_nll, got_entropy, have = cache.lookup([3, 7, 11], later)
    assert have.tolist() == [True, True, False]
    assert got_nll[0].tolist() == [2.0, 2.5, 0.0, 0.0, 0.0]
    assert got_nll[1].tolist() == [0.5, 1.0, 1.5, 0.0, 0.0]
    assert got_entropy[1, :3].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert got_nll[2].abs().sum() == 0  # nothing invented for an unscored row
    assert cache.age([7, 11], step=9) == [4, None]


def test_a_row_whose_position_count_changed_counts_as_unscored():
    cache = ScoreCache()
    cache.put([1], torch.ones(1, 3), torch.ones(1, 3), torch.tensor([[True, True, True]]), step=1)
    _, _, have = cache.lookup([1], torch.tensor([[True, True, False]]))  # e.g. truncated differently now
    assert not have.any()


def test_state_round_trip_is_exact():
    cache = ScoreCache()
    cache.put([4, 2], torch.rand(2, 5), torch.rand(2, 5), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool(), 3)
    again = ScoreCache.from_state_dict(cache.state_dict())
    probe = torch.ones(2, 5, dtype=torch.bool)
    probe[0, 3:] = False
    for a, b in zip(cache.lookup([4, 2], probe), again.lookup([4, 2], probe)):
        assert torch.equal(a, b)
    assert again.age([4, 2], 3) == [0, 0]


def test_rows_to_probe_takes_every_unscored_row_and_the_fraction_of_the_others():
    have = torch.tensor([True, True, False, True, True, True, False, True, True])  # 7 cached
    for fraction, extra in [(0.0, 0), (0.25, 2), (0.5, 4), (1.0, 7)]:  # round(7 x fraction)
        probe = rows_to_probe(have, fraction, torch.Generator().manual_seed(0))
        assert probe[~have].all()
        assert int(probe[have].sum()) == extra
    a = rows_to_probe(have, 0.5, torch.Generator().manual_seed(1))
    b = rows_to_probe(have, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # seeded: the same rows on every rank and on resume


def test_config_checks_the_fraction_and_refuses_rho1(tmp_path):
    with pytest.raises(ConfigError, match="stale_reprobe_fraction=1.5"):
        QTuningSFTConfig(output_dir=str(tmp_path), report_to=[], scoring="stale", stale_reprobe_fraction=1.5)
    with pytest.raises(ConfigError, match="rho1"):
        QTuningSFTConfig(output_dir=str(tmp_path), report_to=[], scoring="stale", token_pruner="rho1")


def _plans_by_step(out):
    by_step = {}
    for line in read_plan_log(out / "qtuning_plans.jsonl"):
        by_step[line["step"]] = line
    return by_step


@pytest.mark.parametrize("reprobe", [0.0, 0.5])
def test_first_epoch_plans_equal_probe_mode_then_scores_follow_the_rows(tmp_path, reprobe):
    """Epoch 1 (steps 1-4 of 32 rows): the same plans as probe mode. Epoch 2: each row is selected
    with the scores it got in epoch 1 (probe or training forward) or, if re-probed (reprobe 0.5: 4
    of 8 rows, probed as a trimmed sub-batch), fresh ones; with learning rate 0 all of these score
    the same weights in fp32, so every row's PPL and Ent are those logged in epoch 1. Reprobe 0:
    no probe at all in epoch 2."""
    common = dict(max_steps=8, learning_rate=0.0, logging_steps=4)  # lr 0: fresh scores would equal stale ones too
    probe = make_trainer(tmp_path / "probe", **common)
    probe.train()
    stale = make_trainer(tmp_path / "stale", scoring="stale", stale_reprobe_fraction=reprobe, **common)
    stale.train()
    a, b = _plans_by_step(tmp_path / "probe" / "out"), _plans_by_step(tmp_path / "stale" / "out")
    for step in range(1, 5):
        assert a[step]["samples"] == b[step]["samples"]

    def rows(step):  # row id -> (ppl, entropy) at that step
        samples = b[step]["samples"]
        return {i: (p, e) for i, p, e in zip(samples["id"], samples["ppl"], samples["entropy"])}

    first = {k: v for step in range(1, 5) for k, v in rows(step).items()}
    assert len(first) == 32
    second = {k: v for step in range(5, 9) for k, v in rows(step).items()}
    assert sorted(second) == sorted(first)
    for row_id, scores in second.items():
        assert scores == pytest.approx(first[row_id], rel=1e-5, abs=1e-5)
    summary_probe = json.loads((tmp_path / "probe" / "out" / "qtuning_summary.json").read_text())
    summary = json.loads((tmp_path / "stale" / "out" / "qtuning_summary.json").read_text())
    assert summary["samples_selected_with_stale_scores"] == 32 * (1 - reprobe)  # of epoch 2's 32
    if reprobe == 0.0:
        assert summary["positions_probed"] == pytest.approx(summary_probe["positions_probed"] / 2)
    else:
        assert summary_probe["positions_probed"] / 2 < summary["positions_probed"] < summary_probe["positions_probed"]


def test_kept_rows_are_rescored_from_their_training_forward(tmp_path):
    trainer = make_trainer(tmp_path, scoring="stale", dataset=tiny_dataset(16))
    trainer.model.train()
    batch = first_batch(trainer)
    batches, num_items = trainer.get_batch_samples(iter([batch]), 1, trainer.args.device)
    probed = trainer._qt_cache
    ids = batches[0][ID_KEY].tolist()
    plan = batches[0][PLAN_KEY]
    kept_ids = [ids[i] for i in plan.sample_keep.nonzero().flatten().tolist()]
    trainer._qt_cache = ScoreCache()  # forget the probe: what is cached next comes from the training forward
    trainer.training_step(trainer.model, batches[0], num_items)
    assert sorted(trainer._qt_cache.state_dict()["ids"].tolist()) == sorted(kept_ids)
    grid = shift_mask(batch["attention_mask"]) | (shift_labels(batch["labels"]) != IGNORE_INDEX)
    fresh_nll, fresh_entropy, _ = probed.lookup(ids, grid)
    again_nll, again_entropy, have = trainer._qt_cache.lookup(ids, grid)
    rows = have.nonzero().flatten()
    assert len(rows) == len(kept_ids) > 0
    # the same weights (the optimizer has not stepped), fp32 both: the probe's values
    assert torch.allclose(again_nll[rows], fresh_nll[rows], atol=1e-5)
    assert torch.allclose(again_entropy[rows], fresh_entropy[rows], atol=1e-5)


# ------------------------------------------------------------- benchmarks/stale_agreement.py replay


def _two_epoch_plans(change_scores: bool, drift_per_pool: float = 0.0) -> list[dict]:
    """Plan records of a 2-epoch run, 4 pools of 16 rows per epoch (ids 0-63, reshuffled), the fresh
    kept set logged as Q-Tuning selects it from the logged scores. drift_per_pool: every score falls
    by this much per pool (log PPL and entropy alike), as a model that learns evenly would move them."""
    g = torch.Generator().manual_seed(0)
    scores = {e: (torch.rand(64, generator=g) * 50 + 1, torch.rand(64, generator=g) + 1) for e in (1, 2)}
    if not change_scores:
        scores[2] = scores[1]
    plans, step = [], 0
    for epoch in (1, 2):
        order = torch.randperm(64, generator=g).tolist()
        for start in range(0, 64, 16):
            ids = order[start : start + 16]
            fall = drift_per_pool * step
            ppl = scores[epoch][0][ids].double() * math.exp(-fall)
            entropy = scores[epoch][1][ids].double() - fall
            kept = stale_agreement.kept_ids(ids, ppl, entropy, torch.ones(16, dtype=torch.bool), QTuningConfig())
            step += 1
            plans.append(
                {
                    "step": step,
                    "samples": {
                        "id": ids,
                        "ppl": ppl.tolist(),
                        "entropy": entropy.tolist(),
                        "trainable_tokens": [5] * 16,
                        "role": [2 if i in kept else 0 for i in ids],
                    },
                }
            )
    return plans


def test_replay_agrees_fully_when_scores_do_not_move_or_every_row_is_reprobed():

    cfg = QTuningConfig()
    same = stale_agreement.replay(_two_epoch_plans(change_scores=False), cfg, fraction=0.0)
    assert same["fresh_recomputed_matches_log"] == 1.0
    assert same["pools_with_cached_rows"] == 4 and same["stale_row_share"] == 1.0
    assert same["jaccard"] == 1.0 and same["jaccard_by_epoch"] == {"2": 1.0}
    moved = _two_epoch_plans(change_scores=True)
    stale = stale_agreement.replay(moved, cfg, fraction=0.0)
    assert stale["jaccard"] < 0.9  # independent scores in epoch 2: the stale selection is another one
    assert stale_agreement.replay(moved, cfg, fraction=1.0)["jaccard"] == 1.0  # every row probed afresh
    half = stale_agreement.replay(moved, cfg, fraction=0.5)
    assert half["stale_row_share"] == 0.5
    one_epoch = stale_agreement.replay(moved[:4], cfg, fraction=0.0)
    assert one_epoch["jaccard"] is None and one_epoch["pools_with_cached_rows"] == 0


def test_drift_correction_is_exact_when_scores_fall_evenly_and_movement_is_measured():
    cfg = QTuningConfig()
    plans = _two_epoch_plans(change_scores=False, drift_per_pool=0.1)
    assert stale_agreement.replay(plans, cfg, fraction=0.5, drift=True)["jaccard"] == 1.0
    assert stale_agreement.replay(plans, cfg, fraction=0.5, drift=False)["jaccard"] < 1.0  # old and new mixed
    still = stale_agreement.score_movement(_two_epoch_plans(change_scores=False))
    assert still["repeated_draws"] == 64
    assert still["spearman_log_ppl"] == pytest.approx(1.0) and still["median_log_ppl_change"] == pytest.approx(0.0)
    assert stale_agreement.score_movement(plans)["median_log_ppl_change"] < 0
