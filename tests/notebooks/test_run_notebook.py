"""notebooks/run.ipynb through papermill: the committed template is clean, and executing it on
a saved record gives a readable entry (summary, percentile plot, timeline) — in a fresh kernel
and in the warm kernel the runner reuses, where one run's state must not leak into the next."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest

from cnibench import results
from cnibench.study.runbook import TEMPLATE, RunBook
from cnibench.analysis.synthetic import Truth, make_record

pytestmark = pytest.mark.timeout(300)


def test_template_is_committed_without_outputs_and_has_a_parameters_cell():
    nb = nbformat.read(TEMPLATE, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "record_path" in tagged[0].source and "measure" in tagged[0].source
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None


def _record(tmp_path, rep, rate_load):
    rec = make_record("nbt", "host", "small", rate_load, rep, Truth(), np.random.default_rng(rep), duration_s=4, order=rep)
    return rec, results.write_record(tmp_path / "raw", rec)


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    texts, images = [], 0
    for c in nb.cells:
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                raise AssertionError(f"cell failed: {o.get('ename')}: {o.get('evalue')}")
            data = o.get("data", {})
            images += "image/png" in data
            texts.append(o.get("text", "") + data.get("text/plain", "") + data.get("text/html", ""))
    return nb, "\n".join(texts), images


@pytest.mark.parametrize("policy", ["warm", "fresh"])
def test_executed_notebook_shows_its_own_run(tmp_path, policy):
    recs = [_record(tmp_path, rep, load) for rep, load in ((1, 0.3), (2, 0.5))]
    with RunBook(policy) as book:
        outs = [book.render_sync(tmp_path / "runs" / f"{rec['run_id']}.ipynb", {"record_path": str(path)}) for rec, path in recs]
    for (rec, path), out in zip(recs, outs):
        assert out.exists() and not list(out.parent.glob(".*partial*"))
        nb, text, images = _outputs(out)
        assert nb.metadata.papermill.parameters["record_path"] == str(path)
        assert rec["run_id"] in text
        other = [r for r, _ in recs if r is not rec][0]
        assert other["run_id"] not in text  # the warm kernel does not show the previous run
        assert str(rec["latency"]["percentiles"]["99"]) in text  # the summary table
        assert images == 2  # latency by percentile and timeline


def test_a_failing_notebook_is_kept_for_a_look(tmp_path):
    out = tmp_path / "runs" / "missing.ipynb"
    with RunBook("warm") as book:
        with pytest.raises(Exception):
            book.render_sync(out, {"record_path": str(tmp_path / "nope.json")})
    assert out.exists()
    text = json.dumps(nbformat.read(out, as_version=4).cells)
    assert "no complete run record" in text
