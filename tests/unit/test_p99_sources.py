"""benchmarks/p99_sources.py: the diagnosis of what a stored study's p99 SE is made of."""

import importlib.util
import math
from pathlib import Path

import numpy as np

from cnibench.analysis import dataset

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "lab-b0"


def _module():
    spec = importlib.util.spec_from_file_location("p99_sources", ROOT / "benchmarks" / "p99_sources.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_catastrophic_windows_are_those_above_k_times_their_median():
    mod = _module()
    ds = dataset.load("lab-b0", FIXTURE)
    runs = mod.in_band_runs(ds.runs, 5.0)
    cat = runs[runs["catastrophic"]]
    assert len(cat) and (cat["p99"] > 5.0 * cat["median_p99"]).all()
    assert (runs[~runs["catastrophic"]]["p99"] <= 5.0 * runs[~runs["catastrophic"]]["median_p99"]).all()


def test_leaving_nothing_out_changes_nothing_and_leaving_out_only_shrinks_n():
    mod = _module()
    ds = dataset.load("lab-b0", FIXTURE)
    none, cat = mod.cells(ds, math.inf)
    assert cat.empty and (none["n"] == none["n_calm"]).all()
    assert np.allclose(none["se_pooled"], none["se_pooled_calm"])
    some, cat5 = mod.cells(ds, 5.0)
    assert len(cat5) and (some["n_calm"] <= some["n"]).all() and (some["n_calm"] < some["n"]).any()
    assert np.allclose(some["ratio"], some["se_pooled"] / some["se_block_t"])
