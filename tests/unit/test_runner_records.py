"""Runner bookkeeping without hosts: failed records, stale files, provenance parsers, views."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cnibench.study import matrix, provenance, runview
from cnibench import results
from cnibench.errors import UnsupportedFeature
from cnibench.results import failed_record
from cnibench.study.runner import finish_record, reason_of, window_seconds
from cnibench.study.store import clear_stale, stale_files
from cnibench.study.status import format_status, study_status
from cnibench.study.spec import parse_study
from cnibench.analysis.synthetic import Truth, make_record


def one_run():
    s = parse_study({"name": "t", "modes": ["host"], "sizes": ["small"], "load": {"rates": [1000]}}, Path("t.yml"))
    return matrix.plan(s)[0]


def test_failed_record_is_a_valid_write_once_record(tmp_path):
    run = one_run()
    rec = failed_record(run, "unsupported: no ipvlan module", {"duration_s": 5, "generator": "h2load"}, "a", "b", "t/manifest.json")
    assert results.validate_record(rec) == []
    path = results.write_record(tmp_path, rec)
    back = results.read_record(path)
    assert back["status"] == "failed" and back["reason"].startswith("unsupported")
    assert back["order"] == 0 and back["provenance"] == "t/manifest.json"
    with pytest.raises(FileExistsError):
        results.write_record(tmp_path, rec)


def test_finish_record_adds_order_and_link():
    run = one_run()
    rec = finish_record({"run_id": run.run_id, "order": None}, run, "t/manifest.json")
    assert rec["order"] == run.order and rec["provenance"] == "t/manifest.json"


def test_reasons_say_unsupported_or_failed():
    assert reason_of(UnsupportedFeature("no ipvlan module")) == "unsupported: no ipvlan module"
    assert reason_of(RuntimeError("boom")) == "failed: RuntimeError: boom"


def test_window_seconds():
    assert window_seconds({"status": "ok", "settings": {"duration_s": 6, "warmup_s": 2}}) == (6.0, 2.0)
    assert window_seconds({"status": "failed", "settings": {"duration_s": 6}}) == (0.0, 0.0)


def test_stale_files_are_cleared_and_torn_records_put_aside(tmp_path):
    run = one_run()
    good = results.write_record(tmp_path, failed_record(run, "failed: x", {}, "a", "b", None))
    temp = good.parent / ".rep2.json.abc123.tmp"
    temp.write_text('{"schema": 1, "run_')
    manifest_temp = tmp_path / "t" / ".manifest.json.k9x2.tmp"  # a SIGKILL during the manifest's write
    manifest_temp.write_text('{"study": ')
    torn = good.parent / "rep3.json"
    torn.write_text('{"schema": 1, "run_id": "t/host/small/1000/rep3"')
    temps, torns = stale_files(tmp_path / "t")
    assert temps == sorted([temp, manifest_temp]) and torns == [torn]
    lines = []
    clear_stale(tmp_path / "t", lines.append)
    assert not temp.exists() and not manifest_temp.exists() and not torn.exists() and good.exists()
    assert len(lines) == 1 and list(good.parent.glob("rep3.json.torn-*"))
    assert [r["run_id"] for r in results.iter_records(tmp_path, "t")] == [run.run_id]


def test_status_counts_records(tmp_path):
    study_file = tmp_path / "s.yml"
    study_file.write_text("name: s\nmodes: [host, macvlan]\nsizes: [small]\nload: {rates: [1000, 2000]}\n")
    run = next(r for r in matrix.plan(parse_study({"name": "s", "modes": ["host", "macvlan"], "sizes": ["small"], "load": {"rates": [1000, 2000]}}, study_file)) if r.mode == "macvlan")
    results.write_record(tmp_path / "raw", failed_record(run, "failed: x", {}, "a", "b", None))
    rows = study_status(study_file, tmp_path / "raw")
    assert [r["mode"] for r in rows] == ["host", "macvlan"]
    assert rows[1]["failed"] == 1 and rows[1]["missing"] == 1 and rows[0]["missing"] == 2
    assert "1 of 4 runs recorded (25 %)" in format_status(rows)


# --- provenance parsers, on real output of this machine's tools ---------------------------

ETHTOOL_I = """driver: veth
version: 1.0
firmware-version: 
expansion-rom-version: 
bus-info: 
supports-statistics: yes
"""

ETHTOOL_K = """Features for eth0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: off [fixed]
\ttx-checksum-ip-generic: on
scatter-gather: on
tcp-segmentation-offload: on
generic-receive-offload: off
rx-vlan-filter: off [fixed]
"""


def test_parse_nic_and_offloads():
    assert provenance.parse_ethtool_driver(ETHTOOL_I)["driver"] == "veth"
    off = provenance.parse_offloads(ETHTOOL_K)
    assert off["tcp-segmentation-offload"] is True and off["generic-receive-offload"] is False
    assert off["tx-checksum-ipv4"] is False and "Features for eth0" not in off


@pytest.mark.parametrize("text, version", [
    ("nginx version: nginx/1.22.1", "1.22.1"),
    ("h2load nghttp2/1.52.0", "1.52.0"),
    ("wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer", "4.1.0-3"),
    ("", None),
])
def test_parse_version(text, version):
    assert provenance.parse_version(text) == version


def test_host_facts_from_outputs():
    facts = provenance.host_facts_from_outputs({
        "kernel": (0, "6.1.0-18-amd64\n", ""),
        "cpu_count": (0, "36\n", ""),
        "cpuinfo": (0, "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2666 v3 @ 2.90GHz\n", ""),
        "nic_driver": (0, ETHTOOL_I, ""),
        "mtu": (0, "9001\n", ""),
        "offloads": (0, ETHTOOL_K, ""),
        "nginx": (0, "", "nginx version: nginx/1.22.1\n"),
        "tcpkali": (127, "", "sh: tcpkali: not found"),
        "os_release": (0, 'NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n', ""),
    })
    assert facts["kernel"] == "6.1.0-18-amd64" and facts["cpu_count"] == 36 and facts["mtu"] == 9001
    assert facts["cpu_model"].startswith("Intel(R) Xeon(R) CPU E5-2666")
    assert facts["nic"]["driver"] == "veth" and facts["offloads"]["scatter-gather"] is True
    assert facts["tools"]["nginx"] == "1.22.1" and facts["tools"]["tcpkali"] is None
    assert facts["os"] == "Debian GNU/Linux 12 (bookworm)"


def test_git_state_of_a_checkout_clean_dirty_and_none(tmp_path):
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout.strip()

    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    git("init", "-q")
    (tmp_path / "f").write_text("a\n")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    assert provenance.git_state(tmp_path) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "f").write_text("b\n")
    assert provenance.git_state(tmp_path)["dirty"] is True


def test_manifest_write_is_atomic_and_readable(tmp_path):
    p = provenance.manifest_path(tmp_path, "t")
    provenance.write_manifest(p, {"schema": provenance.MANIFEST_SCHEMA, "sessions": []})
    assert provenance.read_manifest(p)["sessions"] == []
    p.write_text("{torn")
    assert provenance.read_manifest(p) is None
    assert not [f for f in os.listdir(p.parent) if f.endswith(".tmp")]


# --- the run view ---------------------------------------------------------------------------

def synthetic(status="ok"):
    return make_record("t", "host", "small", 0.4, 1, Truth(between_sigma=0.0), np.random.default_rng(1), status=status, duration_s=5, order=3)


def test_percentile_curve_is_monotonic_and_ends_at_max():
    rec = synthetic()
    curve = runview.percentile_curve(rec)
    values = [v for _, v in curve]
    assert values == sorted(values) and values[0] > 0
    assert curve[-1] == (100, results.decode_histogram(rec["latency"]["histogram"]).get_max_value())
    assert runview.percentile_curve(synthetic("failed")) == []


def test_nines_axis():
    assert runview.nines(90) == pytest.approx(1) and runview.nines(99.9) == pytest.approx(3) and runview.nines(100) == 6


def test_summary_line_and_rows():
    rec = synthetic()
    line = runview.summary_line(rec, 7.25)
    assert rec["run_id"] in line and "ok" in line and "[7.2 s]" in line and "p99" in line
    assert "nginx died" in runview.summary_line(synthetic("failed"))
    rows = dict(runview.summary_rows(rec))
    assert rows["order in study"] == 3 and rows["latency max (us)"] == rec["latency"]["percentiles"]["100"]
