"""Issue 27, acceptance 3: a study asking for 60,000 connections to one server on the testbed gets
them (the client namespace's ip_local_port_range widened for the run and restored after), or is
refused before anything starts when the host cannot hold them (the open-file hard limit).
Not timing-dependent: no quiet-machine check. Also the widen/restore scripts on a scratch
namespace (journal first, a crashed run's journal is the original that comes back)."""

from __future__ import annotations

import os
import subprocess

import pytest

from cnibench.errors import ConfigError
from cnibench.workload import ports
from cnibench.workload.bench import BenchSpec, probe_limits, validate_spec
from cnibench.workload.session import BenchSession

from workload_helpers import host_endpoint

pytestmark = [pytest.mark.timeout(600)]
PORT = 8097
CONNECTIONS = 60_000
MEMORY_NEEDED = 3 * 2**30  # the generator (~2 KB a connection), nginx, both sides' socket buffers


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))


def test_60000_connections_to_one_server_get_them_or_are_refused_before_anything(with_fleet, testbed):
    if _mem_available() < MEMORY_NEEDED:
        pytest.skip(f"needs {MEMORY_NEEDED / 2**30:.0f} GB available for 60,000 connections on both sides; "
                    f"this machine has {_mem_available() / 2**30:.1f} GB")
    ep = host_endpoint(testbed, port=PORT)
    sp = BenchSpec(mode="host", size="small", rate=30000.0, duration_s=2.0, warmup_s=1.0, connections=CONNECTIONS,
                   metrics=False, hiccup="off")

    async def body(fleet):
        before = (await fleet.client.run(["cat", ports.SYSCTL])).stdout.split()
        limits = await probe_limits(fleet)
        try:
            validate_spec(sp, limits)
        except ConfigError as exc:  # refused: nothing was started or changed
            after = (await fleet.client.run(["cat", ports.SYSCTL])).stdout.split()
            journal = await fleet.client.run(["test", "-e", ports.journal_path(None)], check=False)
            return "refused", str(exc), before, after, journal.exit_status, limits
        async with BenchSession(fleet, ep) as s:
            rec = await s.run(sp, run_id="test/host/small/30000/rep1", validated=True)
        after = (await fleet.client.run(["cat", ports.SYSCTL])).stdout.split()
        journal = await fleet.client.run(["test", "-e", ports.journal_path(None)], check=False)
        return "ran", rec, before, after, journal.exit_status, limits

    what, out, before, after, journal, limits = with_fleet(body)
    assert after == before and journal != 0, (before, after)  # left as found, no journal left
    if what == "refused":
        assert "open files; the hard limit is" in out and "60,064" in out, out
        pytest.skip(f"refused before anything started, as it must be on this host: {out}")
    rec = out
    assert rec["status"] != "failed", rec["reason"]
    assert rec["settings"]["connections"] == CONNECTIONS
    assert rec["counts"]["requests"] > 0 and rec["counts"]["errors"] == 0, rec["counts"]
    assert any("widened to 1024 65535" in n for n in rec["notes"]) and any("restored" in n for n in rec["notes"])
    print(f"60,000 connections: {rec['counts']}, peak RSS "
          f"{rec['settings']['generator_info'].get('peak_rss_kb')} kB, hard limit {limits.nofile_client_hard}")


def test_a_run_needing_more_ports_than_its_namespace_has_widens_it_and_restores_it(with_fleet, testbed):
    """The mechanism end to end at a size this machine holds: the client namespace narrowed to
    1,000 local ports (then put back), a run of 2,000 connections gets them all (widened for the
    run, restored after: the namespace left as found, no journal)."""
    ep = host_endpoint(testbed, port=PORT)
    sp = BenchSpec(mode="host", size="small", rate=4000.0, duration_s=1.0, warmup_s=0.5, connections=2000,
                   metrics=False, hiccup="off")

    async def body(fleet):
        original = (await fleet.client.run(["cat", ports.SYSCTL])).stdout.split()
        await fleet.client.run(["sh", "-c", f"echo 40000 40999 > {ports.SYSCTL}"])
        try:
            async with BenchSession(fleet, ep) as s:
                rec = await s.run(sp, run_id="test/host/small/4000/rep1")
            after = (await fleet.client.run(["cat", ports.SYSCTL])).stdout.split()
            journal = await fleet.client.run(["test", "-e", ports.journal_path(None)], check=False)
            return rec, after, journal.exit_status
        finally:
            await fleet.client.run(["sh", "-c", f"echo {' '.join(original)} > {ports.SYSCTL}"])

    rec, after, journal = with_fleet(body)
    assert after == ["40000", "40999"] and journal != 0, (after, journal)
    assert rec["status"] != "failed", rec["reason"]
    assert rec["counts"]["errors"] == 0 and rec["counts"]["ok"] > 0, rec["counts"]
    assert any("40000 40999 widened to 1024 65535" in n for n in rec["notes"]), rec["notes"]
    assert any("40000 40999 restored" in n for n in rec["notes"]), rec["notes"]


@pytest.mark.skipif(os.geteuid() != 0 or not (os.path.exists("/usr/sbin/ip") or os.path.exists("/sbin/ip")),
                    reason="needs root and ip(8) for a scratch network namespace")
def test_widen_and_restore_in_a_scratch_namespace(tmp_path, monkeypatch):
    """The real scripts on a real namespace: journal first, widen, restore, journal gone; a journal
    already there (a crashed run's) is the original that comes back."""
    ns = f"cnib-ports-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def sh(argv):
            return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True).stdout

        journal = tmp_path / "port-range.orig"
        monkeypatch.setattr(ports, "journal_path", lambda netns: str(journal))
        before = sh(["cat", ports.SYSCTL]).split()
        assert sh(ports.widen_argv(ns, 60000)).split() == ["widened", *before]
        assert journal.read_text().split() == before and sh(["cat", ports.SYSCTL]).split() == ["1024", "65535"]
        assert sh(ports.widen_argv(ns, 60000)).split()[0] == "kept"  # already wide: nothing journalled again
        assert sh(ports.restore_argv(ns)).split() == ["restored", *before] and not journal.exists()
        assert sh(["cat", ports.SYSCTL]).split() == before and sh(ports.restore_argv(ns)) == ""
        journal.write_text("30000 40000\n")  # a crashed run's journal: the true original
        sh(ports.widen_argv(ns, 60000))
        assert sh(ports.restore_argv(ns)).split() == ["restored", "30000", "40000"]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
