"""qtuning.engine.seeds: derived seeds keep the values every earlier run used."""

import pytest

from qtuning.engine.seeds import SCALES, derive_seed


@pytest.mark.parametrize("seed, index", [(0, 0), (0, 5), (42, 17), (20261202, 4000)])
def test_derived_seeds_keep_their_historic_values(seed, index):
    # The baselines' random draws and the procedural data depend on these exact values.
    assert derive_seed(seed, index, "step") == seed * 100_003 + index  # the trainer's step seed
    assert derive_seed(seed, index, "pool") == seed + 7919 * index  # a pool of the step (distributed)
    assert derive_seed(seed, index, "stream") == seed * 1_000_003 + index  # a generator stream (selection)
    assert derive_seed(seed, index, "reprobe") == seed + 6007 * index  # scoring="stale": rows probed afresh
    assert set(SCALES) == {"step", "pool", "stream", "reprobe"}
