"""The layering the code promises (docs/ARCHITECTURE.md), checked on the source: module-level
imports only go down the flow, there are no import cycles, and no source file is over 400 lines.

Imports inside functions are not counted: they run late (the CLI loads torch only when a command
needs it), so they can neither form an import-time cycle nor drag a layer in at import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("omni", "streaming")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str, path: Path, typing: bool = False) -> set[str]:
    """The project modules `module` imports at import time (`typing`: and under TYPE_CHECKING)."""
    found = set()
    nodes = []
    for node in ast.parse(path.read_text()).body:  # module level only
        is_typing = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
        nodes += node.body if is_typing and typing else [node]
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `from pkg import mod` or a name in a module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


@pytest.mark.parametrize(
    "low, high",
    [
        ("omni", "streaming"),  # the model knows nothing of the service
        ("streaming.session", "streaming.gateway"),  # only the gateway knows wire formats
        ("streaming.turn", "streaming.session"),
        ("streaming.turn", "streaming.gateway"),
        ("streaming.errors", "streaming.gateway"),  # the error taxonomy sits below every layer
        ("streaming.errors", "streaming.session"),
        ("streaming.chat", "streaming.gateway"),  # chat requests, like sessions, know no wire format
        ("streaming.chat", "streaming.session"),
        ("streaming.engines", "streaming.gateway"),  # the engine owners sit below both of their clients
        ("streaming.engines", "streaming.session"),
        ("streaming.engines", "streaming.chat"),
    ],
)
def test_imports_go_down_the_flow(low, high):
    wrong = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if _in(m, low) for d in deps if _in(d, high))
    assert not wrong, wrong


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_there_are_no_import_cycles():
    assert not _cycles(GRAPH), _cycles(GRAPH)


def test_the_model_is_building_blocks_without_cycles_even_through_type_imports():
    """omni/ (the model side, omni/model's blocks above all) has no cycle even counting the
    imports made only for type checking: each module can be read and reused on its own."""
    graph = {
        m: {d for d in _imports(m, p, typing=True) if _in(d, "omni")} for m, p in MODULES.items() if _in(m, "omni")
    }
    assert "omni.model.pool" in graph["omni.model.rows"]  # imports under TYPE_CHECKING are counted
    assert not _cycles(graph), _cycles(graph)


def test_the_graph_resolves_relative_imports():
    """The graph is real (a check on an empty graph would pass): relative imports resolve."""
    assert "streaming.gateway.events" in GRAPH["streaming.gateway.outbound"]
    assert "streaming.session.events" in GRAPH["streaming.gateway.outbound"]
    assert "streaming.errors" in GRAPH["streaming.session.conversation"]


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these (house style: a long file is a design signal): {long}"
