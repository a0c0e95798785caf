"""The benchmark scripts still import: a module they name (a test runner, a moved qtuning module) that no
longer resolves fails here, not hours into a benchmark run. Each is imported under its own name, not as
__main__ (its folder first on sys.path, as `python PATH` has it), so nothing runs: the scripts run only
under `if __name__ == "__main__"`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("benchmarks/evidence/*.py")])

IMPORT_EACH = """
import importlib.util, os, sys
failed = []
for path in sys.argv[1:]:
    name = "bench_" + path.replace("/", "_").removesuffix(".py")
    sys.path.insert(0, os.path.abspath(os.path.dirname(path)))  # as `python PATH` would: its siblings import
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    except BaseException as exc:
        failed.append(f"{path}: {type(exc).__name__}: {exc}")
print("\\n".join(failed) or "ok")
sys.exit(1 if failed else 0)
"""


def test_every_benchmark_script_imports():
    assert len(SCRIPTS) >= 19, [p.name for p in SCRIPTS]
    paths = [str(p.relative_to(ROOT)) for p in SCRIPTS]
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, *paths], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
