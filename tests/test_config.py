import math
import re

import pytest

from qtuning import ConfigError, QTuningConfig
from qtuning.cli import build_parser


def test_defaults_are_the_papers():
    cfg = QTuningConfig()
    assert (cfg.sample_ratio, cfg.token_ratio, cfg.smoothing) == (0.25, 0.5, 0.5)
    assert (cfg.token_budget, cfg.prune_direction, cfg.entropy_positions) == ("per_sample", "high", "response")
    assert (cfg.bisection_max_iters, cfg.bisection_tolerance, cfg.bisection_upper) == (10, 0.01, 0.49)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("sample_ratio", 0.0, r"\(0, 1\]"),
        ("sample_ratio", 1.5, r"\(0, 1\]"),
        ("sample_ratio", math.nan, r"\(0, 1\]"),
        ("sample_ratio", "0.25", r"\(0, 1\]"),
        ("token_ratio", -0.1, r"\(0, 1\]"),
        ("smoothing", 1.01, r"\[0, 1\]"),
        ("token_budget", "global", "'per_sample', 'batch'"),
        ("prune_direction", "up", "'high', 'low'"),
        ("entropy_positions", "prompt", "'response', 'all'"),
        ("bisection_max_iters", 0, ">= 1"),
        ("bisection_tolerance", 0, "> 0"),
        ("bisection_upper", 0.6, r"\(0, 0.5\]"),
    ],
)
def test_bad_values_name_the_field_the_value_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        QTuningConfig(**{field: value})
    message = str(err.value)
    assert message.startswith(f"{field}={value!r} is not allowed"), message
    assert re.search(allowed, message), message


def test_edge_values_are_accepted():
    QTuningConfig(sample_ratio=1.0, token_ratio=1.0, smoothing=0.0)
    QTuningConfig(smoothing=1.0, bisection_upper=0.5)


def test_cli_help_comes_from_the_config_fields():
    parser = build_parser()
    plan = parser._subparsers._group_actions[0].choices["plan"]
    text = plan.format_help()
    for name in QTuningConfig.field_names():
        assert f"--{name.replace('_', '-')}" in text
    assert "Neighbour smoothing lambda" in text


def test_cli_rejects_a_bad_value_with_the_config_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        from qtuning.cli import main

        main(["plan", "--sample-ratio", "2"])
    assert exit_info.value.code == 2
    assert "sample_ratio=2.0 is not allowed" in capsys.readouterr().err
