"""Issue 28 on the real testbed: a study that does not fit the hosts is refused in one message
before anything changes (acceptance 2), and a testbed whose sshd runs under a 256-file limit
stops `hosts.check --study` and `run-all` before any mode goes up (acceptance 3).

Both run `invoke` as a child process, as a user would; its output goes to tmp_path
(CNIBENCH_OUTPUT), never to data/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnibench.catalog import PREFIX
from cnibench.infra import testbed as tb
from cnibench.infra.config import ROOT

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def testbed_as_found(testbed_lock):
    """These tests bring their own testbeds up and down; afterwards the session's default testbed
    is back (the session fixture `testbed`, which later tests use, is up at most once)."""
    was_up = tb.status()["up"]
    yield
    if was_up:
        tb.down()
        tb.up()


def snapshot() -> dict:
    """What a refusal must not change: the project's namespaces and links, and the testbed's
    sshd (its pid files). Only the project's names: other work on this machine is not ours."""
    def out(argv):
        return subprocess.run(argv, capture_output=True, text=True).stdout

    return {"netns": sorted(n for n in out(["ip", "netns", "list"]).splitlines() if n.startswith(PREFIX)),
            "links": sorted(line.split()[0] for line in out(["ip", "-br", "link"]).splitlines()
                            if line.startswith(PREFIX)),
            "sshd": [h["sshd_pid"] for h in tb.status()["hosts"]]}


def invoke(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNIBENCH_OUTPUT": str(tmp_path / "out"), "CNIBENCH_LOCK_HELD": "1"}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_paper_on_the_testbed_is_refused_before_any_change(testbed_lock, tmp_path):
    tb.down()
    before = snapshot()
    r = invoke(tmp_path, "run-all", "--study", "studies/paper.yml", "--inventory", "inventories/testbed.yml")
    assert r.returncode != 0, r.stdout + r.stderr
    assert len(error_lines(r)) == 1, r.stderr
    assert "study paper does not fit these hosts (1 problem(s)); nothing was changed" in r.stderr
    assert "18 generator thread(s) and 18 nginx worker(s) need 36 physical cores" in r.stderr
    assert "estimated duration" not in r.stdout and "testbed: up" not in r.stdout
    assert snapshot() == before
    assert not (tmp_path / "out" / "data" / "raw" / "paper").exists()


def test_a_256_file_sshd_stops_hosts_check_and_run_all_before_any_mode(testbed_lock, tmp_path):
    marker = tmp_path / "testbed-256.yml"
    marker.write_text(yaml.safe_dump({"testbed": {"hosts": ["client", "server"], "sshd_nofile": 256}}))
    study = tmp_path / "nofile.yml"  # 30,000 req/s: 300 connections, 364 open files
    study.write_text(yaml.safe_dump({
        "name": "nofile", "inventory": str(marker), "modes": ["host"], "sizes": ["small"],
        "load": {"rates": [30000]}, "workload": {"duration_s": 2, "warmup_s": 0.5}, "notebooks": "none"}))
    tb.down()
    try:
        tb.up(sshd_nofile=256)
        before = snapshot()
        r = invoke(tmp_path, "hosts.check", "--study", str(study), "--inventory", str(marker))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "client: 300 connections need 364 open files; the hard limit is 256" in r.stdout, r.stdout + r.stderr
        r = invoke(tmp_path, "run-all", "--study", str(study), "--inventory", str(marker), "--keep")
        assert r.returncode == 2, r.stdout + r.stderr
        assert len(error_lines(r)) == 1, r.stderr
        assert "error: study nofile does not fit these hosts (1 problem(s)); nothing was changed" in r.stderr, r.stderr
        assert "the hard limit is 256" in r.stderr
        assert " up (rep" not in r.stdout and "calibrat" not in r.stdout, r.stdout
        assert snapshot() == before, (before, snapshot())  # no mode's namespace or link, the same sshd
        assert not list((tmp_path / "out" / "data" / "raw").glob("nofile/**/*.json"))
    finally:
        tb.down()


def test_a_second_testbed_client_is_planned_its_clock_measured_and_used(testbed_lock, tmp_path):
    """The testbed with two client hosts (--clients 2): hosts.plan plans both and measures their
    clocks against the driver's (one machine: well inside the 1 ms bound); run-all runs a host
    study at absolute rates from both (client on CPU 0, client2 on CPU 1), each record names
    both and its rate is the sum; a study with a container mode is refused in one message
    before any mode goes up, never run from one client silently."""
    import json

    marker = tmp_path / "testbed-2.yml"
    marker.write_text(yaml.safe_dump({"testbed": {"hosts": ["client", "client2", "server"], "clients": 2}}))

    def study(name, modes):
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump({
            "name": name, "inventory": str(marker), "modes": modes, "sizes": ["small"], "repetitions": 1,
            "load": {"rates": [4000]}, "workload": {"duration_s": 1, "warmup_s": 0.5}, "notebooks": "none",
            "quiet": {"max_wait_s": 0}}))
        return str(path)

    tb.down()
    try:
        tb.up(["client", "client2", "server"], clients=2)
        r = invoke(tmp_path, "hosts.plan", "--study", study("two", ["host"]), "--inventory", str(marker), "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        plan = json.loads(r.stdout)
        assert set(plan["plans"]) == {"client", "client2", "server"} and plan["problems"] == []
        assert set(plan["clock_offsets_s"]) == {"client", "client2"}
        assert all(abs(o) < 0.001 for o in plan["clock_offsets_s"].values()), plan["clock_offsets_s"]
        before = snapshot()
        r = invoke(tmp_path, "run-all", "--study", study("mixed", ["host", "macvlan"]), "--inventory", str(marker),
                   "--keep")
        assert r.returncode == 2 and len(error_lines(r)) == 1, r.stdout + r.stderr
        assert "the inventory names 2 client hosts (client, client2)" in r.stderr and "macvlan" in r.stderr, r.stderr
        assert " up (rep" not in r.stdout and snapshot() == before
        r = invoke(tmp_path, "run-all", "--study", study("two", ["host"]), "--inventory", str(marker), "--keep")
        assert r.returncode == 0, r.stdout + r.stderr
        recs = [json.loads(p.read_text()) for p in (tmp_path / "out" / "data" / "raw").glob("two/**/*.json")
                if p.name != "manifest.json"]
        recs = [x for x in recs if "run_id" in x]
        assert recs and all(x["status"] != "failed" for x in recs), [x.get("reason") for x in recs]
        for x in recs:
            assert [c["host"] for c in x["clients"]] == ["client", "client2"] and x["target_rate"] == 4000
            assert [c["client_cpus"] for c in x["settings"]["clients"]] == [[0], [1]]
    finally:
        tb.down()


def test_run_all_places_the_runs_by_the_plan_and_records_it(testbed_lock, tmp_path):
    """The wired path: run-all's precheck fits the study, its runs are pinned where the plan
    says (the testbed: generator on CPU 0, nginx on 1) and the manifest records the plan."""
    from cnibench import results
    from cnibench.pipeline import run_all
    from cnibench.study.provenance import manifest_path, read_manifest

    study = tmp_path / "placed.yml"
    study.write_text(yaml.safe_dump({
        "name": "placed", "inventory": str(ROOT / "inventories" / "testbed.yml"), "modes": ["host"],
        "sizes": ["small"], "load": {"rates": [300]}, "notebooks": "none", "quiet": {"max_wait_s": 0},
        "workload": {"duration_s": 1, "warmup_s": 0.5, "connections": 4, "guard": {
            "max_foreign_cpu": None, "max_steal": None, "max_hiccup_total_us": None, "max_send_lag_p99_us": None}}}))
    tb.down()
    run_all(str(study), raw_dir=tmp_path / "raw", runs_dir=tmp_path / "runs", reports_dir=tmp_path / "reports",
            out=lambda *_: None, progress=False)
    (rec,) = list(results.iter_records(tmp_path / "raw", "placed"))
    assert rec["status"] in ("ok", "invalid"), rec["reason"]
    assert tuple(rec["settings"]["client_cpus"]) == (0,) and tuple(rec["settings"]["server_cpus"]) == (1,)
    plan = read_manifest(manifest_path(tmp_path / "raw", "placed"))["sessions"][-1]["cpu_plan"]
    assert plan["problems"] == [] and plan["plans"]["client"]["threads"] == [0] and plan["plans"]["server"]["workers"] == [1]
