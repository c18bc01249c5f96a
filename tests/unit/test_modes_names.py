"""Only the registry and the kinds know the modes (read with `ast`, no imports run): no other
module of the library, nor tasks.py, holds a mode's name as a literal or imports a kind.

A literal counts when it is a mode's name, or (under modes/) contains a hyphenated one; "host"
is also a plain word (a step's host, a host role), so it counts only where it stands for a mode:
compared with, or the default of, something named *mode* or *reference*, or passed to a
function named *mode*. Docstrings and comments may name modes. Tests, docs and benchmarks
choose modes by name and are not read.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cnibench.modes import MODES

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "lib" / "cnibench"
OWNERS = (PKG / "modes" / "kinds", PKG / "modes" / "registry.py")
# The one exception: the CNI runtime's table of what each plugin's DEL leaves is keyed by plugin
# type, and the reference plugins `macvlan` and `ipvlan` share those words with two modes.
PENDING = {PKG / "infra" / "cni.py"}
NAMES = set(MODES.names())
HYPHENATED = {n for n in NAMES if "-" in n}


def _files() -> list[Path]:
    files = sorted(PKG.rglob("*.py")) + [ROOT / "tasks.py"]
    return [p for p in files if p not in PENDING and not any(p == o or o in p.parents for o in OWNERS)]


def _docstrings(tree) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _words(node) -> str:
    return ast.unparse(node).lower() if node is not None else ""


def _mode_context(tree) -> set[int]:
    """ids of the constants that stand for a mode (for the word "host")."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(w in _words(p) for p in parts for w in ("mode", "reference")):
                out |= {id(p) for p in parts if isinstance(p, ast.Constant)}
        elif isinstance(node, ast.Call):
            func = _words(node.func)
            first = node.args[0] if node.args else None
            if "mode" in func:
                out |= {id(a) for a in node.args if isinstance(a, ast.Constant)}
            elif func.endswith(".get") and isinstance(first, ast.Constant) and any(w in str(first.value) for w in ("mode", "reference")):
                out |= {id(a) for a in node.args[1:] if isinstance(a, ast.Constant)}
    return out


def _literals(path: Path, under_modes: bool | None = None) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docs, context = _docstrings(tree), _mode_context(tree)
    under_modes = PKG / "modes" in path.parents if under_modes is None else under_modes
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
            continue
        v = node.value
        named = v in NAMES and (v != "host" or id(node) in context)
        inside = under_modes and any(n in v for n in HYPHENATED)
        if named or inside:
            bad.append(f"{path.name}:{node.lineno}: {v[:60]!r}")
    return bad


def _kind_imports(path: Path, rel: tuple[str, ...] | None = None) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    if rel is None:
        rel = path.relative_to(PKG).with_suffix("").parts if PKG in path.parents else ()
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[: len(rel) - node.level])
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = (node.module or "").removeprefix("cnibench.")
            names = [f"{target}.{a.name}" for a in node.names]
            if any(t.startswith("modes.kinds") for t in [target, *names]):
                bad.append(f"{path.name}:{node.lineno}: imports {target}")
        elif isinstance(node, ast.Import):
            bad += [f"{path.name}:{node.lineno}: imports {a.name}" for a in node.names
                    if a.name.startswith("cnibench.modes.kinds")]
    return bad


def test_the_scan_sees_what_it_must_refuse(tmp_path):
    """The rules catch a literal, a mode-named "host" and an import of a kind (not vacuous)."""
    probe = tmp_path / "probe.py"  # read as if it were modes/engine/probe.py
    probe.write_text('from ..kinds import ebpf\nx = mode == "host"\ny = {"host": 1}\nz = "use flannel-vxlan"\n')
    bad = _literals(probe, under_modes=True) + _kind_imports(probe, ("modes", "engine", "probe"))
    assert len(bad) == 3, bad  # the comparison, the message, the import; not the dict key


def test_no_module_outside_the_registry_and_the_kinds_names_a_mode():
    bad = [b for p in _files() for b in _literals(p)]
    assert not bad, "ask the registry (cnibench.modes.MODES) instead:\n" + "\n".join(bad)


def test_no_module_outside_the_registry_and_the_kinds_imports_a_kind():
    bad = [b for p in _files() for b in _kind_imports(p)]
    assert not bad, "the kinds are reached through the registry:\n" + "\n".join(bad)
