"""The layering rules, enforced: no import cycle among qtuning's modules, a pure engine, a light `import qtuning`.

The import graph is read from the source (ast), so a function-local import counts like a
top-level one: a cycle hidden inside a function is still a cycle.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qtuning"
HEAVY = ("transformers", "trl", "datasets", "peft")
# the pure engine: importable with torch (and numpy) alone
ENGINE = (
    "config",
    "scoring",
    "selection",
    "policies",
    "bootstrap",
    "comparison",
    "procedural_data",
    "errors",
    "cli_args",
    "training_config",
    "row_ids",
    "run_metrics",
    "extras",
    "files",
    "notices",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its source), by dotted name under qtuning."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(dotted: str) -> str:
        """The longest known module prefix of a dotted name under qtuning ('' for the package itself)."""
        parts = dotted.split(".") if dotted else []
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or "__init__"

    graph = {}
    for name, path in modules.items():
        package = list(path.relative_to(PACKAGE).parent.parts)  # what `from .` means here, under qtuning
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "qtuning" or alias.name.startswith("qtuning."):
                        edges.add(resolve(alias.name.removeprefix("qtuning").lstrip(".")))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                elif node.module and (node.module == "qtuning" or node.module.startswith("qtuning.")):
                    target = node.module.removeprefix("qtuning").lstrip(".")
                else:
                    continue
                for alias in node.names:  # `from . import x` imports the module x
                    sub = f"{target}.{alias.name}" if target else alias.name
                    edges.add(resolve(sub) if sub in modules else resolve(target))
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_every_kind_of_import():
    graph = import_graph()
    assert "kept_batch" in graph["trainer_mixin"]  # from .kept_batch import ...
    assert "plots" in graph["commands"]  # `from . import plots`, inside a function
    assert "run" in graph["cli"]  # a function-local `from .run import run_training`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_in_the_package_imports_qtuner():
    """qtuner.py is the helper for custom loops; the core lives in kept_batch and selection."""
    importers = sorted(name for name, edges in import_graph().items() if "qtuner" in edges and name != "__init__")
    assert importers == []


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_the_engine_imports_no_model_library():
    loaded = _modules_after("import " + ", ".join(f"qtuning.{m}" for m in ENGINE))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_trainer_mixin_imports_transformers_but_no_trl():
    """QTuningTrainerMixin goes on other frameworks' Trainers, where trl may be absent or too old."""
    loaded = _modules_after("import qtuning.trainer_mixin")
    assert "transformers" in loaded and "trl" not in loaded, sorted(loaded & set(HEAVY))


def test_import_qtuning_is_light():
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import qtuning, sys; "
            "assert 'trl' not in sys.modules and 'transformers' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('trl', 'transformers'))",
        ],
        check=True,
        timeout=120,
    )


def test_the_three_ways_in_import_from_the_package():
    import qtuning
    from qtuning import QTuner, QTuningConfig, QTuningSFTConfig, QTuningSFTTrainer, plan_batch
    from qtuning.qtuner import QTuner as direct
    from qtuning.trainer import QTuningSFTTrainer as trainer

    assert QTuner is direct and QTuningSFTTrainer is trainer and callable(plan_batch)
    assert QTuningSFTConfig.__name__ == "QTuningSFTConfig" and QTuningConfig.__name__ == "QTuningConfig"
    for name in qtuning.__all__:
        assert getattr(qtuning, name) is not None, name
    assert set(qtuning.__all__) <= set(dir(qtuning))
