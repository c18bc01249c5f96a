"""Small probes that show which data path a packet took (used by the modes' path checks)."""

from __future__ import annotations

import json
import re

from ...catalog import PREFIX
from ...parsing import ip_json
from ..base import Check
from . import pieces

VERIFY_TABLE = f"{PREFIX}_verify"  # a throwaway nftables table, removed after each check


async def route_get(host, address: str) -> str:
    return (await host.run(["ip", "-o", "route", "get", address])).stdout.strip()


async def ping_ttl(host, netns: str | None, address: str) -> int | None:
    r = await host.run(["ping", "-n", "-c", "1", "-W", "2", address], netns=netns, check=False)
    return parse_ttl(r.stdout)


def parse_ttl(ping_output: str) -> int | None:
    m = re.search(r"ttl=(\d+)", ping_output)
    return int(m.group(1)) if m else None


VXLAN_PORT = 8472  # the Linux kernel's default VXLAN port: what an unencapsulated path must not use


async def counters(host, data_if: str, endpoint, probe, encap_port: int = VXLAN_PORT) -> dict[str, int]:
    """Count, while `probe()` runs, packets leaving `data_if` on `host` that the host's IP stack
    handled: encapsulated (UDP to `encap_port`) and plain (addressed to the endpoint);
    and `tx`, all packets the interface sent (macvlan/ipvlan traffic bypasses the host stack)."""
    t = VERIFY_TABLE
    await host.run(["nft", "add", "table", "ip", t])
    try:
        await host.run(["nft", "add", "chain", "ip", t, "out", "{", "type", "filter", "hook", "postrouting",
                        "priority", "0", ";", "}"])
        await host.run(["nft", "add", "rule", "ip", t, "out", "oifname", data_if, "udp", "dport", str(encap_port),
                        "counter"])
        await host.run(["nft", "add", "rule", "ip", t, "out", "oifname", data_if, "ip", "daddr",
                        endpoint.connect_address, "counter"])
        tx0 = await tx_packets(host, data_if)
        await probe()
        tx1 = await tx_packets(host, data_if)
        out = (await host.run(["nft", "-j", "list", "table", "ip", t])).stdout
    finally:
        await host.run(["nft", "delete", "table", "ip", t], check=False)
    encap, plain = parse_rule_counters(out)
    return {"encap": encap, "plain": plain, "tx": tx1 - tx0}


async def tx_packets(host, dev: str) -> int:
    link = ip_json((await host.run(["ip", "-s", "-j", "link", "show", "dev", dev])).stdout)[0]
    return int(link["stats64"]["tx"]["packets"])


def parse_rule_counters(nft_json: str) -> list[int]:
    """Packet counts of the rules in `nft -j list table` output, in rule order."""
    counts = []
    for item in json.loads(nft_json).get("nftables", []):
        rule = item.get("rule")
        if rule:
            counts += [e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e]
    return counts


async def direct_route_checks(fleet, endpoint, settings, facts, probe) -> list[Check]:
    """host-gw and routed modes: the pod route goes via the peer's data address, unencapsulated."""
    c, s = facts.client, facts.server
    delta = await counters(fleet.client, c.data_interface, endpoint, probe)
    route = await route_get(fleet.client, endpoint.connect_address)
    return [
        Check("route to the server pod via the server's data address",
              f"via {s.data_address} dev {c.data_interface}" in route, route),
        Check("pod packets leave the data interface unencapsulated", delta["plain"] > 0 and delta["encap"] == 0,
              f"plain {delta['plain']}, UDP/{VXLAN_PORT} {delta['encap']}"),
    ]



async def no_bridge_checks(fleet, endpoint, settings, facts, probe, kind: str, mode: str) -> list[Check]:
    """The container's eth0 is a `kind` child of the data interface, which is in no bridge."""
    c = facts.client
    delta = await counters(fleet.client, c.data_interface, endpoint, probe)
    checks = []
    for host, f, ns in (
        (fleet.client, facts.client, endpoint.client_netns), (fleet.server, facts.server, endpoint.server_netns)):
        pod = ip_json((await host.run(["ip", "-d", "-j", "-n", ns, "link", "show", "dev", pieces.POD_IF])).stdout)[0]
        info = pod.get("linkinfo", {})
        got_mode = (info.get("info_data") or {}).get("mode")
        data = ip_json((await host.run(["ip", "-j", "link", "show", "dev", f.data_interface])).stdout)[0]
        checks.append(Check(f"{f.name}: container eth0 is {kind} ({mode}) and {f.data_interface} is in no bridge",
                            info.get("info_kind") == kind and got_mode == mode and "master" not in data,
                            f"kind={info.get('info_kind')} mode={got_mode} "
                            f"{f.data_interface} master={data.get('master')}"))
    # The container's packets leave the NIC (tx rises) without passing the host's IP stack
    # (its postrouting hook sees none of them): no bridge, no routing on the way.
    checks.append(Check(f"pod packets leave {c.data_interface} without crossing the host's stack",
                        delta["tx"] >= 3 and delta["plain"] == 0 and delta["encap"] == 0,
                        f"{c.data_interface} tx +{delta['tx']}, seen by the host's stack: {delta['plain']} plain, "
                        f"{delta['encap']} UDP/{VXLAN_PORT}"))
    return checks
