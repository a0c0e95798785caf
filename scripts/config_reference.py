"""Generate the field tables of docs/configuration.md from the config dataclasses.

    .venv/bin/python scripts/config_reference.py           # rewrite the tables in docs/configuration.md
    .venv/bin/python scripts/config_reference.py --check   # exit 1 if the file is stale

The tables (name, type, default, help) sit between the markers `<!-- config:start -->` and
`<!-- config:end -->`; the prose around them is written by hand and left alone. One table per
dataclass: `QTuningConfig` (the engine), the fields declared in `QTuningTrainingConfig`'s own class
body (how Q-Tuning runs inside a trainer), those declared in `QTuningSFTConfig`'s own class body (not
TRL's inherited ones, not QTuningTrainingConfig's), and `RunConfig` where it exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
START = "<!-- config:start -->"
END = "<!-- config:end -->"
# RunConfig moves out of QTuningSFTConfig; look for it where it may live.
RUN_CONFIG_MODULES = ("qtuning.run_config", "qtuning.training.sft_config", "qtuning.training.run")


def _import_qtuning() -> None:
    """Make `import qtuning` work from a checkout without an installed package."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


def run_config_class():
    """RunConfig, or None before it exists."""
    for name in RUN_CONFIG_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = getattr(module, "RunConfig", None)
        if cls is not None and dataclasses.is_dataclass(cls):
            return cls
    return None


def sections() -> list[tuple[str, str, list[dataclasses.Field]]]:
    """(title, note, fields) per table, in the order they appear in the document."""
    _import_qtuning()
    from qtuning.engine.config import QTuningConfig
    from qtuning.engine.training_config import QTuningTrainingConfig
    from qtuning.training.sft_config import QTuningSFTConfig

    out = [
        (
            "`QTuningConfig`: the engine (`qtuning.engine.config`)",
            "The selection's own settings. `QTuningSFTConfig` inherits all of them; `QTuner`, "
            "`plan_batch`, `qtuning plan`, `analyze` and `select` take them too.",
            list(dataclasses.fields(QTuningConfig)),
        )
    ]
    out.append(
        (
            "`QTuningTrainingConfig`: how Q-Tuning runs inside a trainer (`qtuning.engine.training_config`)",
            "The fields `QTuningTrainingConfig` adds to `QTuningConfig`; `QTuningSFTConfig` inherits them, and "
            "`QTuningTrainerMixin` reads them (from `args`, or from `qtuning_config=`).",
            _own_fields(QTuningTrainingConfig),
        )
    )
    out.append(
        (
            "`QTuningSFTConfig`: the trainer (`qtuning.training.sft_config`)",
            "The fields declared by `QTuningSFTConfig` itself, on top of TRL's `SFTConfig` and "
            "`QTuningTrainingConfig`: TRL defaults changed for small-model and CPU runs.",
            _own_fields(QTuningSFTConfig),
        )
    )
    run_config = run_config_class()
    if run_config is not None:
        out.append(
            (
                f"`RunConfig`: what `qtuning train` adds (`{run_config.__module__}`)",
                "Read by `qtuning train` only (model, data, held-out split, LoRA); `QTuningSFTTrainer` never "
                "reads them.",
                list(dataclasses.fields(run_config)),
            )
        )
    return out


def _own_fields(cls) -> list[dataclasses.Field]:
    """The fields declared in `cls`'s own class body, in their order there."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    return [by_name[name] for name in inspect.get_annotations(cls) if name in by_name]


def _declared_annotation(f: dataclasses.Field) -> object:
    """The field's annotation as its class declares it. `Field.type` is not used: argument parsers
    (transformers' HfArgumentParser among them) overwrite it in place, e.g. `str | None` -> `str`."""
    _import_qtuning()
    from qtuning.engine.config import QTuningConfig
    from qtuning.training.sft_config import QTuningSFTConfig

    classes = [QTuningSFTConfig, QTuningConfig]
    if run_config_class() is not None:
        classes.insert(0, run_config_class())
    for cls in classes:
        for klass in cls.__mro__:
            annotations = inspect.get_annotations(klass)
            if f.name in annotations:
                return annotations[f.name]
    return f.type


def _type_name(f: dataclasses.Field) -> str:
    kind = _declared_annotation(f)
    if isinstance(kind, str):
        return kind
    return getattr(kind, "__name__", repr(kind)).replace("typing.", "")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "required"


def _cell(text: str, code: bool = False) -> str:
    """One table cell on one line; `|` escaped, and outside code spans `<`/`>` too (not HTML tags)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if code else text.replace("<", "&lt;").replace(">", "&gt;")


def render() -> str:
    """The generated block, markers included."""
    lines = [START, "<!-- generated by scripts/config_reference.py from the dataclasses; do not edit by hand -->"]
    for title, note, fields in sections():
        lines += ["", f"### {title}", "", note, "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for f in fields:
            lines.append(
                f"| `{f.name}` | `{_cell(_type_name(f), code=True)}` | `{_cell(_default(f), code=True)}` "
                f"| {_cell(f.metadata.get('help', ''))} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def updated(text: str) -> str:
    """`text` with its generated block replaced by a fresh one."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOC}: the markers {START} and {END} are missing or out of order")
    return text[:start] + render() + text[end + len(END) :]


def is_stale(path: Path = DOC) -> bool:
    """True if the generated block of `path` differs from what the dataclasses give now."""
    text = path.read_text(encoding="utf-8")
    return updated(text) != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale, write nothing")
    parser.add_argument("--path", type=Path, default=DOC, help="the Markdown file holding the markers")
    args = parser.parse_args(argv)
    if args.check:
        if is_stale(args.path):
            print(f"{args.path} is stale: run `python scripts/config_reference.py`", file=sys.stderr)
            return 1
        print(f"{args.path} is up to date")
        return 0
    text = args.path.read_text(encoding="utf-8")
    new = updated(text)
    if new != text:
        args.path.write_text(new, encoding="utf-8")
        print(f"rewrote the field tables of {args.path}")
    else:
        print(f"{args.path} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
