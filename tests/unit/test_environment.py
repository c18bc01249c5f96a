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
