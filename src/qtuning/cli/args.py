"""Command-line options from a dataclass's fields: the one place that turns a field into an argparse flag.

    group = add_dataclass_arguments(parser, QTuningConfig)   # --sample-ratio (and --sample_ratio), ...
    cfg = dataclass_from_args(QTuningConfig, parser.parse_args())

Each field gives one option: its name (`--token-budget`, with `--token_budget` as an alias), its
type from the annotation, its default, and its `metadata["help"]` as the help text. Types:
- int, float, str: parsed as such;
- bool: `--flag true|false|1|0|yes|no`, or `--flag` alone for true;
- `X | None`: X, or `none` / `null` for None (a None default stays None);
- `Literal["a", "b"]`, or `metadata["choices"]`: one of those values;
- `list[X]`: zero or more values after the flag (`--models a b`; the flag alone: an empty list).
A field with `metadata["positional"]` is a positional argument. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off")
_NONE = ("none", "null")


def parse_bool(text: str) -> bool:
    """'true'/'false', '1'/'0', 'yes'/'no' (any case) -> bool; anything else is an argparse error."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, 1/0, yes/no), got {text!r}")


def _optional(parse):
    """A parser that also accepts 'none' / 'null' for None."""

    def parse_or_none(text: str):
        return None if str(text).strip().lower() in _NONE else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in its errors
    return parse_or_none


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help texts


def list_item_type(cls, f: dataclasses.Field) -> type | None:
    """X for a field annotated `list[X]`, else None."""
    annotation = typing.get_type_hints(cls).get(f.name, f.type)
    if typing.get_origin(annotation) is list:
        return (typing.get_args(annotation) or (str,))[0]
    return None


def field_type(cls, f: dataclasses.Field) -> tuple[type | None, bool, tuple | None]:
    """(base type, None allowed, choices) of a dataclass field, from its (possibly string) annotation."""
    hints = typing.get_type_hints(cls)
    annotation = hints.get(f.name, f.type)
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else str
        origin = typing.get_origin(annotation)
    choices = f.metadata.get("choices")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        annotation = type(choices[0])
    return annotation, optional, tuple(choices) if choices is not None else None


def field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, short_flags: dict[str, list[str]] | None = None):
    """One option per field of `cls`, in an argument group titled by the class; returns the group.

    short_flags: extra flags per field name, e.g. {"output": ["-o"]}.
    """
    group = parser.add_argument_group(f"{cls.__name__} ({cls.__doc__.strip().splitlines()[0]})")
    short_flags = short_flags or {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        base, optional, choices = field_type(cls, f)
        default = field_default(f)
        help_text = f.metadata.get("help", "")
        if f.metadata.get("positional"):
            group.add_argument(f.name, metavar=f.name.upper(), help=_escape(help_text))
            continue
        kwargs: dict = {"dest": f.name, "default": default, "help": _escape(f"{help_text} (default: {default!r})")}
        if (item := list_item_type(cls, f)) is not None:
            kwargs.update(type=item, nargs="*")
        elif base is bool:
            kwargs.update(type=parse_bool, nargs="?", const=True, metavar="{true,false}")
        elif base in (int, float, str):
            kwargs["type"] = base
        if optional and "type" in kwargs:
            kwargs["type"] = _optional(kwargs["type"])
        if choices is not None:
            kwargs["choices"] = list(choices) + ([None] if optional else [])
        flags = [*short_flags.get(f.name, []), f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            flags.append(f"--{f.name}")
        group.add_argument(*flags, **kwargs)
    return group


def dataclass_from_args(cls, args: argparse.Namespace):
    """An instance of `cls` from the parsed options (its __post_init__ checks the values)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init})
