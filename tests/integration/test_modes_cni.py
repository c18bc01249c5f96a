"""`implementation: cni` of every mode that has one, on the real testbed: up, verify, CHECK, down,
every host as found (iptables-nft tables, the CNI files included); the host and pod state
differ from the project's implementation only by the written list (modes/cni_differences.yml,
an unknown plugin version reports instead of failing); a SIGKILL with an ADD started, then
`invoke clean`, leaves nothing. Needs root and the reference plugins (else skipped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cnibench.errors import PlanError, UnsupportedFeature
from cnibench.infra import cni
from cnibench.modes import MODES, get_mode, mode_down, mode_status, mode_up, mode_verify
from cnibench.modes import cnidiff
from cnibench.modes.addressing import pod_netns
from cnibench.modes.engine.facts import gather_facts
from cnibench.modes.engine.hoststate import capture, capture_host, diff, settle
from cnibench.modes.engine.state import read_driver

from test_modes import ROOT, invoke, ipvlan_missing_reason, snapshot, state_diff

CNI_MODES = [n for n in MODES.names() if "cni" in MODES.implementations(n)]
# The suite drives each plugin chain once (macvlan/ipvlan, bridge+static under flannel-vxlan's
# backend, ptp, bridge+firewall+portmap); the other flannel backends reuse vxlan's pod side and
# run in the long tier (tests/conftest.py), as does SIGKILL mid-ADD beyond two chains.
LONG_UP = {"flannel-host-gw", "flannel-aws-vpc"}
KILL_KEEP = {"macvlan", "docker-bridge"}


def tiered(names, long_names):
    return [pytest.param(n, marks=pytest.mark.long) if n in long_names else n for n in names]
pytestmark = pytest.mark.skipif(not os.path.exists(f"{cni.CNI_PATH}/bridge"),
                                reason=f"needs the reference CNI plugins: {cni.INSTALL}")


def skip_without_driver(with_fleet, name):
    if name == "ipvlan":
        reason = ipvlan_missing_reason(with_fleet)
        if reason:
            pytest.skip(reason)


async def up_state(fleet) -> dict:
    """Each host's and each pod's captured state while a mode is up."""
    out = {}
    for h in fleet:
        out[f"{h.name}/host"] = await capture_host(h)
        ns = pod_netns(h.name)

        async def run(argv, h=h, ns=ns):
            return (await h.run(argv, netns=ns)).stdout

        await settle(run)  # IPv6 DAD over: no tentative address, every local route there
        out[f"{h.name}/pod"] = await capture(run)
    return out


async def result_of(host, net: dict) -> dict:
    """The result the plugins returned, rebuilt from the host (interfaces with their MACs), for CHECK."""
    ns = pod_netns(host.name)
    pod = json.loads((await host.run(["ip", "-j", "link", "show", "eth0"], netns=ns)).stdout)[0]
    links = json.loads((await host.run(["ip", "-j", "link", "show"])).stdout)
    first = net["plugins"][0]
    ifs = []
    if first.get("bridge"):
        br = next(lk for lk in links if lk["ifname"] == first["bridge"])
        ifs.append({"name": br["ifname"], "mac": br["address"]})
    if first["type"] in ("bridge", "ptp"):
        veth = next(lk for lk in links if lk["ifname"].startswith("veth"))
        ifs.append({"name": veth["ifname"], "mac": veth["address"]})
    ifs.append({"name": "eth0", "mac": pod["address"], "sandbox": f"/run/netns/{ns}"})
    ipam = first["ipam"]
    ips = [{**a, "interface": len(ifs) - 1} for a in ipam["addresses"]]
    return {"cniVersion": cni.CNI_VERSION, "interfaces": ifs, "ips": ips, "routes": ipam.get("routes", [])}


async def check_all(fleet, kind) -> list[str]:
    """CNI CHECK of each host's conflist, each plugin given the result; '' where it passes."""
    facts = await gather_facts(fleet, with_router=kind.needs_router)
    settings = kind.settings()
    nets, runtime = kind.networks(facts, settings), kind.runtime(facts, settings)
    errors = []
    for h in fleet:
        net = nets[h.name]
        att = cni.Attachment(h.name, pod_netns(h.name), pod_netns(h.name), "eth0",
                             runtime_config=runtime.get(h.name, {}))
        result = await result_of(h, net)
        for call in cni.plan("CHECK", net, att):
            r = await h.run(call.argv, input=call.stdin(result), check=False)
            if r.exit_status != 0:
                errors.append(f"{h.name} {call.plugin}: {cni.parse_error(r.stdout, r.stderr)}")
    return errors


@pytest.mark.parametrize("name", tiered(CNI_MODES, LONG_UP))
def test_cni_up_verify_check_down_and_the_differences_list(with_fleet, name):
    skip_without_driver(with_fleet, name)
    kind = get_mode(name, "cni")

    async def body(fleet):
        before = await snapshot(fleet)
        await mode_up(fleet, name, implementation="cni")
        try:
            status = await mode_status(fleet)
            assert all(s and s["implementation"] == "cni" for s in status.values())
            result = await mode_verify(fleet, name)
            assert result.ok, str(result)
            checked = await check_all(fleet, kind)
            versions = (await cni.versions(fleet.server, fleet.server.name, ["bridge"]))["version"]
            cni_up = await up_state(fleet)
        finally:
            await mode_down(fleet, name)
        after_cni = await snapshot(fleet)
        await mode_up(fleet, name)
        try:
            project_up = await up_state(fleet)
        finally:
            await mode_down(fleet, name)
        return before, after_cni, checked, versions, cni_up, project_up, await snapshot(fleet)

    before, after_cni, checked, version, cni_up, project_up, after = with_fleet(body)
    assert state_diff(before, after_cni) == {}, "the cni implementation did not leave the hosts as found"
    assert state_diff(before, after) == {}
    assert checked == [], checked  # CHECK is disabled in the conflist where the plugin's fails (portmap)
    renamed = cnidiff.renames(version, name)
    report = [cnidiff.compare(version, name, where.split("/")[1],
                              diff(cnidiff.normalise(project_up[where], renamed), cnidiff.normalise(cni_up[where])))
              for where in sorted(cni_up)]
    text = "\n".join(f"{r['side']}: {part}: {line}" for r in report for part, line in r["unexplained"])
    if all(r["known"] for r in report):
        assert text == "", f"differences not in the list for {version}/{name}:\n{text}"
    else:  # an unknown plugin version: the same comparison, reported
        print(f"plugin version {version} is not in the differences list; the differences found:\n{text}")


def test_unknown_implementation_is_refused_before_any_change(with_fleet):
    async def body(fleet):
        before = await snapshot(fleet)
        with pytest.raises(PlanError, match="has no implementation 'kubelet'. Known: project, cni"):
            await mode_up(fleet, "macvlan", implementation="kubelet")
        return state_diff(before, await snapshot(fleet))

    assert with_fleet(body) == {}


def test_ipvlan_cni_is_refused_cleanly_without_the_driver(with_fleet):
    if not ipvlan_missing_reason(with_fleet):
        pytest.skip("this kernel has the ipvlan driver")

    async def body(fleet):
        before = await snapshot(fleet)
        with pytest.raises(UnsupportedFeature, match="ipvlan"):
            await mode_up(fleet, "ipvlan", implementation="cni")
        return state_diff(before, await snapshot(fleet)), await mode_status(fleet)

    d, status = with_fleet(body)
    assert d == {} and all(s is None for s in status.values())


def test_a_plugin_error_is_one_message_and_everything_is_undone(with_fleet, monkeypatch):
    """A conflist the bridge plugin refuses (an MTU below its minimum): the plugin's own words,
    the host named, every change undone."""
    kind = get_mode("flannel-host-gw", "cni")
    original = type(kind).conflist

    def bad(self, h, net, mtu):
        conf = original(self, h, net, mtu)
        conf["plugins"][0]["mtu"] = 70000
        return conf

    monkeypatch.setattr(type(kind), "conflist", bad)

    async def body(fleet):
        before = await snapshot(fleet)
        with pytest.raises(Exception) as info:
            await mode_up(fleet, "flannel-host-gw", implementation="cni")
        return info.value, state_diff(before, await snapshot(fleet)), await mode_status(fleet)

    err, d, status = with_fleet(body)
    errors = list(getattr(err, "errors", {"one": err}).values())  # one host, or both (FleetError)
    for e in errors:
        assert isinstance(e, cni.CniError) and e.plugin == "bridge" and e.command == "ADD", str(err)
        assert str(e).startswith(f"{e.host}: CNI ADD of plugin 'bridge' failed") and e.msg, str(e)
        assert "every change undone" in str(e)
    assert d == {} and all(s is None for s in status.values())


def test_cli_dry_run_prints_the_conflist_and_each_plugin_call(testbed, with_fleet):
    before = with_fleet(snapshot)
    out = invoke("mode.up", "--mode", "docker-bridge", "--implementation", "cni", "--dry-run",
                 inventory=testbed.path).stdout
    assert '#   "name": "cnibdocker"' in out and "CNI_COMMAND=ADD" in out and "/usr/lib/cni/portmap <<'EOF'" in out
    assert '"portMappings": [{"containerPort": 8080' in out
    bad = invoke("mode.up", "--mode", "macvlan", "--implementation", "nope", "--dry-run", inventory=testbed.path,
                 check=False)
    assert bad.returncode != 0 and "has no implementation 'nope'" in bad.stdout + bad.stderr
    assert state_diff(before, with_fleet(snapshot)) == {}


@pytest.mark.parametrize("name", tiered([n for n in CNI_MODES if n != "ipvlan"], set(CNI_MODES) - KILL_KEEP))
def test_sigkill_with_an_add_started_then_clean_leaves_nothing(testbed, with_fleet, name):
    from cnibench.infra.config import load_inventory

    inv = testbed.path
    before = with_fleet(snapshot)
    argv = [sys.executable, "-m", "invoke", "mode.up", "--mode", name, "--implementation", "cni", "--inventory",
            str(inv)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    inventory = load_inventory(inv)

    def add_started():
        server = read_driver(inventory)[0].get("server")
        if server is None:
            return False
        started = server["steps"][:server["started"]]
        return any("CNI_COMMAND=ADD" in s["argv"] for s in started)

    deadline = time.monotonic() + 60
    try:
        while not add_started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = read_driver(inventory)[0]
    assert left and all(d["status"] == "applying" for d in left.values()), "the process was not killed midway"
    out = invoke("clean", inventory=inv).stdout
    assert f"undid the stored plan of {name}" in out
    d = state_diff(before, with_fleet(snapshot))
    assert d == {}, d
