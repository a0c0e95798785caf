"""benchmarks/replicate.py's data: a held-out split no training row overlaps, and the noise it injects."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import replicate  # noqa: E402


def _rows(path):
    return [json.loads(line) for line in open(path)]


def test_split_is_disjoint_and_the_noise_is_a_derangement(tmp_path, monkeypatch):
    monkeypatch.setattr(replicate, "WORK", tmp_path)
    paths = replicate.prepare_data()
    train, noisy, held_out = (_rows(paths[k]) for k in ("train", "train_noisy", "eval"))
    assert len(train) == replicate.TRAIN_SIZE and len(held_out) == replicate.EVAL_SIZE
    norm = replicate._norm_question
    assert not {norm(r["prompt"]) for r in train} & {norm(r["prompt"]) for r in held_out}
    assert len({norm(r["prompt"]) for r in train}) == len(train)  # no question twice in training
    assert [r["id"] for r in noisy] == [r["id"] for r in train]
    swapped = [i for i, (a, b) in enumerate(zip(train, noisy)) if a["completion"] != b["completion"]]
    meta = json.loads((tmp_path / "data_meta.json").read_text())
    assert meta["swapped_rows"] == int(replicate.NOISE_FRACTION * replicate.TRAIN_SIZE)
    # every corrupted row carries another training row's answer, and the corrupted set is what meta lists
    answers = {r["completion"] for r in train}
    assert all(noisy[i]["completion"] in answers for i in swapped)
    assert {train[i]["id"] for i in swapped} == set(meta["corrupted_ids"])
    assert meta["truly_corrupted_rows"] == len(swapped) >= 0.9 * meta["swapped_rows"]
    # deterministic: a second call reads the same files
    assert replicate.prepare_data() == paths and _rows(paths["train"]) == train
