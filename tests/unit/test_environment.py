"""environment.yml (conda) and pyproject.toml (pip) must ask for the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {}


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def test_conda_and_pip_agree():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in py["dependencies"]} | {_name(r) for r in py["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            n = _name(dep)
            if n not in ("python", "pip"):
                conda.add(CONDA_TO_PYPI.get(n, n))
    assert conda == pip_names, f"only in conda: {conda - pip_names}; only in pyproject: {pip_names - conda}"


def test_design_card_packages_are_dependencies():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in py["dependencies"]}
    for pkg in ("jupyterlab", "papermill", "ipywidgets", "seaborn", "scipy", "invoke", "asyncssh"):
        assert pkg in names


# --- requirements.lock: the tested environment, exact versions and hashes -----------------

import hashlib  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

from cnibench.infra import lockfile  # noqa: E402
from cnibench.study import provenance

LOCK_TEXT = lockfile.LOCK.read_text()
LOCKED = lockfile.parse(LOCK_TEXT)


def _pyproject_requirements():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in py["dependencies"] + py["optional-dependencies"]["dev"]]


def test_the_lock_pins_every_dependency_within_pyprojects_bounds():
    for req in _pyproject_requirements():
        name = lockfile.normalize(req.name)
        assert name in LOCKED, f"{name} is in pyproject.toml but not in requirements.lock: run `invoke lock`"
        assert Version(LOCKED[name]) in req.specifier, f"lock has {name}=={LOCKED[name]}, pyproject asks {req}: run `invoke lock`"


def test_every_locked_package_has_a_hash():
    assert len(LOCKED) > 50 and lockfile.unhashed(LOCK_TEXT) == []
    assert lockfile.unhashed("a==1 \\\n    --hash=sha256:00\nb==2\n    # via a\n") == ["b"]


def test_conda_environment_agrees_with_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python={lockfile.PYTHON}" in env["dependencies"]
    specs = [d for d in env["dependencies"] if isinstance(d, str)] + next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for spec in specs:
        name = _name(spec)
        if name in ("python", "pip", "-e"):
            continue
        req = Requirement(spec.replace(" ", ""))
        assert Version(LOCKED[lockfile.normalize(name)]) in req.specifier, f"environment.yml {spec} excludes the lock's {LOCKED[lockfile.normalize(name)]}"


def test_provenance_records_the_lock_hash():
    assert provenance.driver_facts()["lock_sha256"] == hashlib.sha256(LOCK_TEXT.encode()).hexdigest()


def test_compare_finds_missing_extra_and_different():
    locked = {"numpy": "2.0.0", "pandas": "2.2.0", "scipy": "1.14.0"}
    installed = {"numpy": "2.0.0", "pandas": "2.2.1", "ruff": "0.6.0", "pip": "24.0", "cnibench": "0.1.0"}
    assert lockfile.compare(locked, installed) == {"missing": ["scipy"], "extra": ["ruff"], "different": [("pandas", "2.2.0", "2.2.1")]}
    assert lockfile.parse("PyYAML==6.0.3 \\\n    --hash=sha256:00\njupyter_core==5.8.1\n# x==1\n") == {"pyyaml": "6.0.3", "jupyter-core": "5.8.1"}


# CI (.ci/run) installs into a fresh venv from the lock and sets CNIBENCH_LOCKED_ENV=1. Anywhere
# else (a developer's Python with tools of their own, conda) extra packages are expected.
@pytest.mark.skipif(not os.environ.get("CNIBENCH_LOCKED_ENV"),
                    reason="not a venv installed from requirements.lock (CI sets CNIBENCH_LOCKED_ENV=1)")
def test_installed_versions_are_exactly_the_locked_ones():
    diff = lockfile.compare(LOCKED, lockfile.installed())
    assert diff == {"missing": [], "extra": [], "different": []}, f"installed vs requirements.lock ({sorted(lockfile.NOT_LOCKED)} excepted): {diff}"
