"""Pieces behind the session/efficiency work that run without the testbed: the sampler's
immediate stop, compact per-CPU metrics (record size on a 36-CPU host), nginx liveness that
does not count zombies, the workload sweep of `invoke clean`, calibration's clear failure, and
which run notebooks are still to render."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from cnibench.analysis import dataset, synthetic
from cnibench import results
from cnibench.modes.clean import workload_sweep_argv
from cnibench.study.runbook import notebook_path
from cnibench.study.run_notebooks import notebooks_to_render
from cnibench.workload import calibrate as cal
from cnibench.workload import metrics, nginx
from cnibench.workload.bench import BenchSpec


# --- sampler --------------------------------------------------------------------------------

def test_sampler_stops_at_once_with_a_last_sample():
    """Period 60 s: a stop that waited for the period would hit the 20 s bound below. The sampler
    waits with `read -t` (no sleep child to see), so its first sample is given 3 s."""
    p = subprocess.Popen(metrics.sampler_argv(60.0, None), stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the first sample is out once /proc/stat was read
            time.sleep(0.2)
            if p.poll() is not None:
                break
            if os.path.exists(f"/proc/{p.pid}") and b"sleep" in subprocess.run(["pgrep", "-P", str(p.pid), "-a"], capture_output=True).stdout:
                break
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    assert len(metrics.split_samples(out)) == 2  # the first one, and the one taken on TERM
    rows = metrics.intervals(out, "lo")
    assert len(rows) == 1 and rows[0]["dt"] < 60


def _stat(ncpu: int, tick: int) -> str:
    lines = [f"cpu  {tick * ncpu} 0 {tick} {tick} 0 0 0 0 0 0"]
    for c in range(ncpu):
        u, s, idle, irq, soft = 37 * tick + c, 11 * tick + 2 * c, 50 * tick + 3 * c, tick, 2 * tick + c
        lines.append(f"cpu{c} {u} 0 {s} {idle} 0 {irq} {soft} 0 0 0")
    return "\n".join(lines) + f"\nintr {1000 * tick} 0\nctxt {5000 * tick}\n"


NETDEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
  eth0: {b} {p} 0 0 0 0 0 0 {b} {p} 0 0 0 0 0 0
"""
SNMP = """Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 5 6 0 0 2 100 200 {r} 0 1 0
"""


def sampler_text(ncpu: int, seconds: int) -> str:
    out = []
    for t in range(seconds + 1):
        out.append(f"@@sample {100.0 + t * 1.0:.2f}\n@@stat\n{_stat(ncpu, 100 * (t + 1))}@@netdev\n"
                   f"{NETDEV.format(b=3_000_000 * t, p=20_000 * t)}@@snmp\n{SNMP.format(r=t)}"
                   f"@@snmp-container\n{SNMP.format(r=t)}@@end\n")
    return "".join(out)


def test_compact_cpu_arrays_keep_the_values_and_read_back():
    rows = metrics.intervals(sampler_text(12, 3), "eth0")
    c = metrics.compact(rows)
    assert c["cpus"][:3] == ["cpu0", "cpu1", "cpu2"] and c["cpus"][-1] == "cpu11"  # numeric order
    host = {"period_s": 1.0, "interface": "eth0", **c}
    for row, comp in zip(rows, results.metrics_rows(host)):
        back = metrics.expand_cpu(host, comp)
        for name, kinds in row["cpu"].items():
            for k, v in kinds.items():
                assert back[name][k] == pytest.approx(v, abs=0.05)
    # the analysis reads both shapes to the same CPU cost per request
    roles = {"client": "client"}
    old = dataset.cpu_per_request({"client": {"period_s": 1.0, "samples": rows}}, 1000.0, roles)
    new = dataset.cpu_per_request({"client": host}, 1000.0, roles)
    assert old and set(old) == set(new)
    bound = 0.05 / 100 * 12 / 1000.0 * 1e6  # rounding to 0.1 %: <= 0.05 % per CPU, 12 CPUs, 1000 req/s
    for k in old:
        assert new[k] == pytest.approx(old[k], abs=bound)


def test_a_10_s_run_on_36_cpu_hosts_fits_in_64_kb():
    rng = np.random.default_rng(3)
    rec = synthetic.make_record("size", "host", "small", 0.5, 1, synthetic.Truth(), rng, duration_s=10, warmup_s=1)
    text = sampler_text(36, 12)  # warm-up + window + the last sample on stop
    rec["metrics"] = {h: {"period_s": 1.0, "interface": "eth0", **metrics.compact(metrics.intervals(text, "eth0"))}
                      for h in ("client", "server")}
    assert len(rec["metrics"]["server"]["cpus"]) == 36 and len(rec["metrics"]["server"]["dt"]) == 12
    assert results.validate_record(rec) == []
    size = len(json.dumps(rec).encode())
    assert size <= 64 * 1024, size
    # the old per-CPU dicts would not have fitted: the point of the compact shape
    old = dict(rec, metrics={h: {"period_s": 1.0, "samples": metrics.intervals(text, "eth0")} for h in ("client", "server")})
    assert len(json.dumps(old).encode()) > size


# --- nginx liveness and the workload sweep ---------------------------------------------------

def _sh(script, *pids) -> int:
    return subprocess.run(["sh", "-c", script, "cnib", *map(str, pids)]).returncode


def test_a_zombie_does_not_count_as_running():
    p = subprocess.Popen(["sleep", "100"])
    try:
        assert _sh(nginx.ALL_RUNNING_SH, p.pid) == 0 and _sh(nginx.ANY_RUNNING_SH, p.pid) == 0
        p.kill()
        while "State:\tZ" not in open(f"/proc/{p.pid}/status").read():  # exited, not reaped yet
            time.sleep(0.01)
        assert subprocess.run(["kill", "-0", str(p.pid)]).returncode == 0  # why kill -0 is not enough
        assert _sh(nginx.ANY_RUNNING_SH, p.pid) == 1 and _sh(nginx.ALL_RUNNING_SH, p.pid, os.getpid()) == 1
    finally:
        p.kill()
        p.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_workload_sweep_kills_only_our_nginx_and_removes_only_our_directories(tmp_path):
    """A real nginx left by a killed run is killed; a pid file naming any other process (a
    reused pid), 0 or 1 kills nothing."""
    import shutil

    if not shutil.which("nginx"):
        pytest.skip("needs nginx (apt-get install -y nginx-light)")
    w = tmp_path / "workload"
    for d in ("nginx-7070", "nginx-9090", "h2load-123-456", "tcpkali-1-2", "keep-me"):
        (w / d).mkdir(parents=True)
    spec = nginx.NginxSpec(bind="127.0.0.1", port=_free_port(), cpus=None, run_dir=str(w / "nginx-8080"))
    (w / "nginx-8080" / "www").mkdir(parents=True)
    (w / "nginx-8080" / "nginx.conf").write_text(nginx.render_config(spec))
    subprocess.run(nginx.nginx_argv(spec), check=True, timeout=20)
    master = int((w / "nginx-8080" / "nginx.pid").read_text())
    workers = [int(x) for x in open(f"/proc/{master}/task/{master}/children").read().split()]
    other = subprocess.Popen(["sleep", "100"])  # the pid an old nginx.pid names now belongs to this
    (w / "nginx-9090" / "nginx.pid").write_text(f"{other.pid}\n")
    (w / "nginx-7070" / "nginx.pid").write_text("0\n")
    try:
        # own session: were "0" used, it would kill the sweep's own process group, not pytest
        r = subprocess.run(workload_sweep_argv(str(tmp_path)), capture_output=True, text=True, timeout=20, start_new_session=True)
        assert r.returncode == 0, r
        deadline = time.monotonic() + 10
        while _sh(nginx.ANY_RUNNING_SH, master, *workers) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sh(nginx.ANY_RUNNING_SH, master, *workers) == 1, "our nginx survived the sweep"
        assert other.poll() is None, "a process that is not our nginx was killed"
    finally:
        other.kill()
        other.wait()
        for p in (master, *workers):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert sorted(os.listdir(w)) == ["keep-me"]
    assert sorted(r.stdout.split()) == sorted(str(w / d) for d in ("nginx-7070", "nginx-8080", "nginx-9090", "h2load-123-456", "tcpkali-1-2"))
    assert subprocess.run(workload_sweep_argv(str(tmp_path / "nothing"))).returncode == 0


# --- calibration -----------------------------------------------------------------------------

def test_calibration_without_a_valid_rate_is_a_clear_error_and_is_not_saved(tmp_path, monkeypatch):
    base = BenchSpec(mode="host", size="small", rate=1, duration_s=2, warmup_s=0.5, connections=16)
    log = [{"rate": 2000.0, "ok": False, "status": "failed", "reason": "failed: nginx health check of http://x failed: no answer", "latency_us": None},
           {"rate": 1000.0, "ok": False, "status": "ok", "reason": "", "latency_us": 25000}]
    msg = cal.no_valid_rate_message(base, log, 10.0, 90)
    assert "host/small found no valid rate with p90 <= 10 ms" in msg and "nginx health check" in msg and "p90 25.00 ms" in msg
    monkeypatch.setattr(cal, "CALIBRATION", tmp_path)
    with pytest.raises(cal.CalibrationFailed):
        cal.save_calibration("inv", "host", "small", {"max_rate": 0.0})
    assert not any(tmp_path.rglob("*.json"))
    cal.save_calibration("inv", "host", "small", {"max_rate": 5000.0})
    assert cal.load_calibration("inv", "host", "small")["max_rate"] == 5000.0


# --- run notebooks after the matrix ------------------------------------------------------------

def test_notebooks_to_render_are_records_without_an_up_to_date_notebook(tmp_path):
    raw, runs = tmp_path / "raw", tmp_path / "runs"
    paths = synthetic.write_study(raw, "nbs", modes=("host",), sizes=("small",), loads=(0.3, 0.5), reps=2, duration_s=2)
    ids = [json.loads(p.read_text())["run_id"] for p in paths]
    failed = synthetic.make_record("nbs", "host", "small", 0.7, 1, synthetic.Truth(), np.random.default_rng(1), status="failed")
    results.write_record(raw, failed)  # nothing to show: no notebook
    missing = "nbs/host/small/99/rep1"  # planned, not recorded yet
    assert notebooks_to_render(ids + [missing, failed["run_id"]], raw, runs) == ids
    for rid in ids[:2]:
        nb = notebook_path(runs, rid)
        nb.parent.mkdir(parents=True, exist_ok=True)
        nb.write_text("{}")
    old = notebook_path(runs, ids[1])
    os.utime(old, (1, 1))  # older than its record: a redone run
    assert notebooks_to_render(ids + [missing], raw, runs) == ids[1:]
