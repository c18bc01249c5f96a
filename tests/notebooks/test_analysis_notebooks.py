"""analysis, figures and explore notebooks run top to bottom under papermill on synthetic data."""

import json
import os
import time
import warnings
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

from cnibench.infra import config  # noqa: E402
from cnibench.study import runbook
from cnibench.analysis import synthetic

NOTEBOOKS = config.ROOT / "notebooks"


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    base = tmp_path_factory.mktemp("nb")
    synthetic.write_study(base / "raw", modes=("host", "flannel-vxlan", "ipvlan"), loads=(0.3, 0.5),
                          reps=2, seed=3, duration_s=3, failed_fraction=0.1)
    return base


@pytest.fixture(autouse=True)
def kernel_env(monkeypatch):
    # the kernel is a subprocess: it must import this checkout's lib/ and draw without a display
    lib = str(config.ROOT / "lib")
    monkeypatch.setenv("PYTHONPATH", lib + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


SLOW_S = 30  # these notebooks take 2-16 s here; a run past this says where its time went


def _run(name, out, **params):
    # the runner's path: kernel start and per-cell timeouts, so a stuck kernel fails, never hangs
    t0 = time.monotonic()
    runbook.execute(NOTEBOOKS / f"{name}.ipynb", out, params, cwd=config.ROOT)
    took = time.monotonic() - t0
    nb = json.loads(Path(out).read_text())
    if took > SLOW_S:
        # Once in a full-suite run the explore notebook took 104 s (and passed); papermill's
        # per-cell durations say whether the kernel's start or a cell took the time.
        cells = [round(c.get("metadata", {}).get("papermill", {}).get("duration") or 0, 1) for c in nb["cells"]]
        warnings.warn(f"{name}.ipynb took {took:.0f} s: cells {cells} s, the rest is kernel start and stop")
    return nb


def _text(nb):
    return "".join("".join(o.get("text", "")) + json.dumps(o.get("data", {}))
                   for c in nb["cells"] for o in c.get("outputs", []))


@pytest.mark.parametrize("name", ["analysis", "figures", "explore"])
def test_notebooks_are_committed_without_outputs_and_tagged(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]) == 1


def test_analysis_notebook(raw, tmp_path):
    nb = _run("analysis", tmp_path / "a.ipynb", study="synthetic", raw_dir=str(raw / "raw"),
              processed_dir=str(raw / "proc"), n_boot=100)
    text = _text(nb)
    assert "flannel-vxlan" in text and "overhead" in text
    assert (raw / "proc" / "stats_headline.csv").exists()


def test_figures_notebook(raw, tmp_path):
    _run("figures", tmp_path / "f.ipynb", study="synthetic", raw_dir=str(raw / "raw"),
         processed_dir=str(raw / "proc2"), figures_dir=str(raw / "fig"), n_boot=100)
    assert len(list((raw / "fig").glob("*.png"))) == 7
    assert len(list((raw / "fig").glob("*.svg"))) == 7 and len(list((raw / "fig").glob("*.pdf"))) == 7


def test_explore_notebook_builds_widgets_and_draws(raw, tmp_path):
    nb = _run("explore", tmp_path / "e.ipynb", study="synthetic", raw_dir=str(raw / "raw"), n_boot=50)
    text = _text(nb)
    assert "application/vnd.jupyter.widget-view+json" in text
    # 3 modes x (line + end markers) in the one load panel the widgets selected
    assert "explorer: 3 modes, 2 loads, lines drawn=6" in text
