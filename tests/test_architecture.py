"""The package's shape, read from its source: no import cycles, no private state of the engines
(Ray, Tune, Train, Optuna, MLflow), none of their on-disk formats parsed, nothing unpickled."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smsweep"
ENGINES = ("ray", "optuna", "mlflow")
# Files the engines write whose layout is theirs, not ours: reading them is parsing a private
# format (Tune's experiment and searcher state, its per-trial files, Train's checkpoint folders).
ENGINE_FILES = (
    "experiment_state",
    "searcher-state",
    "basic-variant-state",
    "tuner.pkl",
    "trainable.pkl",
    "progress.csv",
    "checkpoint_",
)
# (file, what) pairs that are ours or outside the engines, each with its reason.
ALLOWED = {
    # LocalSession (train_workers: 0) names its own checkpoint folders like Train's.
    ("session.py", "checkpoint_"),
    # segmentation-models-pytorch keeps an encoder's depth and output stride only here.
    ("models.py", "._depth"),
    ("models.py", "._output_stride"),
    # os._exit is a public function of the standard library.
    ("faults.py", "._exit"),
    ("signals.py", "._exit"),
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == (
        "TYPE_CHECKING"
    )


def imported(path: Path, known: dict[str, Path], *, typing_too: bool = False) -> set[str]:
    """The package's modules `path` imports at run time, at module level or inside functions
    (imports under `if TYPE_CHECKING:` never run; `typing_too` counts them as well)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not typing_too:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            strong(node)
    return found


def test_the_package_has_no_import_cycles():
    """Not even through imports made for type annotations only (`TYPE_CHECKING`): a module
    two others need goes below both."""
    known = modules()
    graph = {name: imported(path, known, typing_too=True) - {name} for name, path in known.items()}
    assert cycles(graph) == []


def external(path: Path) -> set[str]:
    """Top-level names of the packages outside smsweep that `path` imports at run time."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {"smsweep"}


def reached(start: str, graph: dict[str, set[str]]) -> set[str]:
    """`start` and every module of the package it imports, directly or not."""
    seen, todo = {start}, [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


# The core: the spec, the method in plain torch (data, masking, models, losses, the training
# steps, the pure scorer) and the trial's phases. The engines are adapters around it, handed in.
CORE = ("smsweep.spec", "smsweep.method", "smsweep.trial")
# The layers, lowest first: a module imports only its own layer and those below it. errors and
# faults (test seams) sit below all; the driver (cli, sweep, checks, summary) and the bench above.
LAYERS = ("spec", "method", "trial", "verdict", "engines", "report")
BASE = ("smsweep", "smsweep.errors", "smsweep.faults")


def core_modules(known: dict[str, Path]) -> list[str]:
    return sorted(n for n in known if any(n == c or n.startswith(c + ".") for c in CORE))


def test_the_core_imports_neither_ray_nor_mlflow():
    known = modules()
    graph = {name: imported(path, known) - {name} for name, path in known.items()}
    assert len(core_modules(known)) > 40  # the three packages hold the core's modules
    engines = {}
    for name in core_modules(known):
        for module in reached(name, graph):
            used = external(known[module]) & set(ENGINES)
            if used:
                engines[name] = (module, sorted(used))
    assert engines == {}


def test_the_engine_scan_sees_an_engine_reached_through_another_module(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    import b\n")
    b.write_text("from ray import tune\n")
    assert external(b) == {"ray"}
    assert reached("a", {"a": {"b"}, "b": set()}) == {"a", "b"}


MAX_FILE_LINES, MAX_CLASS_LINES = 400, 250


def test_files_and_classes_stay_small_enough_to_hold_in_mind():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        if len(source.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{where}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_long.append(f"{where}: class {node.name}, {lines} lines")
    assert too_long == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def engine_problems(path: Path, root: Path = PACKAGE) -> list[str]:
    """Private attributes, private engine modules, engine on-disk files and unpickling in `path`."""
    problems = []
    for node in ast.walk(ast.parse(path.read_text())):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = getattr(node.value, "id", None)
            if not node.attr.startswith("__") and owner not in ("self", "cls"):
                problems.append((path.name, f".{node.attr}", where))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names]
            engine = isinstance(node, ast.Import) or (node.module or "").split(".")[0] in ENGINES
            for name in names:
                parts = (name or "").split(".")
                if engine and any(part.startswith("_") for part in parts):
                    problems.append((path.name, name, where))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            problems += [(path.name, f, where) for f in ENGINE_FILES if f in node.value]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            module = getattr(node.func.value, "id", None)
            if module in ("pickle", "cloudpickle", "dill", "joblib") and "load" in node.func.attr:
                problems.append((path.name, f"{module}.{node.func.attr}", where))
    return [f"{where}: {what}" for name, what, where in problems if (name, what) not in ALLOWED]


@pytest.mark.parametrize("path", sorted(modules().values()), ids=lambda p: p.stem)
def test_no_private_engine_state_no_engine_files_no_unpickling(path):
    assert engine_problems(path) == []


def test_the_scan_sees_what_it_forbids(tmp_path):
    sample = tmp_path / "smsweep" / "sample.py"
    sample.parent.mkdir()
    sample.write_text(
        "import pickle\n"
        "import ray._private.state\n"
        "from optuna._imports import try_import\n"
        "tuner._local_tuner.get_experiment_checkpoint_dir()\n"
        "state = max(directory.glob('experiment_state-*.json'))\n"
        "pickle.load(open('searcher.pkl', 'rb'))\n"
    )
    found = {line.split(": ", 1)[1] for line in engine_problems(sample, sample.parent)}
    assert found == {
        "ray._private.state",
        "optuna._imports",
        "._local_tuner",
        "experiment_state",
        "pickle.load",
    }


def layer(module: str) -> int:
    """The module's layer (its index in LAYERS); -1 for the base, len(LAYERS) for the driver."""
    if module in BASE:
        return -1
    part = module.split(".")[1]
    return LAYERS.index(part) if part in LAYERS else len(LAYERS)


def test_each_layer_imports_only_the_layers_below_it():
    """`ls smsweep` shows how a sweep flows (spec, method, trial, verdict, engines, report, then
    the driver); counting type-only imports, no module reaches up."""
    known = modules()
    assert {path.parent.name for path in known.values()} >= {*LAYERS, "smsweep"}
    upward = []
    for name, path in sorted(known.items()):
        for other in imported(path, known, typing_too=True):
            if layer(other) > layer(name):
                upward.append(f"{name} -> {other}")
    assert upward == []


def test_the_layer_check_sees_an_upward_import():
    assert layer("smsweep.spec.config") < layer("smsweep.method.build") < layer("smsweep.sweep")
    assert layer("smsweep.errors") < layer("smsweep.spec.config")
