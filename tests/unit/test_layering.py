"""The package's layering, read from the source with `ast` (fast, no imports run).

Each stage package's __init__ docstring states what it may import ("May import: ..."); the
package docstring names the foundation modules. Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "lib" / "cnibench"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODS = _modules()


def _imports() -> dict[str, list[tuple[str, list[str], int]]]:
    """{module: [(imported module, names taken from it, line)]}, modules named under cnibench."""
    out = {}
    for mod, path in MODS.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = out.setdefault(mod, [])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".") if pkg else []
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif node.module == "cnibench" or (node.module or "").startswith("cnibench."):
                    target = node.module[len("cnibench"):].lstrip(".")
                else:
                    continue
                names = [a.name for a in node.names]
                subs = [n for n in names if (f"{target}.{n}" if target else n) in MODS]
                for n in subs:
                    edges.append((f"{target}.{n}" if target else n, [], node.lineno))
                rest = [n for n in names if n not in subs]
                if rest or not subs:
                    edges.append((target, rest, node.lineno))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("cnibench."):
                        edges.append((a.name[len("cnibench."):], [], node.lineno))
    return out


GRAPH = _imports()


def _doc(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


FOUNDATION = set(re.search(r"^Foundation modules: (.+)$", _doc(PKG / "__init__.py"), re.M).group(1).replace(" ", "").split(","))
STAGES = sorted(p.parent.name for p in PKG.glob("*/__init__.py"))


def _allowed(stage: str) -> set[str]:
    m = re.search(r"^May import: (.+)$", _doc(PKG / stage / "__init__.py"), re.M)
    assert m, f"cnibench/{stage}/__init__.py: the docstring must say 'May import: ...'"
    return set(m.group(1).replace(" ", "").split(","))


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_every_stage_says_what_it_does_and_may_import():
    for stage in STAGES:
        doc = _doc(PKG / stage / "__init__.py")
        assert len(doc.splitlines()) >= 2, f"{stage}: say what the stage does"
        unknown = _allowed(stage) - FOUNDATION - set(STAGES)
        assert not unknown, f"{stage}: 'May import' names unknown packages {unknown}"
    for sub in PKG.glob("*/*/__init__.py"):
        assert _doc(sub), f"{sub.relative_to(PKG)}: a docstring saying what the package does"


def test_top_level_holds_only_stages_foundation_and_the_pipeline():
    loose = {m for m in MODS if "." not in m and m and m not in STAGES} - FOUNDATION - {"pipeline"}
    assert not loose, f"modules outside a stage: {sorted(loose)} (place them in a stage package)"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_what_its_docstring_allows(stage):
    allowed = _allowed(stage) | {stage}
    bad = [f"{m}:{line} imports cnibench.{t}" for m, edges in GRAPH.items() if _top(m) == stage
           for t, _, line in edges if _top(t) not in allowed]
    assert not bad, f"{stage} may import {sorted(allowed - {stage})}:\n" + "\n".join(bad)


def test_foundation_modules_import_only_each_other():
    bad = [f"{m}:{line} imports cnibench.{t}" for m in FOUNDATION for t, _, line in GRAPH.get(m, [])
           if _top(t) not in FOUNDATION]
    assert not bad, "\n".join(bad)


def test_mode_kinds_do_not_import_each_other():
    registry = {t for t, _, _ in GRAPH["modes.registry"] if t.startswith("modes.kinds.")}
    assert len(registry) >= 7, registry
    bad = [f"{m}:{line} imports {t}" for m in registry for t, _, line in GRAPH[m] if t in registry and t != m]
    assert not bad, "kinds share code through modes.engine:\n" + "\n".join(bad)


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w, _, _ in GRAPH.get(v, []):
            if w == v or w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_of_another_modules_private_name():
    bad = [f"{m}:{line} imports {t}.{n}" for m, edges in GRAPH.items() for t, names, line in edges
           for n in names if n.startswith("_") and not n.startswith("__") and t != m]
    assert not bad, "\n".join(bad)


# Size limits and private names (issue 22). No module is exempt any more (report.py's use of
# stats._sort went with issue 23); a new entry needs a reason here.
PRIVATE_EXEMPT: set[str] = set()
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def test_no_module_over_400_lines():
    files = {**MODS, "tasks.py (the CLI: each task a few lines calling lib/)": PKG.parents[1] / "tasks.py"}
    bad = [f"{m}: {n} lines" for m, p in files.items()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not bad, "\n".join(bad)


def test_no_function_over_60_lines():
    bad = []
    for m, p in MODS.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    bad.append(f"{m}:{node.lineno} {node.name}: {n} lines")
    assert not bad, "\n".join(bad)


def _module_aliases(tree, mod: str) -> dict[str, str]:
    """{local name: cnibench module} for `from . import x` / `import cnibench.x as y` in a module."""
    pkg = mod if MODS[mod].name == "__init__.py" else mod.rpartition(".")[0]
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".") if pkg else []
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("cnibench"):
                target = node.module[len("cnibench"):].lstrip(".")
            else:
                continue
            for a in node.names:
                full = f"{target}.{a.name}" if target else a.name
                if full in MODS:
                    out[a.asname or a.name] = full
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cnibench.") and a.asname:
                    out[a.asname] = a.name[len("cnibench."):]
    return out


def test_no_private_name_of_another_module_used_by_attribute():
    bad = []
    for m, p in MODS.items():
        if m in PRIVATE_EXEMPT:
            continue
        tree = ast.parse(p.read_text())
        aliases = _module_aliases(tree, m)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != m):
                bad.append(f"{m}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)
