"""Connection-tracking entries of a host (its network namespace), counted for a flow.

`/proc/net/nf_conntrack` (the kernel's own table, no `conntrack` tool needed) is parsed by a
pure function; nothing read back is run or trusted as a command: lines that do not parse are
skipped, numbers are checked. `count()` reads it through any host's `run(argv)`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

PROC = "/proc/net/nf_conntrack"
_KV = re.compile(r"\b(src|dst|sport|dport)=(\S+)")
_HEAD = re.compile(r"^ipv4\s+2\s+(tcp|udp|icmp)\s+\d+\s+\d+\s+(?:([A-Z_]+)\s+)?")


@dataclass(frozen=True)
class Entry:
    proto: str
    state: str | None  # TCP's state (ESTABLISHED, TIME_WAIT, ...), None for UDP
    src: str  # the original direction
    dst: str
    sport: int | None
    dport: int | None
    reply_src: str  # the reply direction's source: differs from dst after DNAT
    reply_dst: str  # ...and its destination, from src after SNAT/masquerade


def parse(text: str) -> list[Entry]:
    """IPv4 entries of /proc/net/nf_conntrack (pure)."""
    out = []
    for line in text.splitlines():
        m = _HEAD.match(line)
        kv = _KV.findall(line)
        if not m or len(kv) < 6:
            continue
        keys = [k for k, _ in kv]
        if "src" not in keys[1:]:
            continue
        half = keys.index("src", 1)  # the reply direction starts at the second src=
        orig, reply = dict(kv[:half]), dict(kv[half:])
        try:
            ipaddress.IPv4Address(orig["src"])
            ipaddress.IPv4Address(orig["dst"])
            ipaddress.IPv4Address(reply["src"])
            ipaddress.IPv4Address(reply["dst"])
            sport = int(orig["sport"]) if "sport" in orig else None
            dport = int(orig["dport"]) if "dport" in orig else None
        except (KeyError, ValueError):
            continue
        out.append(Entry(m.group(1), m.group(2), orig["src"], orig["dst"], sport, dport, reply["src"], reply["dst"]))
    return out


def matching(entries: list[Entry], dst: str, dport: int, proto: str = "tcp") -> list[Entry]:
    """Entries of flows to `dst`:`dport` (the address the client dialled), pure."""
    return [e for e in entries if e.proto == proto and e.dst == dst and e.dport == dport]


async def read(host, netns: str | None = None) -> list[Entry]:
    r = await host.run(["cat", PROC], netns=netns, check=False)
    return parse(r.stdout) if r.exit_status == 0 else []


async def count(host, dst: str, dport: int, netns: str | None = None) -> int:
    """How many tracked TCP flows to `dst`:`dport` the host has now."""
    return len(matching(await read(host, netns), dst, dport))


def flow_entries(entries: list[Entry], endpoint: dict, side: str) -> int:
    """How many entries belong to the measured flows (pure): on the client host, TCP to the
    address and port it dials; on the server host, to that or to where nginx listens."""
    dsts = {(endpoint["connect_address"], endpoint["connect_port"])}
    if side == "server":
        dsts.add((endpoint["server_bind"], endpoint["server_port"]))
    return sum(1 for e in entries if e.proto == "tcp" and (e.dst, e.dport) in dsts)


async def flows(fleet, endpoint) -> dict[str, int]:
    """{"client": n, "server": n}: the measured flows' entries on each host now."""
    ep = endpoint.to_dict()
    return {side: flow_entries(await read(host), ep, side)
            for side, host in (("client", fleet.client), ("server", fleet.server))}
