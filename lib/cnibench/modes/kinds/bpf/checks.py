"""ebpf-redirect's checks: what a host lacks for it (before any change) and, once it is up,
that the programs redirect the pods' packets (counters, no forwarding, no bridge)."""

from __future__ import annotations

import json
import re

from ....catalog import PREFIX
from ....parsing import ip_json
from ...addressing import nth, pod_netns, pod_subnets
from ...base import Check, HostFact, HostFacts
from ...engine.pathcheck import parse_rule_counters
from .datapath import FROM_NET, FROM_POD, HELPERS, MAP_TYPES, STATS, STATS_MAP, TOOLS, pin_dir, veth_name

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
        missing.append("a BPF feature probe (bpftool feature probe kernel: "
                       f"{(r.stderr or r.stdout).strip()[-200:] or f'exit {r.exit_status}'})")
    ns = f"{PREFIX}-{host.name}-bpfprobe"
    await host.run(["ip", "netns", "add", ns])
    try:
        for what, argv in (("the clsact qdisc", ["tc", "qdisc", "add", "dev", "lo", "clsact"]),
                           ("the cls_bpf classifier", ["tc", "filter", "add", "dev", "lo", "ingress", "bpf",
                                                       "bytecode", "1,6 0 0 4294967295,"])):
            r = await host.run(argv, netns=ns, check=False, timeout=15)
            if not r.ok:
                missing.append(f"{what} ({(r.stderr or r.stdout).strip()[-200:]})")
                break
    finally:
        await host.run(["ip", "netns", "del", ns], check=False)
    order = await host.run(["python3", "-c", "import sys; print(sys.byteorder)"], check=False, timeout=15)
    if order.stdout.strip() != "little":
        missing.append("a little-endian CPU (the maps' LPM keys are written in little-endian; this one says "
                       f"{order.stdout.strip() or 'nothing'})")
    qd = await host.run(["tc", "qdisc", "show", "dev", fact.data_interface], check=False, timeout=15)
    if foreign_ingress(qd.stdout):
        missing.append(f"a free ingress hook on {fact.data_interface} (it already has a clsact/ingress qdisc: another "
                       "tc or eBPF datapath)")
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
    await host.run(["nft", "add", "chain", "ip", t, "out", "{", "type", "filter", "hook", "output", "priority", "0",
                    ";", "}"], netns=ns)
    await host.run(["nft", "add", "chain", "ip", t, "in", "{", "type", "filter", "hook", "input", "priority", "0", ";",
                    "}"], netns=ns)
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
                            received > 0 and d["peer_ok"] >= received,
                            f"+{d['peer_ok']} redirects, {received} packets received"))
        checks.append(Check(f"{f.name}: no redirect refused", d["neigh_failed"] == 0 and d["peer_failed"] == 0,
                            f"neigh refused +{d['neigh_failed']}, peer refused +{d['peer_failed']}"))
        checks.append(Check(f"{f.name}: Ip: ForwDatagrams flat (redirected, not routed)", fw1 == fw0,
                            f"{fw0} -> {fw1}"))
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
        Check(f"{f.name}: {veth} and {f.data_interface} are in no bridge", not any(masters.values()),
              f"masters {masters}"),
        Check(f"{f.name}: tc ingress programs attached ({FROM_POD} on {veth}, {FROM_NET} on {f.data_interface})",
              all(filters.values()), str(filters)),
    ]
