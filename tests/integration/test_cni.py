"""The real reference CNI plugins (containernetworking-plugins) driven by infra/cni.py in
throwaway namespaces: ADD, CHECK, DEL, a plugin's error, a missing plugin, an ADD cut short."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile

import pytest

from cnibench.errors import HostError
from cnibench.infra import cni

from cni_helpers import NetnsHost, netns_add, netns_del, sh, snapshot

HOSTNS, POD = "cnib-t26h", "cnib-t26p1"
pytestmark = pytest.mark.skipif(not os.path.exists(f"{cni.CNI_PATH}/macvlan"),
                                reason=f"needs the reference CNI plugins: {cni.INSTALL}")


@pytest.fixture
def world(needs_root):
    """A host namespace with a data NIC (one end of a veth pair, the macvlan master), an empty pod namespace,
    and a cnib- data directory; all removed afterwards."""
    netns_add(HOSTNS)
    netns_add(POD)
    sh("ip", "-n", HOSTNS, "link", "add", "cnib-t26d", "type", "veth", "peer", "name", "cnib-t26dp")  # no dummy driver here
    sh("ip", "-n", HOSTNS, "link", "set", "cnib-t26dp", "up")
    sh("ip", "-n", HOSTNS, "link", "set", "cnib-t26d", "up")
    ddir = tempfile.mkdtemp(prefix="cnib-t26-")
    outside = {d: os.path.exists(d) for d in ("/run/cni", cni.FORBIDDEN_DIR)}
    try:
        yield NetnsHost(HOSTNS), cni.Attachment("cnib-t26h", "cnib-t26c1", POD), ddir
    finally:
        netns_del(POD, HOSTNS)
        shutil.rmtree(ddir, ignore_errors=True)
    # no plugin state outside our data directory (tuning keeps a backup in /run/cni/tuning)
    assert {d: os.path.exists(d) for d in outside} == outside


def macvlan_net(master="cnib-t26d"):
    return cni.conflist("cnib-t26-mv", [{"type": "macvlan", "master": master, "mode": "bridge",
                                         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/16", "rangeStart": "10.244.2.2", "rangeEnd": "10.244.2.254"}]]}}])


def bridge_net():
    return cni.conflist("cnib-t26-br", [{"type": "bridge", "bridge": "cnib-t26br", "isGateway": True, "hairpinMode": True,
                                         "ipam": {"type": "static", "addresses": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1"}],
                                                  "routes": [{"dst": "10.244.0.0/16", "gw": "10.244.1.1"}]}}])


def pod_addrs():
    return sh("ip", "-n", POD, "-o", "-4", "addr").split()


def test_macvlan_add_check_del_leaves_host_as_found(world):
    host, att, ddir = world
    before, pod_before = snapshot(HOSTNS), snapshot(POD)
    result = asyncio.run(cni.add(host, macvlan_net(), att, ddir))
    assert result["ips"][0]["address"] == "10.244.2.2/16"  # host-local's first address of the range
    assert "10.244.2.2/16" in pod_addrs()
    master = [link for link in snapshot(HOSTNS)["links"] if link[0] == "cnib-t26d"][0]
    assert master[3] == "1"  # the master is promiscuous while a macvlan hangs off it
    asyncio.run(cni.check(host, "cnib-t26-mv", att, ddir))
    with pytest.raises(HostError, match="already attached"):  # the stored record is never overwritten
        asyncio.run(cni.add(host, macvlan_net(), att, ddir))
    assert asyncio.run(cni.delete(host, "cnib-t26-mv", att, ddir))
    assert snapshot(HOSTNS) == before and snapshot(POD) == pod_before
    left = sorted(os.path.relpath(os.path.join(d, f), ddir) for d, _, fs in os.walk(ddir) for f in fs)
    assert left == ["ipam/cnib-t26-mv/last_reserved_ip.0", "ipam/cnib-t26-mv/lock"]  # host-local's, as measured
    assert asyncio.run(cni.clean(host, ddir)) == [] and not os.path.exists(ddir)


def test_bridge_static_del_leaves_what_is_documented_and_cleanup_removes_it(world):
    host, att, ddir = world
    before = snapshot(HOSTNS)
    result = asyncio.run(cni.add(host, bridge_net(), att, ddir))
    veth = result["interfaces"][1]["name"]
    assert veth.startswith("veth") and len(veth) == 12  # the plugin's own unprefixed name
    assert sh("ip", "netns", "exec", HOSTNS, "cat", f"/sys/class/net/{veth}/brport/hairpin_mode").strip() == "1"
    asyncio.run(cni.check(host, "cnib-t26-br", att, ddir))
    assert asyncio.run(cni.delete(host, "cnib-t26-br", att, ddir))
    after = snapshot(HOSTNS)
    assert [link[0] for link in after["links"] if link not in before["links"]] == ["cnib-t26br"]
    assert any("10.244.1.1/24" in a for a in after["addrs"]) and after["forward"] == "1" != before["forward"]
    assert not os.listdir(os.path.join(ddir, "attachments"))  # static IPAM keeps no files
    sh("ip", "-n", HOSTNS, "link", "del", "cnib-t26br")  # what the mode undoes itself
    sh("ip", "netns", "exec", HOSTNS, "sysctl", "-qw", f"net.ipv4.ip_forward={before['forward']}")
    assert snapshot(HOSTNS) == before


def test_plugin_error_is_one_message_and_everything_is_undone(world):
    """The second plugin of a chain fails after the first built the pod's interface: one error
    with the plugin's own words, and the first plugin's work undone by DEL."""
    host, att, ddir = world
    before, pod_before = snapshot(HOSTNS), snapshot(POD)
    net = macvlan_net()
    net["plugins"].append({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.cnib_no_such_key": "1"}})
    with pytest.raises(cni.CniError) as exc:
        asyncio.run(cni.add(host, net, att, ddir))
    text = str(exc.value)
    assert text.startswith("cnib-t26h: CNI ADD of plugin 'tuning' failed") and "cnib_no_such_key" in text
    assert exc.value.code is not None and "undone with DEL" in text, text
    assert snapshot(HOSTNS) == before and snapshot(POD) == pod_before
    assert asyncio.run(cni.records(host, ddir)) == []


def test_missing_plugin_changes_nothing(world):
    host, att, ddir = world
    net = cni.conflist("cnib-t26-x", [{"type": "cnib-no-such-plugin"}])
    with pytest.raises(HostError, match="cnib-no-such-plugin' is missing.*apt-get install"):
        asyncio.run(cni.add(host, net, att, ddir))
    assert not os.path.exists(os.path.join(ddir, "attachments"))


def test_add_cut_short_is_found_and_deleted_by_clean(world):
    """A session killed between two plugins of a chain: the record written before the first ADD
    is all `clean` has, and DEL without a result removes what the first plugin made."""
    host, att, ddir = world
    before = snapshot(HOSTNS)
    net = cni.with_data_dir(cni.conflist("cnib-t26-ch", [bridge_net()["plugins"][0], {"type": "tuning", "sysctl": {}}]), ddir)
    asyncio.run(cni._write_json(host, cni.record_path(ddir, cni.record_key(net["name"], att)), cni.record(net, att, None)))
    first = cni.plan("ADD", net, att)[0]
    asyncio.run(cni._call(host, att.host, first, None))  # the bridge plugin ran; the session "died" here
    assert any(link[0].startswith("veth") for link in snapshot(HOSTNS)["links"])
    assert asyncio.run(cni.clean(host, ddir)) == ["cnib-t26-ch-cnib-t26c1-eth0"]
    after = snapshot(HOSTNS)
    assert [link for link in after["links"] if link[0] != "cnib-t26br"] == before["links"]  # the bridge: documented
    assert not os.path.exists(ddir)
    assert "eth0" not in sh("ip", "-n", POD, "-o", "link")


def test_docker_chain_check_fails_in_portmap_and_del_leaves_its_tables(world):
    """podman's chain (bridge with ipMasq + firewall + portmap) through iptables-nft: CHECK fails
    in portmap (containernetworking/plugins#819), DEL leaves shared chains; the tables that were
    not there before are dropped, the bridge and ip_forward undone, and the host is as found."""
    host, _, ddir = world
    att = cni.Attachment("cnib-t26h", "cnib-t26c1", POD, runtime_config={"portMappings": [{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]})
    net = cni.conflist("cnib-t26-dk", [
        {"type": "bridge", "bridge": "cnib-t26dk0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "172.17.0.0/16", "gateway": "172.17.0.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "firewall", "backend": "iptables"},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}])
    before, tables_before = snapshot(HOSTNS), sh("ip", "netns", "exec", HOSTNS, "nft", "list", "tables")
    asyncio.run(cni.add(host, net, att, ddir))
    saved = sh("ip", "netns", "exec", HOSTNS, "iptables-save")
    assert "--to-destination 172.17.0.2:80" in saved and "-j CNI-FORWARD" in saved
    with pytest.raises(cni.CniError) as exc:
        asyncio.run(cni.check(host, "cnib-t26-dk", att, ddir))
    assert exc.value.plugin == "portmap" and "could not check ipv6 dnat" in exc.value.msg
    assert asyncio.run(cni.delete(host, "cnib-t26-dk", att, ddir))
    left = sh("ip", "netns", "exec", HOSTNS, "iptables-save")
    assert "172.17.0.2" not in left and ":CNI-HOSTPORT-DNAT" in left and ":CNI-FORWARD" in left  # as measured
    drops = cni.drop_new_tables(tables_before, sh("ip", "netns", "exec", HOSTNS, "nft", "list", "tables"))
    assert drops == [["nft", "delete", "table", "ip", "filter"], ["nft", "delete", "table", "ip", "nat"],
                     ["nft", "delete", "table", "ip6", "nat"]]
    for argv in drops:
        sh("ip", "netns", "exec", HOSTNS, *argv)
    sh("ip", "-n", HOSTNS, "link", "del", "cnib-t26dk0")
    sh("ip", "netns", "exec", HOSTNS, "sysctl", "-qw", f"net.ipv4.ip_forward={before['forward']}")
    assert snapshot(HOSTNS) == before


CHILD = """
import asyncio, json, sys
from cnibench.infra import cni
sys.path.insert(0, {helpers!r})
from cni_helpers import NetnsHost
net, att = json.loads(sys.argv[1]), cni.attachment_of(json.loads(sys.argv[2]))
asyncio.run(cni.add(NetnsHost({hostns!r}), net, att, sys.argv[3]))
"""


def test_sigkill_in_the_middle_of_add_then_clean_leaves_nothing(world):
    """A real session SIGKILLed just after it wrote the attachment's record, while the bridge
    plugin runs (then orphaned, it finishes): `clean` finds the attachment from its record alone
    and DELs it (no result stored: DEL without prevResult)."""
    import signal
    import subprocess
    import sys
    import time

    host, att, ddir = world
    before = snapshot(HOSTNS)
    net = cni.conflist("cnib-t26-k", [{**bridge_net()["plugins"][0], "ipam": macvlan_net()["plugins"][0]["ipam"]}])
    code = CHILD.format(helpers=os.path.dirname(__file__), hostns=HOSTNS)
    rec = cni.record_path(ddir, cni.record_key("cnib-t26-k", att))
    child = subprocess.Popen([sys.executable, "-c", code, json.dumps(net), json.dumps(cni.record(net, att, None)), ddir])
    deadline = time.monotonic() + 20
    while not os.path.exists(rec) and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.003)
    child.send_signal(signal.SIGKILL)
    child.wait()
    while subprocess.run(["pgrep", "-f", f"^{cni.CNI_PATH}/"], capture_output=True).returncode == 0:
        time.sleep(0.05)  # the orphaned plugin finishes its own call
    recs = asyncio.run(cni.records(host, ddir))
    assert [(r["containerId"], r["result"]) for r in recs] == [("cnib-t26c1", None)]  # killed before ADD ended
    assert asyncio.run(cni.clean(host, ddir)) == ["cnib-t26-k-cnib-t26c1-eth0"] and not os.path.exists(ddir)
    assert "eth0" not in sh("ip", "-n", POD, "-o", "link")
    after = snapshot(HOSTNS)
    assert not any(link[0].startswith("veth") for link in after["links"])
    sh("ip", "-n", HOSTNS, "link", "del", "cnib-t26br", check=False)  # DEL's leftovers, if the plugin got that far
    sh("ip", "netns", "exec", HOSTNS, "sysctl", "-qw", f"net.ipv4.ip_forward={before['forward']}")
    assert snapshot(HOSTNS) == before


def test_ptp_gateway_on_the_host_veth_and_check_needs_the_routes_gw(world):
    host, att, ddir = world
    before = snapshot(HOSTNS)
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/24"}]], "routes": [{"dst": "10.244.0.0/16", "gw": "10.244.3.1"}]}
    result = asyncio.run(cni.add(host, cni.conflist("cnib-t26-ptp", [{"type": "ptp", "mtu": 1500, "ipam": ipam}]), att, ddir))
    veth = result["interfaces"][0]["name"]
    assert f"{veth} inet 10.244.3.1/32" in " ".join(snapshot(HOSTNS)["addrs"])  # the gateway is the host veth's
    assert "10.244.3.2 dev " + veth in sh("ip", "-n", HOSTNS, "route")
    asyncio.run(cni.check(host, "cnib-t26-ptp", att, ddir))
    assert asyncio.run(cni.delete(host, "cnib-t26-ptp", att, ddir))
    # a route without gw: ADD routes it via the gateway, CHECK then looks for it without one
    ipam["routes"] = [{"dst": "10.244.0.0/16"}]
    asyncio.run(cni.add(host, cni.conflist("cnib-t26-ptp", [{"type": "ptp", "mtu": 1500, "ipam": ipam}]), att, ddir))
    with pytest.raises(cni.CniError, match="Expected Route .*GW:<nil>.* not found"):
        asyncio.run(cni.check(host, "cnib-t26-ptp", att, ddir))
    assert asyncio.run(cni.delete(host, "cnib-t26-ptp", att, ddir))
    after = snapshot(HOSTNS)
    assert after["forward"] == "1" and {**after, "forward": before["forward"]} == before  # ptp's one leftover
    sh("ip", "netns", "exec", HOSTNS, "sysctl", "-qw", f"net.ipv4.ip_forward={before['forward']}")


def test_ipvlan_refused_cleanly_on_a_kernel_without_it(world):
    host, att, ddir = world
    before = snapshot(HOSTNS)
    net = cni.conflist("cnib-t26-ipvl", [{"type": "ipvlan", "master": "cnib-t26d", "mode": "l2",
                                          "ipam": {"type": "static", "addresses": [{"address": "10.244.4.2/24"}]}}])
    try:
        asyncio.run(cni.add(host, net, att, ddir))
    except cni.CniError as exc:
        assert str(exc).startswith("cnib-t26h: CNI ADD of plugin 'ipvlan' failed (error code 999): failed to create ipvlan")
        assert "undone with DEL" in str(exc)
    else:  # a kernel with the ipvlan driver: the attachment works and DEL removes it
        assert "10.244.4.2/24" in pod_addrs()
        assert asyncio.run(cni.delete(host, "cnib-t26-ipvl", att, ddir))
    assert snapshot(HOSTNS) == before and asyncio.run(cni.records(host, ddir)) == []


def test_versions_of_the_installed_parts():
    """The record names what ran: the package version and each plugin's spec versions."""
    from cnibench.infra.local import LocalHost

    got = asyncio.run(cni.versions(LocalHost(), "@local", ["bridge", "macvlan"]))
    assert got["package"] == "containernetworking-plugins" and got["version"]
    assert all("1.0.0" in v for v in got["plugins"].values())
