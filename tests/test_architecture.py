"""The import graph of our packages has no cycles and every arrow points down the layers.

The graph is built from the source (AST), not by importing: every ``import`` / ``from … import`` of one of
our modules is an edge, including imports inside functions (lazy imports still tie the two modules
together), except those under ``if TYPE_CHECKING:`` (they never run).

Layers, top to bottom (an arrow may stay within a layer or point down, never up):

5. ``sam3agent`` itself: the package's ``__init__``, the public facade that re-exports the API.
4. surfaces: ``sam3agent.app`` (CLI, servers, chat-tool embedding, doctor, self-test) and the old
   import paths kept for compatibility (``sam3agent.cli``, ``sam3agent.embed``, ``sam3agent.serve``),
   which re-export from it.
3. ``evals``: datasets, scoring and the resumable runner.
2. the agent core: every other ``sam3agent`` module, the trajectory viewer among them (``AgentResult.save``
   and eval runs write its pages, as they write overlay PNGs).
1. ``sam3agent.llm``: the LLM backends.
0. ``sam3core``: the SAM 3 engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sam3core", "sam3agent", "evals")

# Old module paths that only re-export from sam3agent.app (documented entry points and imports).
COMPAT_PATHS = {"sam3agent.cli", "sam3agent.embed", "sam3agent.serve"}

LAYER_NAMES = {0: "sam3core", 1: "llm", 2: "agent core", 3: "evals", 4: "surfaces", 5: "facade"}


def layer(module: str) -> int:
    """The layer number of one of our modules (see the module docstring)."""
    if module == "sam3agent":
        return 5
    if module.startswith("sam3agent.app") or module in COMPAT_PATHS or module.startswith("sam3agent.app.serve."):
        return 4
    if module.split(".")[0] == "evals":
        return 3
    if module == "sam3agent.llm" or module.startswith("sam3agent.llm."):
        return 1
    if module.split(".")[0] == "sam3core":
        return 0
    return 2


def _module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, lazy ones included, skipping ``if TYPE_CHECKING:`` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]) -> set[str]:
    """Our modules one import statement names (``from a import b`` names ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = importer.split(".") if is_package else importer.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    found = set()
    for name in names:
        while name and name not in modules:  # ``import a.b.c`` of a package path: the deepest of ours
            name = name.rpartition(".")[0]
        if name and name != importer:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (see the module docstring for what counts)."""
    files = _module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(node, module, path.name == "__init__.py", set(files))
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from sam3agent.agent import Agent\n"
        "def f():\n    from sam3agent.render import render_overlay\n    import sam3core.image\n"
        "from . import tools\n"
    )
    tree = ast.parse(source)
    modules = {"sam3agent.agent", "sam3agent.render", "sam3core.image", "sam3core", "sam3agent.tools"}
    found = set()
    for node in _imports(tree):
        found |= _targets(node, "sam3agent.example", False, modules)
    assert found == {"sam3agent.render", "sam3core.image", "sam3agent.tools"}


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], f"import cycles (lazy imports included): {cycles}"


def test_arrows_point_down_the_layers() -> None:
    upward = sorted(
        f"{module} ({LAYER_NAMES[layer(module)]}) -> {target} ({LAYER_NAMES[layer(target)]})"
        for module, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(module)
    )
    assert upward == [], "imports that point up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_400_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}, f"modules over 400 lines: {long}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_60_lines(package: str) -> None:
    long = {
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > 60
    }
    assert long == {}, f"functions over 60 lines: {long}"


def test_light_imports() -> None:
    """``import sam3agent`` / ``import sam3core`` load neither torch, transformers nor the server stack."""
    code = ("import sys, sam3agent, sam3core; "
            "print(sorted(m for m in ('torch', 'transformers', 'starlette', 'mcp', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
