"""cli.args: one argparse option per dataclass field, typed from the annotation (bool, X | None, Literal)."""

import argparse
from dataclasses import dataclass, field
from typing import Literal

import pytest

from qtuning.cli.args import add_dataclass_arguments, dataclass_from_args, parse_bool


@dataclass
class Example:
    """An example of every kind of field."""

    run_dir: str = field(default="", metadata={"help": "where", "positional": True})
    count: int = field(default=3, metadata={"help": "an int"})
    ratio: float = field(default=0.5, metadata={"help": "a float, 50% by default"})
    name: str = field(default="x", metadata={"help": "a string"})
    flag: bool = field(default=False, metadata={"help": "a bool"})
    on: bool = field(default=True, metadata={"help": "a bool that is true by default"})
    limit: int | None = field(default=None, metadata={"help": "an optional int"})
    fraction: float | None = field(default=0.25, metadata={"help": "an optional float"})
    mode: Literal["fast", "slow"] = field(default="fast", metadata={"help": "a literal"})
    engine: str = field(default="a", metadata={"help": "choices in the metadata", "choices": ("a", "b")})
    max_items: int = field(default=5, metadata={"help": "two words"})


def parse(argv):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_dataclass_arguments(parser, Example, {"name": ["-n"]})
    return dataclass_from_args(Example, parser.parse_args(argv))


def test_defaults_come_from_the_fields():
    assert parse(["dir"]) == Example(run_dir="dir")


def test_types_come_from_the_annotations():
    cfg = parse(
        [
            "dir",
            "--count",
            "7",
            "--ratio",
            "0.125",
            "-n",
            "y",
            "--limit",
            "12",
            "--fraction",
            "0.5",
            "--mode",
            "slow",
            "--engine",
            "b",
        ]
    )
    assert (cfg.count, cfg.ratio, cfg.name, cfg.limit, cfg.fraction, cfg.mode, cfg.engine) == (
        7,
        0.125,
        "y",
        12,
        0.5,
        "slow",
        "b",
    )
    assert isinstance(cfg.limit, int) and isinstance(cfg.fraction, float)


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("False", False),
        ("TRUE", True),
    ],
)
def test_bool_flags_parse_the_word_not_its_truthiness(text, value):
    assert parse(["dir", "--flag", text]).flag is value
    assert parse(["dir", "--on", text]).on is value
    assert parse_bool(text) is value


def test_a_bare_bool_flag_means_true():
    assert parse(["dir", "--flag"]).flag is True


def test_none_is_accepted_for_optional_fields():
    cfg = parse(["dir", "--limit", "none", "--fraction", "null"])
    assert cfg.limit is None and cfg.fraction is None


def test_bad_values_are_argparse_errors():
    for argv in (
        ["dir", "--flag", "maybe"],
        ["dir", "--count", "1.5"],
        ["dir", "--mode", "medium"],
        ["dir", "--engine", "c"],
        ["dir", "--limit", "many"],
    ):
        with pytest.raises((argparse.ArgumentError, SystemExit)):
            parse(argv)


def test_underscore_spelling_is_an_alias_and_help_shows_the_field_help():
    assert parse(["dir", "--max-items", "2"]).max_items == parse(["dir", "--max_items", "2"]).max_items == 2
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Example)
    text = parser.format_help()
    assert "--count" in text and "a float, 50% by default (default: 0.5)" in text and "RUN_DIR" in text


@dataclass
class Lists:
    """Lists."""

    names: list[str] = field(default_factory=lambda: ["a"], metadata={"help": "names"})
    sizes: list[int] = field(default_factory=list, metadata={"help": "sizes"})


def test_list_fields_take_zero_or_more_values():
    def parse_lists(argv):
        parser = argparse.ArgumentParser(exit_on_error=False)
        add_dataclass_arguments(parser, Lists)
        return dataclass_from_args(Lists, parser.parse_args(argv))

    assert parse_lists([]) == Lists(names=["a"], sizes=[])
    assert parse_lists(["--names", "x", "y", "--sizes", "1", "2"]) == Lists(names=["x", "y"], sizes=[1, 2])
    assert parse_lists(["--names"]) == Lists(names=[], sizes=[])  # the flag alone: none
    with pytest.raises(argparse.ArgumentError, match="invalid int value: 'x'"):
        parse_lists(["--sizes", "x"])
