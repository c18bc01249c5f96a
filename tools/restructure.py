"""Group lib/cnibench by stage: git mv the modules and rewrite every import that names them.

    python tools/restructure.py          # from the repository root; re-runnable after a merge

Imports inside lib/ are resolved (relative ones from each file's old place) and written again
relative to its new place; tests/, tasks.py, benchmarks/, notebooks/ and docs use absolute names
(`cnibench.x`, `from cnibench import x`, paths `cnibench/x.py`). Modules not in MOVES stay; a
new top-level module nobody placed is reported, so a merge cannot slip one past.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
PKG = LIB / "cnibench"

# old module (dotted, under cnibench) -> new module. A package moves with everything in it.
MOVES = {
    "config": "infra.config",
    "hosts": "infra.hosts",
    "modes.local": "infra.local",
    "testbed": "infra.testbed",
    "packages": "infra.packages",
    "lease": "infra.lease",
    "lockfile": "infra.lockfile",
    "kernelprobe": "infra.kernelprobe",
    "workload.cbuild": "infra.cbuild",
    "clean": "modes.clean",
    "modes.apply": "modes.engine.apply",
    "modes.aws": "modes.engine.aws",
    "modes.facts": "modes.engine.facts",
    "modes.hoststate": "modes.engine.hoststate",
    "modes.pathcheck": "modes.engine.pathcheck",
    "modes.pieces": "modes.engine.pieces",
    "modes.state": "modes.engine.state",
    "modes.trust": "modes.engine.trust",
    "modes.verify": "modes.engine.verify",
    "modes.host": "modes.kinds.host",
    "modes.flannel": "modes.kinds.flannel",
    "modes.calico": "modes.kinds.calico",
    "modes.ipvlan": "modes.kinds.ipvlan",
    "modes.macvlan": "modes.kinds.macvlan",
    "modes.docker_bridge": "modes.kinds.docker_bridge",
    "modes.ebpf": "modes.kinds.ebpf",
    "modes.bpf": "modes.kinds.bpf",
    "study": "study.spec",
    "matrix": "study.matrix",
    "runner": "study.runner",
    "runbook": "study.runbook",
    "runview": "study.runview",
    "provenance": "study.provenance",
    "policy": "study.policy",
    "progress": "study.progress",
    "precheck": "study.precheck",
    "study_run": "study.study_run",  # modules the split branch made from runner.py and study.py
    "study_calibration": "study.calibration",
    "study_keys": "study.keys",
    "study_status": "study.status",
    "run_notebooks": "study.run_notebooks",
    "dataset": "analysis.dataset",
    "stats": "analysis.stats",
    "plots": "analysis.plots",
    "report": "analysis.report",
    "synthetic": "analysis.synthetic",
    "compare": "analysis.compare",
    "histquant": "analysis.histquant",  # split from stats.py by the split branch
    "paired": "analysis.paired",
}
# Top-level modules that stay: the foundation every stage may use, and the pipeline over all.
STAY = {"__init__", "catalog", "parsing", "errors", "results", "pipeline", "smoke"}  # smoke: deleted on main
# Modules added by the `split` branch: their stage follows the module they were split from.
PREFIXES = {"runner_": "study.", "study_": "study.", "stats_": "analysis.", "report_": "analysis.",
            "testbed_": "infra.", "records": None}

NEW_PACKAGES = {
    "infra": '''"""Stage 1, infrastructure: the hosts and how to reach them.

Inventory and paths (config), SSH hosts and the local runner (hosts, local), the local testbed,
kernel probes, Debian packages, the per-host session lease, the dependency lock and the one
builder of the project's C programs (cbuild).

May import: catalog, parsing, errors
"""
''',
    "modes/engine": '''"""The mode engine: gathers host facts, applies a kind's plan with undo, verifies it, keeps the
state (driver copy and checked host copies) and the pieces and path checks the kinds share.

Part of cnibench.modes (see its docstring for what the stage may import).
"""
''',
    "modes/kinds": '''"""The mode kinds, one module each (registered in modes/registry.py). A kind plans with the
engine's pieces and path checks; kinds never import each other, shared code lives in the engine.

Part of cnibench.modes (see its docstring for what the stage may import).
"""
''',
    "study": '''"""Stage 4, the study: the study file (spec), its run matrix, the runner that owns a study run
(calibration glue, records, redo policy), the host precheck, the run notebooks (runbook), status
lines (runview), provenance (the manifest) and progress.

May import: catalog, parsing, errors, results, infra, modes, workload
"""
''',
    "analysis": '''"""Stage 5, analysis: the dataset read from records, statistics, figures, the report, study
comparison and synthetic studies for tests (the explorer notebook's logic lives here too).

May import: catalog, parsing, errors, results, infra, study
"""
''',
}


def all_modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def new_name(old: str) -> str:
    """The module's dotted name (under cnibench) after the moves; a package moves its members."""
    for k in sorted(MOVES, key=len, reverse=True):
        if old == k or old.startswith(k + "."):
            return MOVES[k] + old[len(k):]
    return old


def is_pkg(mods: dict[str, Path], name: str) -> bool:
    p = mods.get(name)
    return p is not None and p.name == "__init__.py"


def relative(from_pkg: str, target: str) -> str:
    """`from <this> import` text that names `target` (dotted under cnibench) from package `from_pkg`."""
    a = from_pkg.split(".") if from_pkg else []
    b = target.split(".") if target else []
    i = 0
    while i < len(a) and i < len(b) and a[i] == b[i]:
        i += 1
    return "." * (len(a) - i + 1) + ".".join(b[i:])


def rewrite_lib_file(path: Path, old_mod: str, mods: dict[str, Path]) -> str:
    src = path.read_text()
    old_pkg = old_mod if path.name == "__init__.py" else old_mod.rpartition(".")[0]
    nm = new_name(old_mod)
    new_pkg = nm if path.name == "__init__.py" else nm.rpartition(".")[0]
    new_pkg_full = ("cnibench." + new_pkg).rstrip(".")
    edits = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = old_pkg.split(".") if old_pkg else []
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        elif node.module and (node.module == "cnibench" or node.module.startswith("cnibench.")):
            target = node.module[len("cnibench"):].lstrip(".")
        else:
            continue
        stmts = render(target, node.names, new_pkg_full[len("cnibench"):].lstrip("."), mods, bool(node.level))
        edits.append((node, stmts))
    return apply_edits(src, edits)


def render(target: str, names, new_pkg: str, mods, rel: bool) -> list[str]:
    """One or more `from ... import ...` statements for the names imported from old `target`."""
    groups: dict[str, list[str]] = {}
    for a in names:
        sub = f"{target}.{a.name}" if target else a.name
        if sub in mods and not (target in mods and not is_pkg(mods, target)):
            new = new_name(sub)
            frm, leaf = new.rpartition(".")[0], new.rpartition(".")[2]
            alias = a.asname or (a.name if leaf != a.name else None)
            groups.setdefault(frm, []).append(leaf + (f" as {alias}" if alias else ""))
        else:
            groups.setdefault(new_name(target) if target else "", []).append(a.name + (f" as {a.asname}" if a.asname else ""))
    out = []
    for frm, items in groups.items():
        where = relative(new_pkg, frm) if rel else ("cnibench." + frm).rstrip(".")
        out.append((where, items))
    return out


def apply_edits(src: str, edits) -> str:
    lines = src.splitlines(keepends=True)
    offs = [0]
    for line in lines:
        offs.append(offs[-1] + len(line))
    pieces = []
    for node, stmts in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset)):
        start = offs[node.lineno - 1] + node.col_offset
        end = offs[node.end_lineno - 1] + node.end_col_offset
        old = src[start:end]
        indent = " " * node.col_offset
        texts = []
        for where, items in stmts:
            m = re.match(r"from\s+\S+\s+import\s+", old)
            if len(stmts) == 1 and m:
                texts.append(f"from {where} import " + old[m.end():] if _same_names(old[m.end():], items) else f"from {where} import {', '.join(items)}")
            else:
                texts.append(f"from {where} import {', '.join(items)}")
        pieces.append((start, end, ("\n" + indent).join(texts)))
    for start, end, text in reversed(pieces):
        src = src[:start] + text + src[end:]
    return src


def _same_names(tail: str, items: list[str]) -> bool:
    """Keep the original name list (its parentheses, comments, order) when the names are unchanged."""
    got = re.sub(r"#[^\n]*", "", tail)
    got = [re.sub(r"\s+", " ", x.strip()) for x in got.strip().strip("()").split(",") if x.strip()]
    return got == items


# --- files outside lib/ (and docs): absolute names and paths -------------------------------

def text_rewrite(text: str, mods: dict[str, Path]) -> str:
    keys = sorted(MOVES, key=len, reverse=True)
    dotted = re.compile(r"\bcnibench\.(" + "|".join(re.escape(k) for k in keys) + r")\b(?!\.(?:py|c|ipynb)\b)")
    text = dotted.sub(lambda m: "cnibench." + MOVES[m.group(1)], text)
    # a path names a module as x.py and a package as x/ (study.py's new home is the package study/)
    pkgs = [k for k in keys if is_pkg(mods, k)]
    files = re.compile(r"\bcnibench/(" + "|".join(re.escape(k.replace(".", "/")) for k in keys) + r")(?=\.py\b)")
    text = files.sub(lambda m: "cnibench/" + MOVES[m.group(1).replace("/", ".")].replace(".", "/"), text)
    if pkgs:
        dirs = re.compile(r"\bcnibench/(" + "|".join(re.escape(k.replace(".", "/")) for k in pkgs) + r")(?=/)")
        text = dirs.sub(lambda m: "cnibench/" + MOVES[m.group(1).replace("/", ".")].replace(".", "/"), text)
    return text


def from_import_rewrite(src: str, mods) -> str:
    """`from cnibench import x` / `from cnibench.modes import apply`, with x a moved module."""
    pat = re.compile(r"^([ \t]*)from (cnibench(?:\.[\w.]+)?) import ([\w ,]+?)[ \t]*(#[^\n]*)?$", re.M)

    def one(m):
        indent, base, names, comment = m.group(1), m.group(2), m.group(3), m.group(4)
        target = base[len("cnibench"):].lstrip(".")
        items = [x.strip() for x in names.split(",") if x.strip()]
        moved = False
        groups: dict[str, list[str]] = {}
        for it in items:
            name, _, alias = it.partition(" as ")
            sub = f"{target}.{name}" if target else name
            if sub in mods and new_name(sub) != sub:  # an old module name (not one already rewritten)
                new = new_name(sub)
                frm, leaf = new.rpartition(".")[0], new.rpartition(".")[2]
                alias = alias or (name if leaf != name else "")
                groups.setdefault(frm, []).append(leaf + (f" as {alias}" if alias else ""))
                moved = True
            else:
                groups.setdefault(target, []).append(it)
        if not moved:
            return m.group(0)
        lines = [f"{indent}from {('cnibench.' + frm).rstrip('.')} import {', '.join(its)}" for frm, its in groups.items()]
        if comment:
            lines[0] += "  " + comment
        return "\n".join(lines)

    return pat.sub(one, src)


def rewrite_notebook(path: Path, mods) -> None:
    nb = json.loads(path.read_text())
    changed = False
    for cell in nb.get("cells", []):
        src = "".join(cell.get("source", []))
        new = from_import_rewrite(text_rewrite(src, mods), mods)
        if new != src:
            cell["source"] = new.splitlines(keepends=True)
            changed = True
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def main() -> int:
    mods = all_modules()
    unplaced = sorted(m for m in mods if "." not in m and m and m not in STAY and m not in MOVES
                      and not is_pkg(mods, m))
    for m in list(unplaced):
        for pre, dest in PREFIXES.items():
            if m.startswith(pre) and dest:
                MOVES[m] = dest + m
                unplaced.remove(m)
    if unplaced:
        print("not placed (add to MOVES or STAY):", ", ".join(unplaced))
        return 1
    todo = {m: p for m, p in mods.items() if new_name(m) != m or True}
    texts = {m: rewrite_lib_file(p, m, mods) for m, p in todo.items()}
    # move files: a package moves as a directory
    moved_dirs = set()
    for old in sorted(MOVES, key=len):
        if old not in mods:
            continue
        src = mods[old]
        if src.name == "__init__.py":
            dst_dir = PKG / MOVES[old].replace(".", "/")
            dst_dir.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "mv", str(src.parent), str(dst_dir)], check=True, cwd=ROOT)
            moved_dirs.add(old)
        elif not any(old.startswith(d + ".") for d in moved_dirs):
            dst = PKG / (MOVES[old].replace(".", "/") + ".py")
            dst.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "mv", str(src), str(dst)], check=True, cwd=ROOT)
    for pkg, doc in NEW_PACKAGES.items():
        init = PKG / pkg / "__init__.py"
        if not init.exists():
            init.write_text(doc)
            subprocess.run(["git", "add", str(init)], check=True, cwd=ROOT)
    for m, text in texts.items():
        dst = PKG / (new_name(m).replace(".", "/") + ("/__init__.py" if mods[m].name == "__init__.py" else ".py"))
        dst.write_text(text)
    # config's ROOT is found from the file's place: one level deeper now
    cfg = PKG / "infra" / "config.py"
    cfg.write_text(cfg.read_text().replace("Path(__file__).resolve().parents[2]", "Path(__file__).resolve().parents[3]"))
    # everything else names modules absolutely
    others = [ROOT / "tasks.py", ROOT / "pyproject.toml", ROOT / "README.md", ROOT / ".ci" / "run"]
    others += [p for d in ("tests", "benchmarks", "docs", "tools") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md")]
    for p in others:
        if not p.exists() or p.name == "restructure.py":
            continue
        t = p.read_text()
        new = text_rewrite(t, mods)
        if p.suffix == ".py":
            new = from_import_rewrite(new, mods)
        if new != t:
            p.write_text(new)
    for p in (ROOT / "notebooks").glob("*.ipynb"):
        rewrite_notebook(p, mods)
    for p in PKG.rglob("*.py"):  # docstrings and comments in lib that name modules by path
        t = p.read_text()
        new = text_rewrite(t, mods)
        if new != t:
            p.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
