"""`qtuning COMMAND ...`: find the command in the registry, parse its flags (from its dataclasses, or by the
command itself), run it; a QTuningError becomes one line on stderr and its exit code, no traceback."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import QTuningError
from .args import add_dataclass_arguments, dataclass_from_args
from .registry import BY_NAME, COMMANDS, load

SHORT_FLAGS = {"output": ["-o"]}
DESCRIPTION = "Q-Tuning: fine-tune on the samples and tokens that teach, pruned at every step."


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, the flags of that command alone are added (so its
    dataclasses are the only ones imported; "": no command's flags)."""
    parser = argparse.ArgumentParser(prog="qtuning", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        help_text = command.help.replace("%", "%%")  # argparse %-formats help texts
        if command.parse == "argv":  # parses its own arguments, --help included
            sub.add_parser(command.name, help=help_text, add_help=False)
            continue
        child = sub.add_parser(command.name, help=help_text, description=help_text)
        if only in (None, command.name):
            for cls in command.config_classes():
                add_dataclass_arguments(child, cls, SHORT_FLAGS)
    return parser


def run_command(argv: list[str]) -> int:
    """Parse and run one command line (without the program name); returns the exit code."""
    command = BY_NAME.get(argv[0]) if argv else None
    if command is not None and command.extra:
        from ..extras import require_extra

        require_extra(command.extra, f"`qtuning {command.name}`")  # one line naming the pip command
    if command is not None and command.parse == "argv":
        code = load(command.run)(argv[1:])
    else:
        # the flags of the named command only: `qtuning --help` or a typo imports no config class
        args = build_parser(only=command.name if command else "").parse_args(argv)
        command = BY_NAME[args.command]
        code = load(command.run)(*(dataclass_from_args(cls, args) for cls in command.config_classes()))
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> int:
    """The `qtuning` program: runs `argv` (default: sys.argv[1:]); returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run_command(argv)
    except QTuningError as exc:  # the user's input: one line that names it, no traceback
        if not exc.same_on_every_rank or os.environ.get("RANK", "0") == "0":
            print(f"qtuning: error: {exc}", file=sys.stderr)
        if exc.exit_code == 2:  # a bad option or config value: exit as argparse does for its own errors
            raise SystemExit(2) from None
        return exc.exit_code


def exit_process(code: int) -> None:
    """Exit; after a torch.distributed run, without interpreter finalization: gloo's worker threads
    can deadlock it (pytorch/pytorch#75097 and related), leaving a finished run hanging forever."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    import atexit
    import os

    dist.destroy_process_group()
    atexit._run_exitfuncs()  # what a normal exit would run (loggers flushing, ...), while all is alive
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry_point() -> None:
    """The `qtuning` console script."""
    exit_process(main())
