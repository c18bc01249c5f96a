"""ebpf-redirect: Cilium's veth datapath with BPF host routing, reduced to pod-to-pod forwarding.

Per host: a veth pair per pod (host side `cnibe<host>`, no bridge), the pod's /32 address from
the host's pod subnet with a default route via the subnet's first address (Cilium's router IP),
whose MAC is the host side's (a permanent neighbour entry stands in for Cilium's ARP responder).
The project's tc programs (bpf/redirect.c, built on the host at set-up) sit on ingress of the
host-side veth and of the data NIC:

    pod -> peer pod   cnib_from_pod: bpf_redirect_neigh straight out of the data NIC, the next
                      hop (the peer's data address) taken from the LPM map cnib_peers;
    peer -> pod       cnib_from_net: bpf_redirect_peer into the pod's namespace (map cnib_pods).

ip_forward is on, as Cilium sets it: traffic the programs pass (a pod's DNS query, anything not
for a peer's pod) is routed by the host as in the routed modes; pod-to-pod packets never are
(Ip: ForwDatagrams stays flat during the flow, which verify checks). Routes to peers' pod
subnets are added natively as in flannel-host-gw, for the host's own and the passed traffic. Programs and maps are pinned in a bpffs the mode mounts per host at
/run/cnibench/bpf/cnib-<host> (the testbed's hosts share one mount namespace: each has its own
mount, so none is unmounted under another); unmounting it drops every pin.

Map values are written by `bpftool map update` steps (pure: derived from the facts): the
host-side veth is created with a fixed ifindex (POD_IFINDEX, ifindexes are per network
namespace) and fixed MACs, so the plan knows everything the maps hold.

Before any change (before_up): the kernel's BPF features and helpers (`bpftool feature probe`),
clsact and cls_bpf (in a throwaway namespace), the tools, a little-endian CPU, a data NIC whose
ingress no other tc program owns; then the object is built. Anything missing refuses the mode
with one message naming it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Mapping

from ...catalog import PREFIX
from ...errors import PlanError, UnsupportedFeature
from ...infra.config import RUN_DIR
from ...parsing import ip_json
from ..base import (
    HOST_RE,
    ROUTE_PROTO,
    VETH,
    Check,
    Endpoint,
    HostFact,
    HostFacts,
    ModeSettings,
    NetworkMode,
    Step,
    forwarding_step,
    ifname,
    mtu_for,
    nth,
    pod_netns,
    pod_subnets,
    pod_to_pod_endpoint,
    step,
)
from ..engine import pieces
from ..engine.pathcheck import parse_rule_counters
from ..engine.pieces import require_l2
from .bpf import ensure_object, object_path

BPF_ROOT = f"{RUN_DIR}/bpf"  # the bpffs mounts of this mode, one per host
# Pins under the mode's bpffs root and the usual bpffs (a constant script; the root is $1).
BPF_PINS_SH = 'find "$1" /sys/fs/bpf -mindepth 1 2>/dev/null; true'
OUR_PROGRAM = re.compile(rf"\bname {PREFIX}_\w+")  # a tc filter running one of our programs


def pin_dir(host: str) -> str:
    """The host's own bpffs mount: programs under prog/, maps under maps/."""
    return f"{BPF_ROOT}/{PREFIX}-{host}"


def bpf_mounts(mountinfo: str) -> list[str]:
    """'mount point source' of every bpffs in /proc/self/mountinfo (pure; ids left out)."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and tail[:1] == ["bpf"]:
            out.append(f"{fields[4]} {tail[1] if len(tail) > 1 else ''}".rstrip())
    return sorted(out)


PROGRAM = "redirect"  # bpf/redirect.c
FROM_POD, FROM_NET = f"{PREFIX}_from_pod", f"{PREFIX}_from_net"
PODS_MAP, PEERS_MAP, STATS_MAP = f"{PREFIX}_pods", f"{PREFIX}_peers", f"{PREFIX}_stats"
STATS = ("neigh_ok", "peer_ok", "neigh_failed", "peer_failed")  # cnib_stats' keys, in order
POD_IFINDEX = int.from_bytes(b"cnib", "big")  # 1668180322: the host-side veth's ifindex
FILTER = ["pref", "1", "handle", "1", "bpf", "direct-action"]

HELPERS = ("bpf_redirect_neigh", "bpf_redirect_peer", "bpf_map_lookup_elem", "bpf_skb_store_bytes", "bpf_l3_csum_replace")
MAP_TYPES = ("hash", "lpm_trie", "percpu_array")
TOOLS = {"clang": "clang", "bpftool": "bpftool", "tc": "iproute2"}


def veth_name(host: str) -> str:
    return ifname(f"{PREFIX}e{host}")


def pod_mac(address: str) -> str:
    return "0e:cb:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def host_mac(address: str) -> str:
    return "0e:ce:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def hex_ip(address) -> list[str]:
    return [f"{b:02x}" for b in ipaddress.IPv4Address(str(address)).packed]


def hex_be32(n: int) -> list[str]:
    return [f"{b:02x}" for b in int(n).to_bytes(4, "big")]


def hex_le32(n: int) -> list[str]:
    return [f"{b:02x}" for b in int(n).to_bytes(4, "little")]


def hex_mac(mac: str) -> list[str]:
    return mac.lower().split(":")


def map_update(host: str, name: str, key: list[str], value: list[str]) -> Step:
    """Gone with the bpffs mount: no undo of its own."""
    return step(host, ["bpftool", "map", "update", "pinned", f"{pin_dir(host)}/maps/{name}", "key", "hex", *key, "value", "hex", *value])


class EbpfRedirect(NetworkMode):
    name = "ebpf-redirect"
    link_kinds = (VETH,)
    owned_links = (rf"{PREFIX}e{HOST_RE}",)
    creates = (r"tc (qdisc|filter) add\b", r"mount -t bpf\b", r"bpftool (prog loadall|map update)\b")
    helpers = HELPERS  # probed before any change (tests add one the kernel lacks)

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        subnets = pod_subnets(hosts, settings)
        require_l2(hosts, self.name)
        obj = object_path(PROGRAM)
        steps: list[Step] = []
        for h in hosts:
            if h.data_ifindex <= 0:
                raise PlanError(f"{self.name}: the ifindex of {h.name}'s data interface {h.data_interface} is unknown. Gather the facts again (facts.py).")
            net = subnets[h.name]
            pod, gw = nth(net, 2), nth(net, 1)
            veth, ns, pins, mtu = veth_name(h.name), pod_netns(h.name), pin_dir(h.name), mtu_for(h, settings)
            steps.append(forwarding_step(h))
            steps += pieces.netns(h)
            add = ["ip", "link", "add", "name", veth, "index", POD_IFINDEX, "address", host_mac(pod), "mtu", mtu,
                   "type", "veth", "peer", "name", pieces.POD_IF, "address", pod_mac(pod), "mtu", mtu, "netns", ns]
            steps.append(step(h.name, add, ["ip", "link", "del", veth]))
            steps.append(step(h.name, ["ip", "link", "set", veth, "up"]))
            steps += pieces.pod_address(h, f"{pod}/32", [[gw, "dev", pieces.POD_IF, "scope", "link"], ["default", "via", gw, "dev", pieces.POD_IF]])
            steps.append(step(h.name, ["ip", "-n", ns, "neigh", "add", gw, "lladdr", host_mac(pod), "dev", pieces.POD_IF, "nud", "permanent"]))
            # The host's own traffic to its pod, and to peers' pods (native routes, as host-gw):
            # the pods' traffic never uses them, the programs redirect it first.
            steps.append(step(h.name, ["ip", "route", "add", f"{pod}/32", "dev", veth, "scope", "link", "proto", ROUTE_PROTO]))
            steps += [pieces.host_route(h, subnets[p.name], p.data_address, h.data_interface) for p in hosts.peers(h.name)]
            # bpffs, programs and maps: unmounting drops every pin, so only the mount has an undo.
            steps.append(step(h.name, ["mkdir", "-p", pins], ["rmdir", pins]))
            steps.append(step(h.name, ["mount", "-t", "bpf", f"{PREFIX}-{h.name}", pins], ["umount", pins]))
            steps.append(step(h.name, ["bpftool", "prog", "loadall", obj, f"{pins}/prog", "type", "classifier", "pinmaps", f"{pins}/maps"]))
            steps.append(map_update(h.name, PODS_MAP, hex_ip(pod), hex_be32(POD_IFINDEX) + hex_mac(pod_mac(pod)) + hex_mac(host_mac(pod))))
            for p in hosts.peers(h.name):
                pnet = subnets[p.name]
                steps.append(map_update(h.name, PEERS_MAP, hex_le32(pnet.prefixlen) + hex_ip(pnet.network_address),
                                        hex_be32(h.data_ifindex) + hex_ip(p.data_address)))
            # clsact on the veth goes with it; on the data NIC it is ours to remove (before_up
            # refused a NIC that already had one).
            steps.append(step(h.name, ["tc", "qdisc", "add", "dev", veth, "clsact"]))
            steps.append(step(h.name, ["tc", "filter", "add", "dev", veth, "ingress", *FILTER, "pinned", f"{pins}/prog/{FROM_POD}"]))
            steps.append(step(h.name, ["tc", "qdisc", "add", "dev", h.data_interface, "clsact"], ["tc", "qdisc", "del", "dev", h.data_interface, "clsact"]))
            steps.append(step(h.name, ["tc", "filter", "add", "dev", h.data_interface, "ingress", *FILTER, "pinned", f"{pins}/prog/{FROM_NET}"]))
        return steps

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        return pod_to_pod_endpoint(self.name, hosts, settings)

    async def before_up(self, fleet, facts: HostFacts, settings: ModeSettings) -> dict:
        """Refuse, before any change, a host that cannot run the programs; then build them."""
        found = await fleet.gather("eBPF feature probe", lambda host: probe_host(host, facts[host.name], self.helpers))
        lacking = {h: m for h, m in found.items() if m}
        if lacking:
            detail = "; ".join(f"{h}: {', '.join(m)}" for h, m in sorted(lacking.items()))
            raise UnsupportedFeature(f"{self.name} cannot run here — {detail}. Nothing was changed. "
                                     "Use a kernel with BPF, cls_bpf, clsact and these helpers (5.10 or later), or pick another mode.")
        built = await fleet.gather("build BPF programs", lambda host: ensure_object(host, PROGRAM))
        return {"bpf": {h: b.to_dict() for h, b in built.items()}}

    def undo_shapes(self, host: str, data_interface: str | None) -> list[tuple[str, ...]]:
        pins = re.escape(pin_dir(host))
        shapes = [("umount", pins), ("rmdir", pins)]
        if data_interface:  # the inventory's interface, never the host's word
            shapes.append(("tc", "qdisc", "del", "dev", re.escape(data_interface), "clsact"))
        return shapes

    def leftover_queries(self, host: str, data_interface: str) -> dict[str, list[str]]:
        return {"filters": ["tc", "filter", "show", "dev", data_interface, "ingress"],
                "mountinfo": ["cat", "/proc/self/mountinfo"], "pins": ["sh", "-c", 'test -d "$1" && echo yes', "sh", pin_dir(host)]}

    def leftovers(self, host: str, data_interface: str, outputs: Mapping[str, str]) -> list[list[str]]:
        """The data NIC's clsact qdisc when our program is attached there, the host's bpffs
        mount (stacked ones repeated; unmounting drops its pins) and its directory."""
        argvs = []
        if OUR_PROGRAM.search(outputs.get("filters", "")):
            argvs.append(["tc", "qdisc", "del", "dev", data_interface, "clsact"])
        pins = pin_dir(host)
        argvs += [["umount", pins] for m in bpf_mounts(outputs.get("mountinfo", "")) if m.split()[0] == pins]
        if outputs.get("pins", "").strip() == "yes":
            argvs.append(["rmdir", pins])
        return argvs

    def state_commands(self) -> list[tuple[str, list[str]]]:
        return [("mounts", ["cat", "/proc/self/mountinfo"]), ("bpf_pins", ["sh", "-c", BPF_PINS_SH, "sh", BPF_ROOT])]

    def normalise_state(self, name: str, text: str) -> str:
        return "\n".join(bpf_mounts(text)) if name == "mounts" else text

    async def path_checks(self, fleet, endpoint, settings, facts, probe) -> list[Check]:
        return await redirect_checks(fleet, endpoint, settings, facts, probe)


def missing_features(probe: dict, helpers=HELPERS, map_types=MAP_TYPES) -> list[str]:
    """What `bpftool feature probe kernel -j` says this kernel lacks (pure)."""
    out = []
    if not (probe.get("syscall_config") or {}).get("have_bpf_syscall"):
        return ["the bpf() system call"]
    if not (probe.get("program_types") or {}).get("have_sched_cls_prog_type"):
        out.append("BPF program type sched_cls")
    maps = probe.get("map_types") or {}
    out += [f"BPF map type {m}" for m in map_types if not maps.get(f"have_{m}_map_type")]
    have = set((probe.get("helpers") or {}).get("sched_cls_available_helpers") or [])
    out += [f"helper {h}" for h in helpers if h not in have]
    return out


def foreign_ingress(qdisc_show: str) -> bool:
    """Does `tc qdisc show dev X` list an ingress or clsact qdisc (someone else's programs)? (pure)"""
    return bool(re.search(r"^qdisc (clsact|ingress) ", qdisc_show, re.M))


PROBE_TOOLS = 'for p in "$@"; do command -v "$p" >/dev/null || echo "$p"; done'


async def probe_host(host, fact: HostFact, helpers=HELPERS) -> list[str]:
    """What this host lacks for the mode (empty: nothing). Changes nothing that stays."""
    r = await host.run(["sh", "-c", PROBE_TOOLS, "sh", *TOOLS], check=False, timeout=15)
    absent = r.stdout.split()
    if absent:
        pkgs = sorted({TOOLS[p] for p in absent if p in TOOLS} | {"libbpf-dev"})
        return [f"program(s) {', '.join(absent)} (apt-get install -y {' '.join(pkgs)})"]
    missing: list[str] = []
    r = await host.run(["bpftool", "feature", "probe", "kernel", "-j"], check=False, timeout=60)
    try:
        missing += missing_features(json.loads(r.stdout), helpers)
    except json.JSONDecodeError:
        missing.append(f"a BPF feature probe (bpftool feature probe kernel: {(r.stderr or r.stdout).strip()[-200:] or f'exit {r.exit_status}'})")
    ns = f"{PREFIX}-{host.name}-bpfprobe"
    await host.run(["ip", "netns", "add", ns])
    try:
        for what, argv in (("the clsact qdisc", ["tc", "qdisc", "add", "dev", "lo", "clsact"]),
                           ("the cls_bpf classifier", ["tc", "filter", "add", "dev", "lo", "ingress", "bpf", "bytecode", "1,6 0 0 4294967295,"])):
            r = await host.run(argv, netns=ns, check=False, timeout=15)
            if not r.ok:
                missing.append(f"{what} ({(r.stderr or r.stdout).strip()[-200:]})")
                break
    finally:
        await host.run(["ip", "netns", "del", ns], check=False)
    order = await host.run(["python3", "-c", "import sys; print(sys.byteorder)"], check=False, timeout=15)
    if order.stdout.strip() != "little":
        missing.append(f"a little-endian CPU (the maps' LPM keys are written in little-endian; this one says {order.stdout.strip() or 'nothing'})")
    qd = await host.run(["tc", "qdisc", "show", "dev", fact.data_interface], check=False, timeout=15)
    if foreign_ingress(qd.stdout):
        missing.append(f"a free ingress hook on {fact.data_interface} (it already has a clsact/ingress qdisc: another tc or eBPF datapath)")
    return missing


def parse_stats(dump: str) -> dict[str, int]:
    """`bpftool map dump pinned .../cnib_stats -j` -> {neigh_ok: n, ...}, summed over CPUs (pure).
    With BTF each entry is {"key": k, "values": [{"cpu": c, "value": v}]}; without, keys and
    values are lists of hex byte strings (little-endian on the hosts we accept)."""
    def num(v) -> int:
        if isinstance(v, int):
            return v
        return int.from_bytes(bytes(int(b, 16) for b in v), "little")

    out = dict.fromkeys(STATS, 0)
    for entry in json.loads(dump):
        k = num(entry["key"])
        if 0 <= k < len(STATS):
            out[STATS[k]] += sum(num(c["value"]) for c in entry.get("values", []))
    return out


def parse_forwarded(snmp: str) -> int:
    """Ip: ForwDatagrams from /proc/net/snmp (pure)."""
    rows = [ln.split()[1:] for ln in snmp.splitlines() if ln.startswith("Ip:")]
    if len(rows) < 2:
        raise ValueError("no Ip: lines in /proc/net/snmp")
    return int(dict(zip(rows[0], rows[1]))["ForwDatagrams"])


VERIFY_TABLE = f"{PREFIX}_verify"


async def _read(host, fact: HostFact) -> tuple[dict[str, int], int]:
    dump = await host.run(["bpftool", "map", "dump", "pinned", f"{pin_dir(fact.name)}/maps/{STATS_MAP}", "-j"])
    snmp = await host.run(["cat", "/proc/net/snmp"])
    return parse_stats(dump.stdout), parse_forwarded(snmp.stdout)


async def _count_pod_packets(host, ns: str, peer: str) -> None:
    """A throwaway nftables table inside the pod: packets sent to and received from the peer pod."""
    t = VERIFY_TABLE
    await host.run(["nft", "add", "table", "ip", t], netns=ns)
    await host.run(["nft", "add", "chain", "ip", t, "out", "{", "type", "filter", "hook", "output", "priority", "0", ";", "}"], netns=ns)
    await host.run(["nft", "add", "chain", "ip", t, "in", "{", "type", "filter", "hook", "input", "priority", "0", ";", "}"], netns=ns)
    await host.run(["nft", "add", "rule", "ip", t, "out", "ip", "daddr", peer, "counter"], netns=ns)
    await host.run(["nft", "add", "rule", "ip", t, "in", "ip", "saddr", peer, "counter"], netns=ns)


async def _pod_packets(host, ns: str) -> tuple[int, int]:
    out = (await host.run(["nft", "-j", "list", "table", "ip", VERIFY_TABLE], netns=ns)).stdout
    sent, received = parse_rule_counters(out)
    return sent, received


async def redirect_checks(fleet, endpoint, settings, facts: HostFacts, probe) -> list[Check]:
    """Both redirect counters rise by at least the packets of the probe in their direction, the
    hosts forward nothing, and no bridge is on the path."""
    subnets = pod_subnets(facts, settings)
    pods = {h.name: nth(subnets[h.name], 2) for h in facts}
    sides = [(fleet.client, facts.client, facts.server), (fleet.server, facts.server, facts.client)]
    try:
        for host, f, peer in sides:
            await _count_pod_packets(host, pod_netns(f.name), pods[peer.name])
        before = {f.name: await _read(host, f) for host, f, _ in sides}
        await probe()
        after = {f.name: await _read(host, f) for host, f, _ in sides}
        packets = {f.name: await _pod_packets(host, pod_netns(f.name)) for host, f, _ in sides}
    finally:
        for host, f, _ in sides:
            await host.run(["nft", "delete", "table", "ip", VERIFY_TABLE], netns=pod_netns(f.name), check=False)
    checks = []
    for host, f, peer in sides:
        (s0, fw0), (s1, fw1) = before[f.name], after[f.name]
        d = {k: s1[k] - s0[k] for k in STATS}
        sent, received = packets[f.name]
        checks.append(Check(f"{f.name}: bpf_redirect_neigh redirects >= packets its pod sent to {peer.name}'s pod",
                            sent > 0 and d["neigh_ok"] >= sent, f"+{d['neigh_ok']} redirects, {sent} packets sent"))
        checks.append(Check(f"{f.name}: bpf_redirect_peer redirects >= packets its pod received from {peer.name}'s pod",
                            received > 0 and d["peer_ok"] >= received, f"+{d['peer_ok']} redirects, {received} packets received"))
        checks.append(Check(f"{f.name}: no redirect refused", d["neigh_failed"] == 0 and d["peer_failed"] == 0,
                            f"neigh refused +{d['neigh_failed']}, peer refused +{d['peer_failed']}"))
        checks.append(Check(f"{f.name}: Ip: ForwDatagrams flat (redirected, not routed)", fw1 == fw0, f"{fw0} -> {fw1}"))
        checks += await _no_bridge(host, f)
    return checks


async def _no_bridge(host, f: HostFact) -> list[Check]:
    veth = veth_name(f.name)
    links = {l["ifname"]: l for l in ip_json((await host.run(["ip", "-j", "link", "show"])).stdout)}
    masters = {n: links.get(n, {}).get("master") for n in (veth, f.data_interface)}
    filters = {}
    for dev, prog in ((veth, FROM_POD), (f.data_interface, FROM_NET)):
        out = (await host.run(["tc", "filter", "show", "dev", dev, "ingress"])).stdout
        filters[dev] = f"name {prog} " in out and "direct-action" in out
    return [
        Check(f"{f.name}: {veth} and {f.data_interface} are in no bridge", not any(masters.values()), f"masters {masters}"),
        Check(f"{f.name}: tc ingress programs attached ({FROM_POD} on {veth}, {FROM_NET} on {f.data_interface})", all(filters.values()), str(filters)),
    ]
