"""The study pipeline on the real testbed: a run notebook that measures, a whole small study,
and resuming after SIGKILL. Data goes to tmp_path, never to data/."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import nbformat
import pytest
import yaml

from cnibench import results
from cnibench.infra.config import STUDIES
from cnibench.study.provenance import git_state, manifest_path, read_manifest
from cnibench.study.study_run import run_study
from cnibench.study.spec import load_study

pytestmark = [pytest.mark.timeout(600)]

# Pipeline mechanics, not noise: on a shared machine the noise guards measure and flag but do not
# invalidate, and the quiet-machine check looks once without waiting.
WORKLOAD = {"duration_s": 1, "warmup_s": 0.5, "connections": 4,
            "guard": {"max_foreign_cpu": None, "max_steal": None, "max_hiccup_total_us": None, "max_send_lag_p99_us": None}}


def write_study(tmp_path: Path, testbed, name: str, **over) -> Path:
    data = {
        "name": name, "inventory": str(testbed.path), "seed": 5,
        "modes": ["host", "flannel-host-gw"], "sizes": ["small"],
        "load": {"rates": [300, 900]}, "workload": WORKLOAD, "notebooks": "warm", "quiet": {"max_wait_s": 0}, **over,
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def records(raw: Path, study: str) -> list[dict]:
    return list(results.iter_records(raw, study))


def no_pods_left(testbed) -> bool:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return not any(line.split()[0].endswith("-pod") for line in out.splitlines() if line.startswith("cnib-"))


def test_run_notebook_measures_a_tiny_run(testbed, tmp_path):
    """papermill executes run.ipynb with measure=True: it runs the load and writes the record."""
    from cnibench.infra.hosts import Fleet
    from cnibench.modes import mode_down, mode_up
    from cnibench.study.runbook import RunBook

    async def up():
        async with Fleet(testbed) as fleet:
            return await mode_up(fleet, "host")

    async def down():
        async with Fleet(testbed) as fleet:
            await mode_down(fleet, "host")

    endpoint = asyncio.run(up())
    rid = results.run_id("nb", "host", "small", 400, 1)
    try:
        with RunBook("fresh") as book:
            out = book.render_sync(tmp_path / "runs" / f"{rid}.ipynb", {
                "measure": True, "inventory": str(testbed.path), "endpoint": endpoint.to_dict(),
                "spec": {"mode": "host", "size": "small", "rate": 400, **WORKLOAD},
                "run": {"run_id": rid, "study": "nb", "repetition": 1, "load_fraction": None, "order": 0},
                "raw_dir": str(tmp_path / "raw"),
            })
    finally:
        asyncio.run(down())
    rec = results.read_record(results.record_path(tmp_path / "raw", rid))
    assert rec is not None and rec["status"] == "ok", rec and rec["reason"]
    assert rec["achieved_rate"] > 0.9 * 400 and rec["latency"]["percentiles"]["99"] > 0
    nb = nbformat.read(out, as_version=4)
    shown = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert rid in shown and shown.count("image/png") == 2


def test_small_study_end_to_end(testbed, tmp_path):
    """Every planned run recorded once, in the planned order, each with its notebook; an
    unsupported mode is recorded as failed with the reason and the study goes on."""
    path = write_study(tmp_path, testbed, "e2e", modes=["host", "ipvlan", "flannel-host-gw"])
    raw, runs = tmp_path / "raw", tmp_path / "runs"
    summary = run_study(path, raw_dir=raw, runs_dir=runs, progress=False)
    recs = records(raw, "e2e")
    assert summary["executed"] == summary["planned"] == len(recs) == 6
    by_mode = Counter((r["mode"], r["status"]) for r in recs)
    assert by_mode[("host", "ok")] == 2 and by_mode[("flannel-host-gw", "ok")] == 2
    assert by_mode[("ipvlan", "failed")] == 2
    assert all(r["reason"].startswith("unsupported") for r in recs if r["mode"] == "ipvlan")
    manifest = read_manifest(manifest_path(raw, "e2e"))
    assert manifest["sessions"][-1]["ended"] == "complete"
    assert manifest["sessions"][-1]["executed"] == manifest["order"]
    assert sorted(r["order"] for r in recs) == list(range(6))
    assert manifest["hosts"]["client"]["kernel"] and manifest["hosts"]["server"]["nic"]["driver"] == "veth"
    assert manifest["git_commit"] == git_state()["commit"] and len(manifest["git_commit"]) == 40  # this checkout
    for r in recs:
        assert r["provenance"] == "e2e/manifest.json"
        nb = runs / f"{r['run_id']}.ipynb"
        assert nb.exists() == (r["status"] != "failed")
    assert no_pods_left(testbed)
    # Running again does nothing: every run is complete.
    again = run_study(path, raw_dir=raw, runs_dir=runs, progress=False)
    assert again["executed"] == 0 and again["already_done"] == 6


def test_resume_after_sigkill(testbed, tmp_path):
    """SIGKILL the runner after some runs; the rerun tears down the leftover mode, redoes only
    what is missing, and every run exists exactly once with no corrupt record."""
    path = write_study(tmp_path, testbed, "resume", load={"rates": [300, 600, 900]}, notebooks="none")
    raw, runs = tmp_path / "raw", tmp_path / "runs"
    code = f"from cnibench.study.study_run import run_study; run_study({str(path)!r}, raw_dir={str(raw)!r}, runs_dir={str(runs)!r}, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list((raw / "resume").rglob("rep*.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, "the runner ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_with = len(records(raw, "resume"))
    assert 2 <= killed_with < 6
    summary = run_study(path, raw_dir=raw, runs_dir=runs, progress=False)
    recs = records(raw, "resume")
    ids = [r["run_id"] for r in recs]
    assert len(ids) == len(set(ids)) == 6
    # the killed session's nginx (still holding the port) was swept, so no resumed run failed
    assert all(r["status"] != "failed" for r in recs), [r["reason"] for r in recs if r["status"] == "failed"]
    assert summary["already_done"] == killed_with and summary["executed"] == 6 - killed_with
    files = list((raw / "resume").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    for f in files:
        if f.name.startswith("rep") and f.suffix == ".json":
            assert results.read_record(f) is not None, f
    manifest = read_manifest(manifest_path(raw, "resume"))
    assert manifest["sessions"][0]["ended"] is None  # the killed session could not say how it ended
    assert manifest["sessions"][1]["ended"] == "complete"
    assert no_pods_left(testbed)


def test_quick_study_end_to_end(testbed, tmp_path):
    """studies/quick.yml as shipped, on the testbed, with a saved maximum for host/small: the
    study checks it with a probe (workload/calibrate.check_probe) and uses it. A full calibration
    takes 1-2 minutes of probes; the real search runs in test_calibration_searches_on_the_testbed,
    and in full in `invoke run-all` and benchmarks/hygiene_bench.py."""
    from cnibench.workload.calibrate import save_calibration

    study = load_study(STUDIES / "quick.yml")
    path = tmp_path / "quick.yml"
    data = yaml.safe_load((STUDIES / "quick.yml").read_text())
    data["inventory"] = str(testbed.path)
    data["workload"]["guard"] = WORKLOAD["guard"]  # mechanics, not noise (see WORKLOAD)
    data["quiet"] = {"max_wait_s": 0}  # look once, do not wait for a quiet machine
    data["workload"].update(duration_s=1, warmup_s=0.5)  # its structure as shipped; short windows
    data["notebooks"] = "none"  # notebooks: test_small_study_end_to_end
    path.write_text(yaml.safe_dump(data))
    saved = 20_000.0  # well under host/small's maximum here (56-67k req/s), so its check passes
    save_calibration(testbed.name, "host", "small", {"max_rate": saved, "mode": "host", "size": "small"})
    summary = run_study(path, raw_dir=tmp_path / "raw", runs_dir=tmp_path / "runs", progress=False)
    recs = records(tmp_path / "raw", "quick")
    assert len(recs) == summary["planned"] == len(study.modes) * len(study.sizes) * len(study.loads)
    assert all(r["status"] in ("ok", "invalid") for r in recs), [r["reason"] for r in recs if r["status"] == "failed"]
    assert sorted({r["target_rate"] for r in recs}) == pytest.approx([0.3 * saved, 0.5 * saved], rel=0.01)
    cal = read_manifest(manifest_path(tmp_path / "raw", "quick"))["calibration"]
    assert cal["max_rates"]["small"] == saved and cal["details"]["small"]["source"] == "saved"
    assert cal["details"]["small"]["check"]["ok"]
    # Its wall time is measured by benchmarks/pipeline_bench.py, not asserted here.


def test_calibration_searches_on_the_testbed(testbed, with_fleet):
    """The real search, bounded at 8,000 req/s so it stays short: it ramps from 2k with probes of
    1.5 s, judges each on p90 from the intended send time, and ends at the bound (2k, 4k, 8k on a
    quiet machine); then the closed-loop saturation run."""
    from cnibench.workload.bench import BenchSpec
    from cnibench.workload.calibrate import calibrate, max_sustainable
    from cnibench.workload.cli import mode_endpoint
    from cnibench.workload.guards import GuardLimits

    async def body(fleet):
        async with mode_endpoint(fleet, "host") as ep:
            spec = BenchSpec(mode="host", size="small", rate=1, duration_s=1.5, warmup_s=0.5,
                             guard=GuardLimits(**WORKLOAD["guard"]))  # mechanics, not noise (see WORKLOAD)
            return await calibrate(fleet, ep, spec, max_rate=8000, warmup_s=0.5)

    res = with_fleet(body)
    probes = res["probes"]
    assert (res["bound_ms"], res["percentile"]) == (10.0, 90)
    assert probes[0]["rate"] == 2000 and max(p["rate"] for p in probes) <= 8000  # ramps from 2,000, stops at the bound
    # each probe judged by the criterion: a valid run with p90 within 10 ms (a busy machine may fail some)
    assert all(p["ok"] == (p["status"] == "ok" and p["latency_us"] is not None and p["latency_us"] <= 10_000) for p in probes)
    assert res["max_rate"] == max_sustainable([(p["rate"], p["ok"]) for p in probes])
    assert res["saturation_rate"] and res["saturation_rate"] > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.long)])
def test_interrupt_tears_the_mode_down_and_keeps_records(testbed, tmp_path, sig):
    """Ctrl-C (SIGINT) or SIGTERM during a run: the mode is torn down, finished records stay,
    the session says it was interrupted."""
    path = write_study(tmp_path, testbed, "intr", modes=["flannel-host-gw"], load={"rates": [300, 600, 900]}, notebooks="none")
    raw = tmp_path / "raw"
    code = f"from cnibench.study.study_run import run_study; run_study({str(path)!r}, raw_dir={str(raw)!r}, runs_dir={str(tmp_path / 'runs')!r}, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list((raw / "intr").rglob("rep*.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)  # inside the next run
        assert proc.poll() is None, f"the runner ended before it could be interrupted: {proc.communicate()[1][-2000:]}"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    kept = records(raw, "intr")
    assert 1 <= len(kept) < 3
    assert no_pods_left(testbed)
    manifest = read_manifest(manifest_path(raw, "intr"))
    assert manifest["sessions"][-1]["ended"] == "interrupted"
