"""The optional dependencies: which extra a feature needs, and the one-line error when it is missing.

`pip install qtuning` installs the core (torch, numpy: the engine, `plan_batch`, `QTuner`); each
feature that needs more says so before it imports anything:

    require_extra("trl", "`qtuning train`")   # MissingExtraError: ... pip install "qtuning[trl]"

The import-time form, for a module whose first lines import a package of an extra:

    try:
        from trl import SFTConfig
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "trl", "QTuningSFTConfig") from None
"""

from __future__ import annotations

import importlib.util

from .errors import MissingExtraError

# extra -> the top-level modules it installs that qtuning imports (pyproject.toml lists the packages)
EXTRA_MODULES = {
    "trl": ("transformers", "trl", "peft", "accelerate", "datasets"),
    "eval": ("transformers", "peft", "lm_eval"),
    "insight": ("pandas", "pyarrow", "matplotlib"),
    "mixin": ("transformers", "accelerate"),  # what QTuningTrainerMixin needs; the extras axolotl, llamafactory
    "llamafactory": ("llamafactory", "omegaconf"),  # the framework itself: installed first, at its own pins
}
# the extra a user is told to install, when it is not the key itself
INSTALL_HINT = {
    "llamafactory": 'llamafactory==0.9.5 (LLaMA-Factory, at its own pins), then "qtuning[llamafactory]"',
    "mixin": '"qtuning[trl]" (or your framework\'s: "qtuning[axolotl]", "qtuning[llamafactory]")',
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a half-removed package
        return False


def _error(extra: str, feature: str, missing: list[str]) -> MissingExtraError:
    install = INSTALL_HINT.get(extra, f'"qtuning[{extra}]"')
    return MissingExtraError(f"{feature} needs {', '.join(missing)} (not installed): pip install {install}")


def require_extra(extra: str, feature: str) -> None:
    """Raise MissingExtraError, naming the pip command, if a module of `extra` is not installed."""
    missing = [m for m in EXTRA_MODULES[extra] if not _installed(m)]
    if missing:
        raise _error(extra, feature, missing)


def missing_extra(exc: ModuleNotFoundError, extra: str, feature: str) -> ImportError:
    """What to raise for `exc`: a MissingExtraError when the missing module is one `extra` installs,
    else `exc` itself (a module missing inside an installed package is a broken install, not an extra)."""
    top = (exc.name or "").split(".")[0]
    return _error(extra, feature, [top]) if top in EXTRA_MODULES[extra] else exc
