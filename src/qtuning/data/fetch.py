"""`qtuning fetch`: fetch, check (sha256) and cache the built-in models and data sets, so that later runs
need no network."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError


@dataclass
class FetchConfig:
    """Settings of `qtuning fetch` (which built-in models and data sets to cache)."""

    models: list[str] = field(
        default_factory=lambda: ["smollm2-135m-instruct"],
        metadata={"help": "Models to fetch: built-in names or .gguf files (converted once); none: --models alone."},
    )
    datasets: list[str] = field(
        default_factory=lambda: ["alpaca-demo"],
        metadata={"help": "Built-in data sets to fetch; none: --datasets alone."},
    )


def run_fetch(cfg: FetchConfig) -> int:
    """Fetch and check everything `cfg` names, print where each went; returns the exit code.

    Raises:
        UsageError: a model that is neither built in nor a .gguf file (nothing to fetch).
    """
    from .assets import cache_root
    from .builtin import load_builtin_records
    from .models import BUILTIN_MODELS, resolve_model

    for name in cfg.models:  # what fetch can cache: a built-in model, or a .gguf file (converted once)
        if name.lower() not in BUILTIN_MODELS and not name.lower().endswith(".gguf"):
            raise UsageError(
                f"fetch: model {name!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}) nor a .gguf file; "
                "`qtuning fetch` caches only those (a local folder or a hub id needs no fetch)"
            )
    for name in cfg.models:
        print(f"[qtuning] model {name}: {resolve_model(name)}")
    for name in cfg.datasets:
        print(f"[qtuning] data  {name}: {len(load_builtin_records(name))} rows")
    print(f"[qtuning] cache: {cache_root()}")
    return 0
