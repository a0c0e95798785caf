"""tests/conftest.py's lists of slow modules and tests name modules and test functions that exist.

A renamed or moved test would otherwise drop out of the list silently and slow the fast loop down
(`pytest -m "not slow and not real_model"`); the full suite runs every test either way.
"""

import ast
from pathlib import Path

from tests.conftest import SLOW_MODULES, SLOW_TESTS

TESTS = Path(__file__).resolve().parent


def _test_functions(module: str) -> set[str]:
    tree = ast.parse((TESTS / f"{module}.py").read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_slow_module_exists():
    missing = [module for module in SLOW_MODULES if not (TESTS / f"{module}.py").is_file()]
    assert not missing, f"tests/conftest.py SLOW_MODULES names modules that do not exist: {missing}"


def test_every_slow_test_exists():
    missing = []
    for reason, names in SLOW_TESTS:
        assert reason and names, "each group in SLOW_TESTS has a reason and at least one test"
        for name in names:
            module, function = name.split("::")
            function = function.split("[", 1)[0]  # "name[id]": one parametrization
            if not (TESTS / f"{module}.py").is_file() or function not in _test_functions(module):
                missing.append(name)
    assert not missing, "tests/conftest.py SLOW_TESTS names tests that do not exist:\n" + "\n".join(missing)


def test_no_slow_test_is_listed_twice_or_inside_a_slow_module():
    names = [name for _, group in SLOW_TESTS for name in group]
    assert len(names) == len(set(names)), "a test is listed twice in SLOW_TESTS"
    inside = [name for name in names if name.split("::")[0] in SLOW_MODULES]
    assert not inside, f"already slow as a whole module: {inside}"
