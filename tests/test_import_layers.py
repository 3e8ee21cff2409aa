"""The subpackages of convscope import downward only.

The graph is built from the source with `ast` (absolute and relative imports,
those inside functions included), so it sees imports a test run would never
execute. Layers, bottom to top (docs/design.md draws them):

    store  <  config  <  data  <  nn  <  stats, render  <  extract, analysis
           <  explain, synthesis, dissect, preflight  <  report, results

Top-level modules (``logs``, ``__init__``) are helpers any layer may use.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "convscope"
GROUND = ("store", "config", "data")
LOWER = {"store": set(), "config": {"store"}, "data": {"store", "config"}}


def _subpackage(module: str) -> str | None:
    """``convscope.nn.models`` -> ``nn``; None outside convscope or for the package root."""
    parts = module.split(".")
    if parts[0] != "convscope" or len(parts) < 2:
        return None
    return parts[1]


def _imported_modules(tree: ast.AST, package: list[str]) -> list[str]:
    """Every module an import statement names (``from a import b`` gives ``a.b`` too)."""
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            modules.append(module)
            modules += [f"{module}.{alias.name}" for alias in node.names]
    return modules


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """``{importer: {imported: [file, ...]}}`` between subpackages (and top modules) of convscope."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        source = _subpackage(".".join(parts))
        if source is None or source == "__init__":
            continue
        for module in _imported_modules(ast.parse(path.read_text(), str(path)), package):
            target = _subpackage(module)
            if target is None or target == source or not (root / target).is_dir() \
                    and not (root / f"{target}.py").exists():
                continue
            graph[source][target].append(str(path.relative_to(root.parent)))
    return graph


def find_cycle(graph) -> list[str] | None:
    """One cycle of the graph as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, {})):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_graph_sees_relative_and_function_level_imports(tmp_path):
    package = tmp_path / "convscope"
    for sub in ("a", "b", "c"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "a" / "m.py").write_text("def f():\n    from ..b import x\n")
    (package / "b" / "m.py").write_text("from convscope.c.m import y\n")
    (package / "c" / "m.py").write_text("import convscope.a.m\n")
    graph = import_graph(package)
    assert {k: sorted(v) for k, v in graph.items()} == {"a": ["b"], "b": ["c"], "c": ["a"]}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_subpackages_form_a_dag():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"  {a} -> {b}: {', '.join(sorted(set(graph[a][b])))}"
                 for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle between subpackages of convscope: "
                             + " -> ".join(cycle) + "\n" + "\n".join(steps))


def test_ground_layers_import_no_higher_layer():
    graph = import_graph()
    upward = [f"{low} -> {high}: {', '.join(sorted(set(files)))}"
              for low in GROUND for high, files in graph.get(low, {}).items()
              if high not in LOWER[low] and high != "logs"]
    assert not upward, "ground layers import upward:\n" + "\n".join(upward)


#: subpackages beside each other at the explain/synthesis layer: what they may not import
ABOVE = {"dissect": {"report", "results", "synthesis", "preflight"}}


def test_explain_layer_imports_nothing_above_it():
    graph = import_graph()
    wrong = [f"{low} -> {high}" for low, banned in ABOVE.items()
             for high in graph.get(low, {}) if high in banned]
    assert not wrong, "imports above the explain/synthesis layer: " + ", ".join(wrong)
