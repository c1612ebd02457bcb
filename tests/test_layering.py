"""The package's import layers, read from the source with ``ast`` (nothing is imported).

Two rules:

1. No import cycle among the package's modules. Module-level imports (including those inside a
   module-level ``try``/``if``) run when the module is imported, so a cycle among them is a real
   import-order hazard: this is the strict check. Function-level imports run later, at call time,
   and cannot break an import; but a cycle through them still means that two layers call each
   other (e.g. a registry that imports the plugins that register into it), so the second check
   counts every import, function-level ones included, and must find no cycle either.
2. The command line sits on top: no module outside ``discrete_rae.cli`` / ``discrete_rae.commands``
   (and the ``__main__`` entry point) imports either of them, at any level.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "discrete_rae"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
TOP = ("discrete_rae.cli", "discrete_rae.commands", "discrete_rae.__main__")
# Known loops through function-level imports, each with its reason; the module-level check has none.
KNOWN_FUNCTION_LEVEL_CYCLES: list[list[str]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.AST, current: str, is_package: bool, modules: set[str]) -> set[str]:
    """Package modules that an import statement loads (parent packages included)."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(node, current, is_package)
        subs = {f"{base}.{alias.name}" for alias in node.names}
        # ``from pkg import sub`` loads pkg.sub; pkg itself counts only for names defined in it
        names = subs | ({base} if subs - modules else set())
    # Only the named modules count, not the parent packages that Python runs first: those are
    # empty or documentation-only, except the root, whose one import (the user API) is lazy.
    return {n for n in names if n in modules and n != current}


def import_graph(function_level: bool) -> dict[str, set[str]]:
    """module -> package modules it imports (module level only, or every import)."""
    modules = all_modules()
    names = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        stack: list[ast.AST] = list(tree.body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(node, name, is_package, names)
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not function_level:
                continue
            stack.extend(ast.iter_child_nodes(node))
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_top(name: str) -> bool:
    return any(name == t or name.startswith(t + ".") for t in TOP)


def test_the_graph_sees_the_package() -> None:
    graph = import_graph(function_level=True)
    assert "discrete_rae.pipeline" in graph and "discrete_rae.cli" in graph
    assert "discrete_rae.registry" in graph["discrete_rae.pipeline"] | graph["discrete_rae.catalog"]


def test_cycle_detection_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_level_import_cycle() -> None:
    assert cycles(import_graph(function_level=False)) == []


def test_no_import_cycle_even_through_function_level_imports() -> None:
    assert [c for c in cycles(import_graph(function_level=True)) if c not in KNOWN_FUNCTION_LEVEL_CYCLES] == []


def test_nothing_below_the_command_line_imports_it() -> None:
    graph = import_graph(function_level=True)
    offenders = sorted(f"{src} -> {dst}" for src, dsts in graph.items() if not _is_top(src)
                       for dst in dsts if _is_top(dst))
    assert offenders == []


def test_registry_and_errors_are_leaves() -> None:
    graph = import_graph(function_level=True)
    assert graph["discrete_rae.errors"] == set()
    assert graph["discrete_rae.registry"] <= {"discrete_rae", "discrete_rae.errors"}


def test_library_use_loads_no_command_line() -> None:
    """At run time too (imports by name included): the library and every plugin load without
    the command line."""
    import subprocess
    import sys

    code = ("import sys; from discrete_rae import api, pipeline; from discrete_rae.catalog import load_all; "
            "load_all(); import discrete_rae.compare, discrete_rae.image_table, discrete_rae.optimize, "
            "discrete_rae.interpolate; "
            "bad = sorted(m for m in sys.modules if m == 'discrete_rae.cli' or m.startswith('discrete_rae.commands')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
