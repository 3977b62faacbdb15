"""The house rules of the code, read from its source: imports point down the documented layers and
never form a circle; only the stages open MLflow runs; nothing below them knows MLflow exists.

Every import statement counts, inside functions too: an import deferred into a function is still
a dependency (it only hides a circle until that function runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first; a module may import its own layer and the ones below, never one above. The README's
# Layout section shows the same order.
LAYERS = (
    ("genlib", "genlib.paths", "genlib.registry", "genlib.io", "genlib.config", "genlib.figures", "genlib.tracking"),
    ("genlib.data", "genlib.models"),
    ("genlib.presets",),
    ("genlib.train", "genlib.evaluate"),
    ("genlib.runs", "genlib.report", "genlib.stages"),
    ("flows",),
    ("genlib.cli",),
)
STAGES_AND_UP = 4  # the first layer allowed to touch MLflow runs


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for d in ("genlib", "flows") for p in sorted((ROOT / d).rglob("*.py"))}


def _layer(module: str) -> int:
    best = None
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it where it belongs")
    return best[0]


def _imports(module: str) -> set[str]:
    """The genlib/flows modules ``module`` imports (a submodule when a name is one, else the package)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES}


GRAPH = {module: _imports(module) - {module} for module in MODULES}


def test_every_module_belongs_to_a_layer():
    assert {module: _layer(module) for module in MODULES}  # raises naming the module that has none


def test_no_import_points_up_the_layers():
    upward = sorted(f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
                    for m, deps in GRAPH.items() for d in deps if _layer(d) > _layer(m))
    assert upward == []


def test_no_import_circle():
    circles, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == "open":
                circles.append(" → ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert circles == []


def _below_stages() -> list[str]:
    return [m for m in MODULES if _layer(m) < STAGES_AND_UP and m != "genlib.tracking"]


@pytest.mark.parametrize("module", _below_stages())
def test_code_below_the_stages_does_not_know_mlflow(module):
    tree = ast.parse(MODULES[module].read_text())
    named = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in node.names}
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(n.split(".")[0] == "mlflow" for n in named | modules), f"{module} imports mlflow"
    assert "Tracker" not in named, f"{module} imports Tracker: record through a stage instead"


def test_only_the_stages_open_or_end_mlflow_runs():
    opening = {"start_run", "end_run", "set_terminated", "create_run"}
    found = []
    for module, path in MODULES.items():
        if module.startswith("genlib.stages") or module == "genlib.tracking":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = ast.unparse(node.func.value)
                if node.func.attr in opening or (node.func.attr == "run" and "tracker" in owner.lower()):
                    found.append(f"{module}:{node.lineno} {ast.unparse(node.func)}")
    assert found == []
