"""A stuck kernel fails fast with a message naming the notebook and the cell, never hangs:
a kernel that never answers (its "kernel" is `sleep`), and a kernel that stops in the middle of
a cell (SIGSTOP: alive, never replies). Both through runbook.execute, the one path every
notebook execution takes (the runner's and the notebook tests')."""

from __future__ import annotations

import json
import os
import time

import nbformat
import pytest

from cnibench.study import runbook
from cnibench.study.runbook import NotebookTimeout, RunBook

pytestmark = pytest.mark.timeout(120)


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _sleepers(tag: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().split(b"\0")[:2] == [b"sleep", tag.encode()]:
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def test_a_kernel_that_never_answers_fails_at_the_start_timeout(tmp_path, monkeypatch):
    spec = tmp_path / "kernels" / "cnib-mute"
    spec.mkdir(parents=True)
    tag = "987.6"  # a duration no other process uses, to find (and miss) this one afterwards
    (spec / "kernel.json").write_text(json.dumps({"argv": ["sleep", tag], "display_name": "mute", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    nb = _notebook(tmp_path / "mute.ipynb", "x = 1", "print(x)")
    t0 = time.monotonic()
    with pytest.raises(NotebookTimeout, match=r"mute\.ipynb: the kernel did not answer .*didn't respond in 3"):
        runbook.execute(nb, tmp_path / "out.ipynb", {}, kernel_name="cnib-mute", start_timeout=3)
    assert time.monotonic() - t0 < 30
    assert _sleepers(tag) == []  # the mute kernel was stopped


STOP = "import os, signal\nif stop:\n    os.kill(os.getpid(), signal.SIGSTOP)  # alive, never replies"


def test_a_kernel_stuck_in_a_cell_fails_at_the_cell_timeout_naming_the_cell(tmp_path):
    nb = _notebook(tmp_path / "stuck.ipynb", "stop = False", STOP, "print('never')")
    t0 = time.monotonic()
    with pytest.raises(NotebookTimeout, match=r"stuck\.ipynb: cell 2 \('import os, signal'\) did not finish within 3 s"):
        runbook.execute(nb, tmp_path / "out.ipynb", {"stop": True}, cell_timeout=3)
    assert time.monotonic() - t0 < 60
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)  # kept for a look
    assert saved.cells[2].metadata.papermill["start_time"] and not saved.cells[3].metadata.papermill["start_time"]


def test_the_warm_kernel_is_replaced_after_a_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(runbook, "CELL_TIMEOUT", 3)
    nb = _notebook(tmp_path / "stuck.ipynb", "stop = False", STOP, "print('done')")
    with RunBook("warm", template=nb) as book:
        with pytest.raises(NotebookTimeout, match="cell 2"):
            book.render_sync(tmp_path / "a.ipynb", {"stop": True})
        book.render_sync(tmp_path / "b.ipynb", {"stop": False})  # a new kernel runs the next one
    assert "done" in json.dumps(nbformat.read(tmp_path / "b.ipynb", as_version=4).cells[3].outputs)


def test_every_timeout_is_under_two_minutes():
    assert runbook.START_TIMEOUT <= 60 and runbook.CELL_TIMEOUT <= 120
    assert runbook.cell_timeout_for({"record_path": "x"}) == runbook.CELL_TIMEOUT
    # a measuring notebook's cell runs the measurement: its duration and warm-up come on top
    assert runbook.cell_timeout_for({"measure": True, "spec": {"duration_s": 60, "warmup_s": 5}}) == runbook.CELL_TIMEOUT + 65
