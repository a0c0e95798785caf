"""Q-Tuning in Axolotl: a plugin that puts QTuningTrainerMixin on the trainer Axolotl builds.

In an Axolotl config (written for Axolotl 0.19.0):

    plugins:
      - qtuning.integrations.axolotl.QTuningPlugin
    qtuning_sample_ratio: 0.25
    qtuning_token_ratio: 0.5

Every QTuningTrainingConfig field is a key `qtuning_<field>` (unset: the field's default). What
Axolotl does with them, and what this plugin adds (docs/integrations-notes.md has the line numbers):
- `get_input_args` names a pydantic model that Axolotl merges into its config schema, so the keys are
  type-checked by Axolotl. Axolotl ignores keys that no model declares (pydantic's default), so a
  misspelt `qtuning_*` key, or a QTuning field written without its prefix, would be dropped silently:
  `register` (which sees the YAML as written, before Axolotl validates it) refuses both, and checks the
  values by building the QTuningTrainingConfig, before any data or model is loaded.
- `get_trainer_cls` returns QTuningTrainerMixin on the class Axolotl would otherwise use (AxolotlTrainer,
  or `trainer_cls:`), with the settings passed as `qtuning_config=` (Axolotl's builder does not know
  that keyword). Axolotl uses the first plugin that returns a trainer class: `post_trainer_create`
  refuses a trainer without the mixin (another plugin's class won).
- Options that cannot work with per-sample selection are refused at start-up with one line naming the
  option to turn off (`incompatible_option`): fused or chunked cross-entropy that never builds the
  logits (liger_fused_linear_cross_entropy, cut_cross_entropy, chunked_cross_entropy), losses that
  replace the trainer's (use_eaft, orpo_alpha), the KD and RL trainers, reward models, sample packing and
  batch flattening (several samples in one row; Q-Tuning keeps or drops whole samples), context
  parallelism (a sample split across ranks), streamed pre-training data.

Caveat (Axolotl's, not ours): when this module cannot be imported, Axolotl logs "Failed to load plugin"
and trains WITHOUT it; its YAML keys are then dropped. Look for "Plugin loaded successfully:
qtuning.integrations.axolotl.QTuningPlugin" and "[qtuning] Axolotl trainer" in the log.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping

from ..engine.training_config import QTuningTrainingConfig
from ..errors import ConfigError

try:
    from axolotl.integrations.base import BasePlugin
except ModuleNotFoundError:  # the checks below work (and are tested) without Axolotl installed
    BasePlugin = object

try:
    from pydantic import ValidationError, create_model
except ModuleNotFoundError as exc:  # Axolotl depends on pydantic; qtuning does not
    raise ModuleNotFoundError(f"qtuning.integrations.axolotl needs pydantic (Axolotl installs it): {exc}") from None

PREFIX = "qtuning_"
PLUGIN = "qtuning.integrations.axolotl.QTuningPlugin"
CCE_PLUGIN = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"
FIELDS = tuple(f.name for f in dataclasses.fields(QTuningTrainingConfig))


def _args_model():
    hints = typing.get_type_hints(QTuningTrainingConfig)
    return create_model(
        "QTuningArgs",
        __doc__="Q-Tuning's Axolotl keys: qtuning_<field> for every QTuningTrainingConfig field (None: its default).",
        __module__=__name__,
        **{PREFIX + name: (hints[name] | None, None) for name in FIELDS},
    )


QTuningArgs = _args_model()


def _turn_off(key: str, value, why: str, instead: str | None = None) -> str:
    fix = instead or f"set {key}: false"
    return f"{key}: {value} cannot be combined with Q-Tuning ({PLUGIN}): {why}; {fix}, or remove the plugin"


def incompatible_option(cfg: Mapping) -> str | None:
    """The one-line refusal for the first option in `cfg` that cannot work with Q-Tuning, else None.

    Works on the YAML as written (in `register`) and on Axolotl's validated config (in get_trainer_cls),
    where defaults are filled in (cut_cross_entropy is on by default once its plugin is listed)."""
    get = cfg.get
    plugins = list(get("plugins") or [])
    no_logits = "it computes the loss without building the logits that Q-Tuning scores per token"
    if get("rl"):
        return _turn_off("rl", get("rl"), "Q-Tuning selects samples for supervised fine-tuning", "remove rl")
    if get("kd_trainer"):
        return _turn_off("kd_trainer", get("kd_trainer"), "the knowledge-distillation trainer computes its own loss")
    for key in ("reward_model", "process_reward_model"):
        if get(key):
            return _turn_off(key, get(key), "a reward model trains on scores, not next tokens")
    if get("liger_fused_linear_cross_entropy"):
        return _turn_off("liger_fused_linear_cross_entropy", True, no_logits)
    if get("cut_cross_entropy") or (CCE_PLUGIN in plugins and get("cut_cross_entropy") is not False):
        return _turn_off("cut_cross_entropy", True, no_logits, f"set cut_cross_entropy: false (or remove {CCE_PLUGIN})")
    if get("chunked_cross_entropy"):
        return _turn_off("chunked_cross_entropy", True, no_logits)
    if get("use_eaft"):
        return _turn_off("use_eaft", True, "EAFT replaces the trainer's loss (compute_loss_func)")
    if get("orpo_alpha"):
        return _turn_off("orpo_alpha", get("orpo_alpha"), "ORPO computes its own loss", "remove orpo_alpha")
    packed = "several samples share one row, and Q-Tuning scores, keeps and drops whole samples"
    for key in ("sample_packing", "eval_sample_packing"):
        if get(key):
            return _turn_off(key, True, packed)
    if get("batch_flattening") is True:
        return _turn_off("batch_flattening", True, packed)
    if get("pretraining_dataset"):
        return _turn_off(
            "pretraining_dataset", "(set)", "streamed pre-training rows are packed", "use datasets: instead"
        )
    for key in ("context_parallel_size", "sequence_parallel_degree"):
        if (get(key) or 1) > 1:
            return _turn_off(key, get(key), "each sample is split across ranks", f"set {key}: 1")
    if get("model_config_type") == "mamba":
        return _turn_off("model_config_type", "mamba", "Axolotl's Mamba trainer has its own loss", "use a transformer")
    return None


def unknown_key(cfg: Mapping, axolotl_keys: typing.Collection[str] = ()) -> str | None:
    """The one-line refusal for a misspelt qtuning_* key, or a Q-Tuning field written without its prefix
    (one that is not also an Axolotl key), else None."""
    known = set(QTuningArgs.model_fields)
    for key in cfg:
        if key.startswith(PREFIX) and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = (
                f" (did you mean {close[0]}?)" if close else f" (the keys are {PREFIX}<field> for: {', '.join(FIELDS)})"
            )
            return f"unknown Q-Tuning key {key}{hint}"
        if key in FIELDS and key not in axolotl_keys:
            return f"{key} is not an Axolotl key: Q-Tuning's keys carry a prefix, write {PREFIX}{key}"
    return None


def settings_from_cfg(cfg: Mapping) -> QTuningTrainingConfig:
    """The QTuningTrainingConfig that the qtuning_* keys of `cfg` describe (unset keys: defaults).
    Raises ConfigError, one line, for a value of the wrong type or one QTuningTrainingConfig refuses."""
    given = {PREFIX + name: cfg.get(PREFIX + name) for name in FIELDS if cfg.get(PREFIX + name) is not None}
    try:
        typed = QTuningArgs.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{key}: {first['msg']} (got {first.get('input')!r})") from None
    values = {name: getattr(typed, PREFIX + name) for name in FIELDS if getattr(typed, PREFIX + name) is not None}
    try:
        return QTuningTrainingConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (Axolotl key: {PREFIX}<field>)") from None


def check_config(cfg: Mapping, axolotl_keys: typing.Collection[str] = ()) -> QTuningTrainingConfig:
    """Every start-up check on an Axolotl config; the settings when it passes, else ConfigError (one line)."""
    message = unknown_key(cfg, axolotl_keys) or incompatible_option(cfg)
    if message:
        raise ConfigError(message)
    return settings_from_cfg(cfg)


def trainer_class(base: type, settings: QTuningTrainingConfig) -> type:
    """QTuningTrainerMixin on `base` (Axolotl's trainer), constructed with qtuning_config=settings unless given one."""
    from .glue import mixin_trainer

    return mixin_trainer(base, settings, "axolotl", f"QTuning{base.__name__}")


def _axolotl_keys() -> set[str]:
    from axolotl.utils.schemas.config import AxolotlInputConfig

    return set(AxolotlInputConfig.model_fields)


class QTuningPlugin(BasePlugin):
    """Axolotl plugin: `plugins: [qtuning.integrations.axolotl.QTuningPlugin]` and qtuning_* keys."""

    def get_input_args(self) -> str:
        return f"{__name__}.QTuningArgs"

    def register(self, cfg) -> None:
        # The YAML as written, before Axolotl validates (and silently drops unknown keys): refuse here.
        check_config(cfg, _axolotl_keys())

    def get_trainer_cls(self, cfg):
        settings = check_config(cfg, _axolotl_keys())  # again on the validated config (defaults filled in)
        from axolotl.integrations.base import PluginManager

        for name, plugin in PluginManager.get_instance().plugins.items():
            if plugin is self or name not in (cfg.get("plugins") or []):
                continue
            if plugin.get_trainer_cls(cfg) is not None:
                raise ConfigError(
                    f"plugin {name} supplies its own trainer class, which Q-Tuning ({PLUGIN}) cannot wrap: "
                    "remove one of the two plugins"
                )
        if cfg.get("trainer_cls"):
            from axolotl.utils.import_helper import get_cls_from_module_str

            base = get_cls_from_module_str(cfg["trainer_cls"])
        else:
            from axolotl.core.trainers.base import AxolotlTrainer

            base = AxolotlTrainer
        return trainer_class(base, settings)

    def post_trainer_create(self, cfg, trainer) -> None:
        from ..training.trainer_mixin import QTuningTrainerMixin

        if not isinstance(trainer, QTuningTrainerMixin):
            raise ConfigError(
                f"Axolotl built a {type(trainer).__name__}, without Q-Tuning: a plugin listed before {PLUGIN} "
                "supplied the trainer class; remove it, or list the Q-Tuning plugin first"
            )
        settings = trainer.qt_settings
        print(
            f"[qtuning] Axolotl trainer: {type(trainer).__name__} (QTuningTrainerMixin on {trainer.qtuning_base.__name__}); "
            f"pruning_method={settings.pruning_method} scoring={settings.scoring} "
            f"sample_ratio={settings.sample_ratio} token_ratio={settings.token_ratio}",
            flush=True,
        )
