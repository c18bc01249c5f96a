"""requirements.lock: every Python package of the tested environment, exact version and hashes.

pyproject.toml is the one list of dependencies (with lower bounds); the lock is generated from
it by `invoke lock` (uv pip compile) for the machines the project targets, Python 3.11 on
Linux x86_64 (Debian 12), so a fresh clone installs what the suite last passed with:
`pip install --require-hashes -r requirements.lock`. Parsing and comparing are pure.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Mapping

from .config import ROOT

LOCK = ROOT / "requirements.lock"
PYTHON = "3.11"
PLATFORM = "x86_64-unknown-linux-gnu"
# In a venv but never in the lock: the installer's own tools, and the project (installed
# editable with --no-deps after the lock).
NOT_LOCKED = frozenset({"pip", "setuptools", "wheel", "cnibench"})


def normalize(name: str) -> str:
    """PEP 503 name: 'PyYAML' and 'pyyaml', 'jupyter_core' and 'jupyter-core' are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(text: str) -> dict[str, str]:
    """{normalized name: version} of the `name==version` lines (hashes and comments skipped)."""
    pins = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if m:
            pins[normalize(m.group(1))] = m.group(3)
    return pins


def unhashed(text: str) -> list[str]:
    """Pinned packages without a --hash (pip --require-hashes would refuse the lock)."""
    out, name = [], None
    for line in text.splitlines() + [""]:
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m or not line.startswith(" "):
            if name is not None:
                out.append(name)
            name = m.group(1) if m else None
        elif "--hash=sha256:" in line:
            name = None
    return out


def compare(locked: Mapping[str, str], installed: Mapping[str, str], ignore=NOT_LOCKED) -> dict[str, list]:
    """Both directions: locked but not installed, installed but not locked, different versions."""
    locked = {k: v for k, v in locked.items() if k not in ignore}
    installed = {k: v for k, v in installed.items() if k not in ignore}
    return {
        "missing": sorted(set(locked) - set(installed)),
        "extra": sorted(set(installed) - set(locked)),
        "different": sorted((k, locked[k], installed[k]) for k in set(locked) & set(installed)
                            if locked[k] != installed[k]),
    }


def installed() -> dict[str, str]:
    """{normalized name: version} of the distributions this interpreter sees."""
    from importlib import metadata

    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions()}


def compile_command(upgrade: bool = False, out: Path = LOCK) -> list[str]:
    """uv keeps the pins already in `out` unless `upgrade`; it adds and drops what pyproject changed."""
    return [sys.executable, "-m", "uv", "pip", "compile", str(ROOT / "pyproject.toml"), "--extra", "dev",
            "--generate-hashes", "--python-version", PYTHON, "--python-platform", PLATFORM,
            "--custom-compile-command", "invoke lock", "--quiet", "-o", str(out)] + (["--upgrade"] if upgrade else [])
