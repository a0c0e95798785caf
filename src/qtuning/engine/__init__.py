"""The engine: Q-Tuning's selection as pure computation (docs/algorithm.md), torch only.

No model library is imported here, not even inside a function (tests/test_layering.py). The modules:

- `config`: `QTuningConfig`, the engine's settings and their checks; `training_config`:
  `QTuningTrainingConfig` (the engine's fields + how Q-Tuning runs inside a trainer; no trl);
- `scoring`: per-token NLL and entropy, per-sample PPL and Ent;
- `thresholds`: the bisection's quantile lines (`Thresholds`, the one declaration of the threshold
  scalars); `history`: the same lines from a window of recent samples;
- `types`: `Role`, `SampleSelection`, `SelectionPlan`, `ScoredBatch`; `scored`: raw scores -> a checked
  `ScoredBatch` (`prepare_scores`), batches -> one pool (`concat_scored`);
- `selection`: stage 1 (corners, supplement) and stage 2 (token pruning) -> a plan;
- `policies`: the baselines; `signatures`: failure signatures; `seeds`: derived random seeds.
"""
