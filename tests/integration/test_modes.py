"""Every mode on the real testbed: up, verify (reachability and data path), down, and the
host state before up equals the state after down. Needs root (the testbed fixture skips)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnibench.errors import PlanError, UnsupportedFeature
from cnibench.modes import MODES, ModeSettings, get_mode, mode_down, mode_status, mode_up, mode_verify
from cnibench.modes.engine.apply import probe_kernel
from cnibench.modes.engine.hoststate import capture_host, capture_local, diff

ROOT = Path(__file__).resolve().parents[2]
FABRIC = "cnib-fabric"


async def snapshot(fleet) -> dict:
    snap = {h.name: await capture_host(h) for h in fleet}
    snap["@fabric"] = await capture_local(FABRIC)
    return snap


def state_diff(before: dict, after: dict) -> dict:
    return {h: d for h in before if (d := diff(before[h], after[h]))}


def ipvlan_missing_reason(with_fleet) -> str | None:
    async def body(fleet):
        try:
            await probe_kernel(fleet, get_mode("ipvlan").link_kinds, False)
        except UnsupportedFeature as exc:
            return str(exc)
        return None

    return with_fleet(body)


# flannel-host-gw and flannel-aws-vpc share vxlan's engine path and the static routes of
# calico-routed: the long tier (tests/conftest.py) brings them up too.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) if n in ("flannel-host-gw", "flannel-aws-vpc")
                                  else n for n in MODES.names()])
def test_mode_up_verify_down_leaves_hosts_as_found(with_fleet, name):
    if name == "ipvlan":
        reason = ipvlan_missing_reason(with_fleet)
        if reason:
            pytest.skip(reason)

    async def body(fleet):
        before = await snapshot(fleet)
        conns = {h.name: h._conn for h in fleet}
        endpoint = await mode_up(fleet, name)
        try:
            status = await mode_status(fleet)
            assert all(s and s["mode"] == name and s["status"] == "up" for s in status.values())
            if name == "ebpf-redirect":  # the state records what was built and for which kernel
                from cnibench.modes.kinds.bpf import source_hash

                built = next(iter(status.values()))["details"]["bpf"]
                assert set(built) == {h.name for h in fleet}
                assert all(b["source_sha256"] == source_hash("redirect") and "clang" in b["clang"] and b["kernel"] for b in built.values())
            result = await mode_verify(fleet, name)
            assert result.ok, str(result)
        finally:
            await mode_down(fleet, name)
        await mode_down(fleet, name)  # idempotent: nothing left to undo
        # the SSH sessions were never cut: the same connections still run commands
        for h in fleet:
            assert h._conn is conns[h.name]
            assert (await h.run(["true"])).ok
        after = await snapshot(fleet)
        return endpoint, state_diff(before, after)

    endpoint, d = with_fleet(body)
    assert endpoint.mode == name
    assert d == {}, "\n".join(f"{h}:\n" + "\n".join(v.values()) for h, v in d.items())


def test_ipvlan_on_a_kernel_without_it_fails_before_any_change(with_fleet):
    reason = ipvlan_missing_reason(with_fleet)
    if not reason:
        pytest.skip("this kernel has ipvlan: the refusal path cannot be exercised here")

    async def body(fleet):
        before = await snapshot(fleet)
        with pytest.raises(UnsupportedFeature, match="ipvlan.*Nothing was changed"):
            await mode_up(fleet, "ipvlan", get_mode("ipvlan").settings({"ipvlan_mode": "l3"}))
        assert all(s is None for s in (await mode_status(fleet)).values())
        return state_diff(before, await snapshot(fleet))

    assert with_fleet(body) == {}


def test_ebpf_on_a_kernel_without_a_helper_fails_before_any_change(with_fleet, monkeypatch):
    """A kernel that lacks a helper the programs call (simulated: one more helper, which no
    kernel has, is probed for): one message naming it, nothing changed, nothing built."""
    from cnibench.modes.kinds.bpf import object_path
    from cnibench.modes.kinds.ebpf import HELPERS, EbpfRedirect

    monkeypatch.setattr(EbpfRedirect, "helpers", HELPERS + ("bpf_cnib_no_such_helper",))

    async def body(fleet):
        await fleet.run(["rm", "-f", object_path("redirect")])
        before = await snapshot(fleet)
        with pytest.raises(UnsupportedFeature) as e:
            await mode_up(fleet, "ebpf-redirect")
        assert all(s is None for s in (await mode_status(fleet)).values())
        built = await fleet.client.run(["test", "-e", object_path("redirect")], check=False)
        return str(e.value), built.ok, state_diff(before, await snapshot(fleet))

    message, built, d = with_fleet(body)
    assert "helper bpf_cnib_no_such_helper" in message and "Nothing was changed" in message
    assert message.count("bpf_cnib_no_such_helper") == 2 and "helper bpf_redirect_peer" not in message  # per host, only it
    assert not built and d == {}


def test_bad_settings_are_refused_without_touching_the_hosts(with_fleet):
    async def body(fleet):
        before = await snapshot(fleet)
        with pytest.raises(PlanError, match="overlaps"):
            await mode_up(fleet, "flannel-vxlan", ModeSettings(cluster_cidr="198.18.0.0/16"))
        with pytest.raises(PlanError, match="too few"):
            await mode_up(fleet, "flannel-host-gw", ModeSettings(cluster_cidr="10.9.0.0/24", subnet_prefix=24))
        with pytest.raises(PlanError, match="Known modes"):
            await mode_up(fleet, "weave")
        return state_diff(before, await snapshot(fleet))

    assert with_fleet(body) == {}


def invoke(*args, inventory, check=True, env=None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "invoke", *args, "--inventory", str(inventory)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_cli_dry_run_then_up_status_verify_down_across_processes(testbed, with_fleet):
    inv = testbed.path
    before = with_fleet(snapshot)
    dry = invoke("mode.up", "--mode", "docker-bridge", "--dry-run", inventory=inv)
    assert "# server" in dry.stdout and "dnat to 172.17.0.2:8080" in dry.stdout
    assert with_fleet(lambda f: mode_status(f)) == {h.name: None for h in testbed.hosts}
    assert state_diff(before, with_fleet(snapshot)) == {}
    invoke("mode.up", "--mode", "docker-bridge", "--json", inventory=inv)
    try:
        status = json.loads(invoke("mode.status", "--json", inventory=inv).stdout)
        assert {s["mode"] for s in status.values()} == {"docker-bridge"}
        assert "OK" in invoke("mode.verify", "--mode", "docker-bridge", inventory=inv).stdout
        undo = invoke("mode.down", "--dry-run", inventory=inv).stdout
        assert "nft delete table ip cnib_docker" in undo
    finally:
        invoke("mode.down", inventory=inv)
    assert state_diff(before, with_fleet(snapshot)) == {}


# docker-bridge in the suite (nft, conntrack, a bridge); the other two in the long tier (tests/conftest.py).
@pytest.mark.parametrize("name", [pytest.param("flannel-vxlan", marks=pytest.mark.long), "docker-bridge",
                                  pytest.param("ebpf-redirect", marks=pytest.mark.long)])
def test_clean_after_a_crash_midway_through_up(testbed, with_fleet, name):
    """SIGKILL once the server has started half of its steps (the driver's journal says so)."""
    from cnibench.infra.config import load_inventory
    from cnibench.modes.engine.state import read_driver

    inv = testbed.path
    before = with_fleet(snapshot)
    argv = [sys.executable, "-m", "invoke", "mode.up", "--mode", name, "--inventory", str(inv)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    inventory = load_inventory(inv)

    def midway():
        server = read_driver(inventory)[0].get("server")
        return server is not None and server["started"] >= len(server["steps"]) // 2

    deadline = time.monotonic() + 60
    try:
        while not midway() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = read_driver(inventory)[0]
    assert left and all(d["status"] == "applying" for d in left.values()), "the process was not killed midway"
    assert state_diff(before, with_fleet(snapshot)) != {}
    out = invoke("clean", inventory=inv).stdout
    assert f"undid the stored plan of {name}" in out
    d = state_diff(before, with_fleet(snapshot))
    assert d == {}, d
    assert "nothing to clean" in invoke("clean", inventory=inv).stdout
