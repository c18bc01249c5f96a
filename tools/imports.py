"""The package's import graph (every import, also inside functions), from the source by `ast`.

    python tools/imports.py [lib]   -> prints import cycles and imports of other modules' private names
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(root: Path) -> dict[str, list[tuple[str, list[str], int]]]:
    """{module: [(imported module, names taken from it, line)]} for imports inside the package."""
    out: dict[str, list[tuple[str, list[str], int]]] = {}
    mods = {module_name(root, p): p for p in root.rglob("*.py")}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = out.setdefault(mod, [])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [a.name for a in node.names]
                # `from . import x` where x is a module: an edge to the module itself
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
                for s in subs:
                    edges.append((s, [], node.lineno))
                rest = [n for n in names if f"{target}.{n}" not in mods]
                if target in mods and (rest or not subs):
                    edges.append((target, rest, node.lineno))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods:
                        edges.append((a.name, [], node.lineno))
    return out


def cycles(graph: dict[str, list[tuple[str, list[str], int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, _, _ in graph.get(v, []):
            if w == v or w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def private_imports(graph) -> list[str]:
    """`from .x import _y` of another module's private name (a package's own __init__ may)."""
    return [f"{m}: {t}.{n} (line {line})" for m, edges in sorted(graph.items()) for t, names, line in edges
            for n in names if n.startswith("_") and not n.startswith("__") and t != m]


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "lib")
    g = imports(root)
    for c in cycles(g):
        print("cycle:", " <-> ".join(c))
    for p in private_imports(g):
        print("private:", p)
