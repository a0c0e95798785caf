"""Every `qtuning` subcommand with bad arguments (issue 29, item 6): a missing file, a wrong type for a
numeric option, an unknown model, an unknown data set or task name, an unreadable path, an unwritable
output. Each: exit status 1 or 2, one error line, no traceback. The matrix: tests/cli_cases.py."""

import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cli_cases import KNOWN_FAILURES, NOT_APPLICABLE, build_workspace, matrix, run_cell, unreadable_status


def run_matrix(cells, w):
    """Outcomes of the cells, two at a time; unreadable cells run where mode 000 holds, or are reported."""
    prefix, note = unreadable_status(w)
    print(f"\nunreadable paths: {note}")
    if prefix is None:
        warnings.warn(f"unreadable cells not tested: {note}", stacklevel=2)
        cells = [c for c in cells if c.kind != "unreadable"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda c: run_cell(c, prefix if c.kind == "unreadable" else None), cells))


def report(outcomes) -> tuple[list[str], list[str]]:
    """(cells that broke the promise unexpectedly, listed failures that now keep it); prints the table."""
    for o in outcomes:
        state = "ok" if o.ok else ("known" if o.cell in KNOWN_FAILURES else "BROKEN")
        print(f"  {state:6} {o.cell:26} exit {o.returncode} {o.seconds:5.1f} s  {o.problem or o.error_line[:110]}")
    unexpected = [f"{o.cell}: {o.problem}" for o in outcomes if not o.ok and o.cell not in KNOWN_FAILURES]
    fixed = [o.cell for o in outcomes if o.ok and o.cell in KNOWN_FAILURES]
    return unexpected, fixed


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tests.helpers import make_tiny_model_dir

    tiny = make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
    return build_workspace(tmp_path_factory.mktemp("bad-arguments"), tiny)


def test_the_matrix_covers_every_command_and_kind(workspace):
    cells = matrix(workspace)  # matrix() asserts that every (command, kind) is a cell or not applicable
    assert len(cells) + len(NOT_APPLICABLE) == 54
    assert set(KNOWN_FAILURES) <= {c.name for c in cells}


def test_data_arguments_fail_in_one_line(workspace):
    """The cells whose bad argument reaches qtuning.data, before any model loads (fast)."""
    wanted = {"analyze-missing_file", "analyze-unreadable"}
    outcomes = run_matrix([c for c in matrix(workspace) if c.name in wanted], workspace)
    unexpected, _ = report(outcomes)
    assert not unexpected, "\n".join(unexpected)


@pytest.mark.slow
def test_every_command_with_bad_arguments(workspace):
    outcomes = run_matrix(matrix(workspace), workspace)
    unexpected, fixed = report(outcomes)
    kept = sum(o.ok for o in outcomes)
    print(f"{kept} of {len(outcomes)} cells kept the promise; {len(KNOWN_FAILURES)} known failures listed")
    assert not unexpected, "\n".join(unexpected)
    assert not fixed, f"these now keep the promise: remove them from KNOWN_FAILURES: {fixed}"
