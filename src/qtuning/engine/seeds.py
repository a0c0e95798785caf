"""Derived random seeds: one function for every seed qtuning computes from another. Pure Python.

    seed = derive_seed(args.seed, global_step, "step")

The baselines' random draws (sample_pruner="random", "infobatch"; token_pruner="random") must be
the same on every rank and new at every step, in every pool and for every stage; the procedural
data sets draw each row from its own stream. Each level mixes a seed with an index by one formula,
`seed * SCALES[level][0] + index * SCALES[level][1]`:

    level     scales            used by                                    mixes
    "step"    (100_003, 1)      trainer: the step's seed                   run seed, optimizer step
    "pool"    (1, 7_919)        distributed: a selection pool of the step  step seed, pool number (1-based)
    "stream"  (1_000_003, 1)    selection: stage 1 (0), stage 2 (1, 2+i);  pool seed, stream
                                procedural_data: one stream per row        set seed, row index
    "reprobe" (1, 6_007)        trainer, scoring="stale": which cached     step seed, micro-batch (1-based)
                                rows of a micro-batch are probed afresh

The scales are primes, so nearby seeds and indices do not collide in practice. They are the ones
qtuning has always used, and must stay: changing them changes every random baseline's draws, and
with them the recorded results.
"""

from __future__ import annotations

SCALES = {"step": (100_003, 1), "pool": (1, 7_919), "stream": (1_000_003, 1), "reprobe": (1, 6_007)}


def derive_seed(seed: int, index: int, level: str) -> int:
    """The seed of `index` under `seed` at `level`: seed * SCALES[level][0] + index * SCALES[level][1].

    Args:
        seed: The seed mixed in (the run's, the step's, the pool's, ...).
        index: The index mixed in (step, pool, stream, row, micro-batch).
        level: "step", "pool", "stream" or "reprobe" (the module docstring's table).

    Returns:
        An int, never negative for non-negative inputs.
    """
    seed_scale, index_scale = SCALES[level]
    return seed * seed_scale + index * index_scale
