"""The package's imports flow one way: no module of vpr imports, directly or through others, one that imports it.

Every import statement counts, at module level or inside a function (a deferred import hides a cycle, it does
not remove it). The graph is read from the source with ast, so the test sees what the files say, not what
happens to be imported already.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vpr"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The vpr modules ``path`` imports: ``import a.b``, ``from a import b`` (b a module or a name in a)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_reader_sees_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_vpr():
    modules = all_modules()
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    assert sum(len(v) for v in graph.values()) > 30, "the reader found too few imports: is it reading them?"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_scripts_stay_short():
    for script in ("train.py", "eval.py", "cluster.py", "retrieve.py"):
        lines = (ROOT / script).read_text().splitlines()
        assert len(lines) <= 20, f"{script} has {len(lines)} lines: its work belongs in vpr/run/"
