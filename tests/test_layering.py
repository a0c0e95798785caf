"""The layering rules, enforced: no import cycle among qtuning's modules, imports that point down the
folders' ranks, a pure engine, a light `import qtuning`.

The import graph is read from the source (ast), so a function-local import counts like a
top-level one: a cycle hidden inside a function is still a cycle, and an upward import inside a
function is still upward.

The folders and their ranks (GROUPS; docs/notes/restructure-plan.md section 2.1): a module may import
modules of its own folder and of folders of a lower rank; folders of the same rank are siblings that
never import each other. The package root (rank 0) holds the modules every layer uses. Modules that
still sit flat in the package root are placed by FUTURE (module -> the folder it moves to); an entry
leaves FUTURE when its module moves.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "qtuning"
HEAVY = ("transformers", "trl", "datasets", "peft")
# the pure engine: importable with torch (and numpy) alone
ENGINE = (
    "engine.config",
    "engine.scoring",
    "engine.selection",
    "engine.types",
    "engine.thresholds",
    "engine.history",
    "engine.policies",
    "engine.training_config",
    "engine.signatures",
    "engine.seeds",
    "evaluation.bootstrap",
    "evaluation.compare",
    "data.procedural",
    "errors",
    "cli.args",
    "data.row_ids",
    "training.run_metrics",
    "extras",
    "files",
    "notices",
)


# folder -> rank ("" is the package root)
GROUPS = {
    "": 0,
    "engine": 1,
    "modeling": 2,
    "data": 2,
    "training": 3,
    "evaluation": 3,
    "insight": 3,
    "integrations": 4,
    "cli": 5,
}
# the modules that stay in the package root (stdlib and each other only)
ROOT = ("errors", "extras", "files", "notices")
# a flat module today -> the folder it moves to
FUTURE: dict[str, str] = {}
# upward edges known today, each removed by the step of the restructuring that fixes it
KNOWN_UPWARD: set[tuple[str, str]] = set()
# modules over MAX_LINES, each split by its step of the restructuring
MAX_LINES = 500
KNOWN_LONG: tuple[str, ...] = ()
MODEL_LIBRARIES = ("transformers", "trl", "datasets", "peft", "accelerate", "deepspeed")


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


def group_of(module: str) -> str:
    """The folder a module belongs to: its first dotted part, or FUTURE's entry for a flat module."""
    head = module.split(".")[0]
    if "." in module or head in GROUPS:
        return head
    if module in ROOT:
        return ""
    if module in FUTURE:
        return FUTURE[module]
    raise KeyError(f"{module}: in no folder; place it in ROOT or FUTURE (tests/test_layering.py)")


def wrong_imports(graph: dict[str, set[str]], allowed=frozenset()) -> list[str]:
    """Every edge that does not point down ('a -> b (engine -> training)'), except those in `allowed`;
    importing the facade `qtuning/__init__` from inside the package counts as wrong too."""
    wrong = []
    for source, targets in sorted(graph.items()):
        if source == "__init__":
            continue  # the facade imports what it exports
        for target in sorted(targets):
            if (source, target) in allowed:
                continue
            if target == "__init__":
                wrong.append(f"{source} -> the facade qtuning/__init__")
                continue
            a, b = group_of(source), group_of(target)
            if a != b and GROUPS[b] >= GROUPS[a]:
                wrong.append(f"{source} -> {target} ({a or 'root'} -> {b or 'root'})")
    return wrong


def _module_level_imports(tree: ast.Module) -> set[str]:
    """The top-level package names imported when the module is imported (not inside a function)."""
    found = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
        todo.extend(ast.iter_child_nodes(node))
    return found


def _all_imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def _trees() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), filename=str(p)) for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_folder():
    """A flat module is in ROOT or FUTURE; FUTURE names only modules that still sit flat (it empties as
    they move), and its folders are GROUPS'."""
    flat = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert sorted(flat - set(ROOT) - set(FUTURE)) == []
    assert sorted(set(FUTURE) - flat) == [], "moved: remove them from FUTURE"
    assert set(FUTURE.values()) <= set(GROUPS) and not set(ROOT) & set(FUTURE)


def test_every_import_points_down():
    """Function-level imports count; siblings of the same rank never import each other."""
    assert wrong_imports(import_graph(), KNOWN_UPWARD) == []
    graph = import_graph()
    assert all(target in graph[source] for source, target in KNOWN_UPWARD), "fixed: remove it from KNOWN_UPWARD"


def test_an_upward_import_is_caught():
    graph = {name: set(edges) for name, edges in import_graph().items()}
    added = {
        (
            "engine.selection",
            "training.trainer_mixin",
        ): "engine.selection -> training.trainer_mixin (engine -> training)",
        ("modeling.probe", "data"): "modeling.probe -> data (modeling -> data)",  # siblings
        ("insight.analyze", "training.run"): "insight.analyze -> training.run (insight -> training)",
        ("evaluation", "insight.run_report"): "evaluation -> insight.run_report (evaluation -> insight)",
        ("files", "engine.config"): "files -> engine.config (root -> engine)",
        ("integrations.axolotl", "cli"): "integrations.axolotl -> cli (integrations -> cli)",
        ("modeling.kept_batch", "__init__"): "modeling.kept_batch -> the facade qtuning/__init__",
        ("engine.types", "training.run_metrics"): "engine.types -> training.run_metrics (engine -> training)",
    }
    for source, target in added:
        graph.setdefault(source, set()).add(target)
    graph["engine.config"].add("errors")  # down: allowed
    assert wrong_imports(graph, KNOWN_UPWARD) == sorted(added.values())
    graph["insight.run_report"].add("training.run_metrics")  # the edge that run_files.py removed (insight -> training)
    assert "insight.run_report -> training.run_metrics (insight -> training)" in wrong_imports(
        graph, {("insight.analyze", "training.run")}
    )


def test_no_module_imports_the_facade():
    importers = sorted(name for name, edges in import_graph().items() if "__init__" in edges and name != "__init__")
    assert importers == []


def test_only_training_imports_trl_at_module_level():
    importers = sorted(name for name, tree in _trees().items() if "trl" in _module_level_imports(tree))
    assert importers and all(group_of(name) == "training" for name in importers), importers


def test_the_engine_names_no_model_library_even_in_functions():
    offenders = {
        name: sorted(_all_imports(tree) & set(MODEL_LIBRARIES))
        for name, tree in _trees().items()
        if name != "__init__" and group_of(name) == "engine"
    }
    assert {name: libs for name, libs in offenders.items() if libs} == {}


def test_no_module_over_the_line_limit():
    lines = {module_name(path): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    long = sorted(name for name, n in lines.items() if n > MAX_LINES)
    assert sorted(set(long) - set(KNOWN_LONG)) == []
    assert sorted(set(KNOWN_LONG) - set(long)) == [], f"split or shortened: remove them from KNOWN_LONG ({lines})"


def test_the_graph_reader_sees_every_kind_of_import():
    graph = import_graph()
    assert "modeling.kept_batch" in graph["training.trainer_mixin"]  # from .modeling.kept_batch import ...
    assert "insight.plots" in graph["cli.commands"]  # `from ..insight import plots`, inside a function
    assert "training.run" in graph["cli.train"]  # a function-local `from ..training.run import run_training`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_in_the_package_imports_qtuner():
    """qtuner.py is the helper for custom loops; the core lives in kept_batch and selection."""
    importers = sorted(
        name for name, edges in import_graph().items() if "modeling.qtuner" in edges and name != "__init__"
    )
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
    loaded = _modules_after("import qtuning.training.trainer_mixin")
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
    from qtuning.modeling.qtuner import QTuner as direct
    from qtuning.training.trainer import QTuningSFTTrainer as trainer

    assert QTuner is direct and QTuningSFTTrainer is trainer and callable(plan_batch)
    assert QTuningSFTConfig.__name__ == "QTuningSFTConfig" and QTuningConfig.__name__ == "QTuningConfig"
    for name in qtuning.__all__:
        assert getattr(qtuning, name) is not None, name
    assert set(qtuning.__all__) <= set(dir(qtuning))


def test_moved_modules_keep_their_old_paths():
    """A module that moved into a folder stays importable by its old path, as the same module object
    (`import qtuning.scoring`, `from qtuning.config import ...`); its old file is gone. The old paths
    of light modules only: a heavy one would load transformers on this test's import."""
    import importlib

    import qtuning

    assert qtuning._MOVED
    light = {old: new for old, new in qtuning._MOVED.items() if new.startswith("engine.")}
    light.update(probe="modeling.probe", run_files="data.run_files", procedural_data="data.procedural")
    for old, new in light.items():
        module = importlib.import_module(f"qtuning.{new}")
        assert importlib.import_module(f"qtuning.{old}") is module is getattr(qtuning, old), old
    for old in qtuning._MOVED:
        assert not (PACKAGE / f"{old}.py").exists(), old
        assert (PACKAGE / (qtuning._MOVED[old].replace(".", "/") + ".py")).exists(), old
    from qtuning.config import QTuningConfig
    from qtuning.selection import SelectionPlan

    assert QTuningConfig is qtuning.QTuningConfig and SelectionPlan is qtuning.SelectionPlan
