"""ebpf-redirect (issue 15) without any host: its plan, the encodings of its map values, the
parsers of its feature probe and counters, the build command, clean's sweep (pure)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from test_modes_plans import cmds, facts

from cnibench.errors import PlanError
from cnibench.modes import get_mode
from cnibench.modes.base import HostFacts
from cnibench.modes.clean import sweep_plan
from cnibench.modes.engine.hoststate import normalise
from cnibench.modes.kinds import ebpf
from cnibench.modes.kinds.bpf import build_argv, object_path, source, source_hash
from cnibench.modes.kinds.ebpf import bpf_mounts

MODE = get_mode("ebpf-redirect")


def plan(f=None, **settings):
    return MODE.plan(f or facts(), MODE.settings(settings))


def test_plan_builds_cilium_like_veth_pods_with_tc_programs_and_no_bridge():
    steps = plan()
    c = cmds(steps, "client")
    pins = ebpf.pin_dir("client")
    obj = object_path("redirect")
    assert c[:2] == ["sysctl -q -w net.ipv4.ip_forward=1", "ip netns add cnib-client-pod"]  # as Cilium sets it
    assert ("ip link add name cnibeclient index 1668180322 address 0e:ce:0a:f4:01:02 mtu 1500 type veth "
            "peer name eth0 address 0e:cb:0a:f4:01:02 mtu 1500 netns cnib-client-pod") in c
    assert "ip -n cnib-client-pod addr add 10.244.1.2/32 dev eth0" in c
    assert "ip -n cnib-client-pod route add default via 10.244.1.1 dev eth0" in c
    assert "ip -n cnib-client-pod neigh add 10.244.1.1 lladdr 0e:ce:0a:f4:01:02 dev eth0 nud permanent" in c
    assert "ip route add 10.244.2.0/24 via 198.18.0.12 dev eth0 proto 203" in c  # native, as host-gw
    assert f"mount -t bpf cnib-client {pins}" in c
    assert f"bpftool prog loadall {obj} {pins}/prog type classifier pinmaps {pins}/maps" in c
    # pods map: the pod's address -> host-side ifindex (big-endian), pod MAC, host-side MAC
    assert (f"bpftool map update pinned {pins}/maps/cnib_pods key hex 0a f4 01 02 value hex 63 6e 69 62 "
            "0e cb 0a f4 01 02 0e ce 0a f4 01 02") in c
    # peers map: LPM key (prefix length little-endian, subnet) -> data NIC ifindex 2, next hop 198.18.0.12
    assert f"bpftool map update pinned {pins}/maps/cnib_peers key hex 18 00 00 00 0a f4 02 00 value hex 00 00 00 02 c6 12 00 0c" in c
    assert "tc qdisc add dev cnibeclient clsact" in c
    assert f"tc filter add dev cnibeclient ingress pref 1 handle 1 bpf direct-action pinned {pins}/prog/cnib_from_pod" in c
    assert "tc qdisc add dev eth0 clsact" in c
    assert f"tc filter add dev eth0 ingress pref 1 handle 1 bpf direct-action pinned {pins}/prog/cnib_from_net" in c
    # no bridge, no nftables
    assert not any("type bridge" in x or " master " in x or x.startswith("nft") for x in c)
    # the maps are filled before the programs are attached; the data NIC last
    assert c.index(f"bpftool prog loadall {obj} {pins}/prog type classifier pinmaps {pins}/maps") < c.index("tc qdisc add dev cnibeclient clsact")
    assert c[-1].startswith("tc filter add dev eth0 ingress")


def test_every_object_has_an_undo_in_the_right_order():
    steps = [s for s in plan() if s.host == "server"]
    undo = {" ".join(s.argv): " ".join(s.undo) if s.undo else None for s in steps}
    pins = ebpf.pin_dir("server")
    assert undo[f"mkdir -p {pins}"] == f"rmdir {pins}"
    assert undo[f"mount -t bpf cnib-server {pins}"] == f"umount {pins}"
    assert undo["tc qdisc add dev eth0 clsact"] == "tc qdisc del dev eth0 clsact"
    assert undo["ip netns add cnib-server-pod"] == "ip netns del cnib-server-pod"
    assert any(u == "ip link del cnibeserver" for u in undo.values())
    # torn down in reverse: the data NIC's qdisc, then the mount (drops every pin), then the dir
    order = [u for u in reversed([" ".join(s.undo) for s in steps if s.undo])]
    assert order.index("tc qdisc del dev eth0 clsact") < order.index(f"umount {pins}") < order.index(f"rmdir {pins}")


def test_three_hosts_get_one_lpm_entry_per_peer():
    f = facts(names=("client", "server", "third"))
    c = cmds(MODE.plan(f, MODE.settings()), "third")
    peers = [x for x in c if "cnib_peers" in x]
    assert len(peers) == 2 and any("0a f4 01 00" in x for x in peers) and any("0a f4 02 00" in x for x in peers)


def test_bad_settings_and_facts_are_refused_with_one_message():
    with pytest.raises(PlanError, match="one L2 segment"):
        plan(facts(l2=False))
    with pytest.raises(PlanError, match="overlaps the data network"):
        plan(cluster_cidr="198.18.0.0/16")
    with pytest.raises(PlanError, match="MTU 1600"):
        plan(mtu=1600)
    with pytest.raises(PlanError, match="too few"):
        plan(cluster_cidr="10.244.0.0/24", subnet_prefix=24)
    unknown = HostFacts(tuple(replace(h, data_ifindex=0) for h in facts()))
    with pytest.raises(PlanError, match="ifindex of client's data interface eth0 is unknown"):
        plan(unknown)
    long = HostFacts(tuple(replace(h, name=n, l2_peers=(p,)) for h, n, p in zip(facts(), ("averylongname", "server"), ("server", "averylongname"))))
    with pytest.raises(PlanError, match="at most 15"):
        plan(long)


def test_mtu_follows_the_data_interface_and_the_override():
    assert any("mtu 9001 type veth" in x for x in cmds(plan(facts(mtu=9001))))
    assert any("mtu 1400 type veth" in x for x in cmds(plan(mtu=1400)))


def test_encodings():
    assert ebpf.hex_ip("10.244.1.2") == ["0a", "f4", "01", "02"]
    assert ebpf.hex_be32(2) == ["00", "00", "00", "02"] and ebpf.hex_le32(24) == ["18", "00", "00", "00"]
    assert ebpf.hex_be32(ebpf.POD_IFINDEX) == ["63", "6e", "69", "62"]  # "cnib"
    assert ebpf.pod_mac("10.244.1.2") == "0e:cb:0a:f4:01:02" and ebpf.host_mac("10.244.1.2") == "0e:ce:0a:f4:01:02"
    assert int(ebpf.pod_mac("10.0.0.1")[:2], 16) & 0b11 == 0b10  # locally administered, unicast


def probe_json(helpers=ebpf.HELPERS, syscall=True, cls=True, maps=ebpf.MAP_TYPES):
    return {"syscall_config": {"have_bpf_syscall": syscall}, "program_types": {"have_sched_cls_prog_type": cls},
            "map_types": {f"have_{m}_map_type": True for m in maps}, "helpers": {"sched_cls_available_helpers": list(helpers)}}


def test_missing_features_names_what_the_kernel_lacks():
    assert ebpf.missing_features(probe_json()) == []
    assert ebpf.missing_features(probe_json(syscall=False)) == ["the bpf() system call"]
    assert ebpf.missing_features(probe_json(helpers=("bpf_redirect_neigh",))) == [
        f"helper {h}" for h in ebpf.HELPERS if h != "bpf_redirect_neigh"]
    assert ebpf.missing_features(probe_json(cls=False, maps=("hash",))) == [
        "BPF program type sched_cls", "BPF map type lpm_trie", "BPF map type percpu_array"]
    # the integration test simulates a kernel without a helper this way
    assert ebpf.missing_features(probe_json(), helpers=ebpf.HELPERS + ("bpf_no_such_helper",)) == ["helper bpf_no_such_helper"]


def test_foreign_ingress_qdisc_is_recognised():
    assert ebpf.foreign_ingress("qdisc noqueue 0: root refcnt 2\nqdisc clsact ffff: parent ffff:fff1 \n")
    assert ebpf.foreign_ingress("qdisc ingress ffff: parent ffff:fff1 ----------------\n")
    assert not ebpf.foreign_ingress("qdisc mq 0: root \nqdisc fq_codel 0: parent :1 limit 10240p\n")


def test_stats_are_summed_over_cpus_in_both_bpftool_formats():
    btf = [{"key": 0, "values": [{"cpu": 0, "value": 2}, {"cpu": 1, "value": 3}]},
           {"key": 1, "values": [{"cpu": 0, "value": 4}, {"cpu": 1, "value": 0}]},
           {"key": 2, "values": [{"cpu": 0, "value": 0}]}, {"key": 3, "values": [{"cpu": 1, "value": 1}]}]
    assert ebpf.parse_stats(json.dumps(btf)) == {"neigh_ok": 5, "peer_ok": 4, "neigh_failed": 0, "peer_failed": 1}
    raw = [{"key": ["0x01", "0x00", "0x00", "0x00"], "values": [{"cpu": 0, "value": ["0x07", "0x01", "0", "0", "0", "0", "0", "0"]}]}]
    assert ebpf.parse_stats(json.dumps(raw))["peer_ok"] == 263


def test_forwarded_datagrams_from_proc_net_snmp():
    snmp = ("Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos\n"
            "Ip: 2 64 457269 0 0 17 0\nIcmp: InMsgs\nIcmp: 0\n")
    assert ebpf.parse_forwarded(snmp) == 17
    with pytest.raises(ValueError):
        ebpf.parse_forwarded("Icmp: InMsgs\nIcmp: 0\n")


def test_the_object_is_named_by_its_source_hash_and_built_for_bpf():
    assert b"bpf_redirect_neigh" in source("redirect") and b"bpf_redirect_peer" in source("redirect")
    assert object_path("redirect").endswith(f"/cnib-redirect-{source_hash('redirect')[:16]}.o")
    argv = build_argv("/x/a.c", "/x/a.o", "x86_64-linux-gnu")
    assert argv[:1] == ["clang"] and "-target" in argv and argv[argv.index("-target") + 1] == "bpf"
    assert {"-O2", "-g", "-c", "-I/usr/include/x86_64-linux-gnu"} <= set(argv)
    assert "-I" not in " ".join(build_argv("/x/a.c", "/x/a.o", None))


def test_state_capture_keeps_bpf_mounts_without_their_ids():
    info = ("22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n"
            "901 26 0:77 / /run/cnibench/bpf/cnib-client rw,relatime shared:400 - bpf cnib-client rw\n"
            "902 26 0:78 / /sys/fs/bpf rw - bpf bpf rw,mode=700\n")
    assert bpf_mounts(info) == ["/run/cnibench/bpf/cnib-client cnib-client", "/sys/fs/bpf bpf"]
    assert normalise("mounts", info.replace("901 26 0:77", "955 26 0:99")) == normalise("mounts", info)


def test_clean_sweeps_the_bpf_leftovers_it_owns_only():
    pins = ebpf.pin_dir("client")
    ours = "filter protocol all pref 1 bpf chain 0 handle 0x1 cnib_from_net:[*fsobj] direct-action not_in_hw id 487 name cnib_from_net tag ab jited"
    mounts = "".join(f"90{i} 26 0:7{i} / {m} rw - bpf x rw\n" for i, m in enumerate([pins, pins, ebpf.pin_dir("server"), "/sys/fs/bpf"]))
    left = MODE.leftovers("client", "eth0", {"filters": ours, "mountinfo": mounts, "pins": "yes\n"})
    flat = [" ".join(a) for a in sweep_plan("client", [], ["lo", "eth0", "cnibeclient"], [], {"eth0"}, left)]
    assert "ip link del cnibeclient" in flat and "tc qdisc del dev eth0 clsact" in flat
    assert flat.count(f"umount {pins}") == 2  # a stacked mount too
    assert f"rmdir {pins}" in flat and not any("server" in x or "/sys/fs/bpf" in x for x in flat)
    assert flat[-1] == "ip route flush table main proto 203"
    theirs = ours.replace("cnib_from_net", "cil_from_netdev")
    left = MODE.leftovers("client", "eth0", {"filters": theirs, "mountinfo": "", "pins": ""})
    flat = [" ".join(a) for a in sweep_plan("client", [], [], [], set(), left)]
    assert not any(x.startswith(("tc", "umount", "rmdir")) for x in flat)


def test_setup_cost_counts_the_bpf_objects():
    from cnibench.modes.engine.apply import setup_cost

    # per host: netns, veth, pod addr, 2 pod routes, neigh, pod /32 route, peer route,
    # bpffs mount, program load, 2 map entries, 2 qdiscs, 2 filters
    assert setup_cost(plan())["kernel_objects"] == 2 * 16
