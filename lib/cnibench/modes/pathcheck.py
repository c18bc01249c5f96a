"""Small probes that show which data path a packet took (used by the modes' path checks)."""

from __future__ import annotations

import json
import re
from ..parsing import ip_json
from ..catalog import PREFIX

VERIFY_TABLE = f"{PREFIX}_verify"  # a throwaway nftables table, removed after each check


async def route_get(host, address: str) -> str:
    return (await host.run(["ip", "-o", "route", "get", address])).stdout.strip()


async def ping_ttl(host, netns: str | None, address: str) -> int | None:
    r = await host.run(["ping", "-n", "-c", "1", "-W", "2", address], netns=netns, check=False)
    return parse_ttl(r.stdout)


def parse_ttl(ping_output: str) -> int | None:
    m = re.search(r"ttl=(\d+)", ping_output)
    return int(m.group(1)) if m else None


async def counters(host, data_if: str, endpoint, settings, probe) -> dict[str, int]:
    """Count, while `probe()` runs, packets leaving `data_if` on `host` that the host's IP stack
    handled: VXLAN-encapsulated (UDP to the VXLAN port) and plain (addressed to the endpoint);
    and `tx`, all packets the interface sent (macvlan/ipvlan traffic bypasses the host stack)."""
    t = VERIFY_TABLE
    await host.run(["nft", "add", "table", "ip", t])
    try:
        await host.run(["nft", "add", "chain", "ip", t, "out", "{", "type", "filter", "hook", "postrouting", "priority", "0", ";", "}"])
        await host.run(["nft", "add", "rule", "ip", t, "out", "oifname", data_if, "udp", "dport", str(settings.vxlan_port), "counter"])
        await host.run(["nft", "add", "rule", "ip", t, "out", "oifname", data_if, "ip", "daddr", endpoint.connect_address, "counter"])
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
