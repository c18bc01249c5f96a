"""Verify `node: kubernetes` (I/O at the edge): the mode's own path checks see the pod's address
(the bare endpoint) while the probe goes through the VIP; a probe creates conntrack entries for
the flow the client dials (counted with infra/conntrack.py's parser)."""

from __future__ import annotations

from ...errors import HostError
from ...infra import conntrack
from ..base import Check, Endpoint

# What `node: kubernetes` runs on each host: program -> the Debian package that has it.
PROGRAMS = {"nft": "nftables", "iptables-nft-restore": "iptables", "iptables-nft": "iptables"}


async def require(fleet, programs: dict[str, str]) -> None:
    """Before any change: every host has `programs`; else one message naming the hosts and the
    `apt-get install` line (nothing is installed on a remote host)."""
    async def one(host):
        r = await host.run(["sh", "-c", 'for p; do command -v "$p" >/dev/null || echo "$p"; done', "cnib",
                            *programs], check=False)
        lacking = sorted({programs[p] for p in r.stdout.split() if p in programs})
        if lacking:
            raise HostError(host.name, f"missing {', '.join(lacking)}: nothing was changed. Install with: "
                                       f"apt-get install -y --no-install-recommends {' '.join(lacking)}")

    await fleet.gather("required programs", one)  # FleetError names each host and its line


def path_endpoint(mode, facts, settings, endpoint: Endpoint) -> Endpoint:
    """The endpoint the mode's path checks reason about: the bare one under `via: service`."""
    return mode.endpoint(facts, settings) if settings.via == "service" else endpoint


async def checks(fleet, endpoint: Endpoint, settings, probe) -> list[Check]:
    if settings.node != "kubernetes":
        return []
    before = await conntrack.count(fleet.client, endpoint.connect_address, endpoint.connect_port)
    await probe()
    after = await conntrack.count(fleet.client, endpoint.connect_address, endpoint.connect_port)
    out = [Check(f"conntrack tracks the flow to {endpoint.connect_address}:{endpoint.connect_port} on the client host",
                 after > 0, f"{before} -> {after} entries")]
    if settings.via == "service":
        entries = conntrack.matching(await conntrack.read(fleet.client), endpoint.connect_address,
                                     endpoint.connect_port)
        dnat = [e for e in entries if e.reply_src != e.dst]
        out.append(Check("the Service VIP is DNATed (conntrack's reply source is the endpoint, not the VIP)",
                         bool(dnat),
                         f"reply from {dnat[0].reply_src}" if dnat else f"{len(entries)} entries, none DNATed"))
    return out
