"""The local testbed: up, SSH with host-key checking, down without a trace (also after a failure)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cnibench.infra import testbed as tb
from cnibench.infra.config import RUN_DIR, load_inventory
from cnibench.errors import CommandFailed, HostKeyError
from cnibench.infra.hosts import Host


def machine_state() -> dict:
    """What the testbed could leave behind: namespaces, root links, sshd processes, files."""
    ns = json.loads(subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout or "[]")
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return {
        "netns": sorted(n["name"] for n in ns if n["name"].startswith("cnib")),
        "links": sorted(l["ifname"] for l in links if l["ifname"].startswith("cnib")),
        "procs": sorted(p for p in procs if "cnibench" in p and "sshd" in p),
        "files": sorted(str(p) for p in Path(RUN_DIR).rglob("*")) if Path(RUN_DIR).exists() else [],
    }


@pytest.fixture
def lifecycle(testbed_lock):
    """Tests that take the testbed down themselves; the shared testbed is restored after."""
    was_up = tb.status()["up"]
    tb.down()
    before = machine_state()
    try:
        yield before
    finally:
        tb.down()
        if was_up:
            tb.up()


def test_up_is_idempotent_and_down_leaves_nothing(lifecycle):
    inv1 = tb.up()
    st = tb.status()
    assert st["up"] and [h["name"] for h in st["hosts"]] == ["client", "server"]
    pids = [h["sshd_pid"] for h in st["hosts"]]
    assert tb.up() == inv1  # second up changes nothing
    assert [h["sshd_pid"] for h in tb.status()["hosts"]] == pids
    inv = load_inventory(inv1)
    addrs = [h.data_address for h in inv.hosts] + [h.address for h in inv.hosts]
    assert all(a.startswith("198.18.") or a.startswith("198.19.") for a in addrs)  # RFC 2544 range
    removed = tb.down()
    assert any("cnib-fabric" in r for r in removed)
    assert machine_state() == lifecycle
    assert tb.down() == []  # down twice is fine


def test_commands_over_ssh_on_each_host(with_fleet, testbed):
    async def body(fleet):
        out = await fleet.run(["ip", "netns", "identify"])
        hostnames = {name: r.stdout.strip() for name, r in out.items()}
        eth0 = await fleet.run(["ip", "-j", "addr", "show", "dev", "eth0"])
        return hostnames, {n: json.loads(r.stdout)[0]["addr_info"][0]["local"] for n, r in eth0.items()}

    netns, addrs = with_fleet(body)
    assert netns == {"client": "cnib-client", "server": "cnib-server"}  # each runs in its own host
    assert addrs == {h.name: h.data_address for h in testbed.hosts}
    assert all(h.host_key_policy == "verify" and h.known_hosts for h in testbed.hosts)


def test_command_failure_is_typed(with_fleet):
    async def body(fleet):
        with pytest.raises(CommandFailed) as err:
            await fleet.client.run(["ls", "/does-not-exist"])
        return err.value

    err = with_fleet(body)
    assert err.result.exit_status != 0 and "does-not-exist" in str(err)


def test_data_plane_connects_the_hosts(with_fleet, testbed):
    server = testbed.server.data_address

    async def body(fleet):
        return await fleet.client.run(["ping", "-c", "1", "-W", "2", server], check=False)

    r = with_fleet(body)
    if "not found" in r.stderr:
        pytest.skip("ping is not installed")
    assert r.ok, r.stderr


def test_the_fabric_runs_no_netfilter_on_bridged_frames(testbed):
    """The fabric stands for a switch: br_netfilter, where the kernel has it, is off there."""
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        pytest.skip("this kernel has no br_netfilter: nothing to turn off")
    r = subprocess.run(["ip", "netns", "exec", tb.FABRIC_NS, "sysctl", "-n", *tb.FABRIC_NO_NETFILTER],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["0"] * len(tb.FABRIC_NO_NETFILTER), r.stdout


@pytest.mark.parametrize("case", ["changed", "unknown"])
def test_wrong_host_key_is_refused(testbed, tmp_path, case):
    spec = testbed.client
    kh = tmp_path / "known_hosts"
    if case == "changed":  # the server's key, claimed for the client's address
        other = (tb.state_dir() / "server" / "ssh_host_ed25519_key.pub").read_text().split()
        kh.write_text(f"{spec.address} {other[0]} {other[1]}\n")
    else:
        kh.write_text("")
    host = Host(dataclasses.replace(spec, known_hosts=str(kh)))

    async def body():
        try:
            await host.run(["true"])
        finally:
            await host.close()

    with pytest.raises(HostKeyError, match="unknown or has changed"):
        asyncio.run(body())


def test_down_after_a_failing_test_leaves_nothing(lifecycle, tmp_path):
    """A test that fails midway with the testbed up: its fixtures still take the testbed down."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "conftest.py").write_text((root / "tests" / "conftest.py").read_text())
    (tmp_path / "test_fails.py").write_text(textwrap.dedent("""
        def test_fails_midway(with_fleet):
            async def body(fleet):
                await fleet.server.run(["ip", "netns", "add", "cnib-server-pod"])
                await fleet.server.start(["sleep", "300"], netns="cnib-server-pod")
                raise RuntimeError("boom")
            with_fleet(body)
    """))
    env = dict(os.environ, CNIBENCH_LOCK_HELD="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "1 failed" in proc.stdout, proc.stdout[-2000:]
    assert machine_state() == lifecycle
