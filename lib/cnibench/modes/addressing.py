"""What plans share (pure): names checked against the kernel's limits, pod networks and
subnets checked against the data and SSH networks, endpoints, sysctl and MTU steps."""

from __future__ import annotations

import ipaddress
from typing import Mapping

from ..catalog import IFNAME_MAX
from ..catalog import name as prefixed
from ..errors import PlanError
from .base import Endpoint, HostFact, HostFacts, Step, step
from .settings import ModeSettings


def pod_netns(host: str, role: str = "pod") -> str:
    return prefixed(host, role)


def ifname(name: str) -> str:
    """An interface name this project generates; refuses names the kernel would reject."""
    if not name or len(name) > IFNAME_MAX:
        raise PlanError(
            f"interface name '{name}' has {len(name)} characters; Linux allows at most {IFNAME_MAX}. "
            "Use shorter host names in the inventory (at most 8 characters)."
        )
    return name


def network(value: str, what: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise PlanError(f"{what} '{value}' is not an IPv4 network ({exc}). Write it like 10.244.0.0/16.") from None


def check_no_overlap(named: Mapping[str, ipaddress.IPv4Network]) -> None:
    items = list(named.items())
    for i, (a, na) in enumerate(items):
        for b, nb in items[i + 1:]:
            if na.overlaps(nb):
                raise PlanError(f"{a} {na} overlaps {b} {nb}. Choose a {a} that does not overlap (change it in the "
                                "settings).")


def base_networks(hosts: HostFacts) -> dict[str, ipaddress.IPv4Network]:
    """Networks pod addresses must never overlap: data networks and the SSH session's peer."""
    nets: dict[str, ipaddress.IPv4Network] = {}
    for h in hosts:
        nets.setdefault(f"the data network of {h.name}", h.data_network)
        if h.ssh_peer:
            nets.setdefault(f"the SSH source address of {h.name}", ipaddress.IPv4Network(f"{h.ssh_peer}/32"))
    # several hosts on one data network: keep one entry per distinct network
    seen, unique = set(), {}
    for k, v in nets.items():
        if v not in seen:
            seen.add(v)
            unique[k] = v
    return unique


def check_networks(hosts: HostFacts, extra: Mapping[str, ipaddress.IPv4Network]) -> None:
    """Refuse pod networks that overlap each other, a data network or the SSH path."""
    named = dict(extra)
    for k, v in base_networks(hosts).items():
        for ek, ev in extra.items():
            if v.overlaps(ev):
                raise PlanError(f"{ek} {ev} overlaps {k} ({v}). Choose a {ek} that does not overlap (change it in the "
                                "settings).")
    check_no_overlap(named)


def pod_subnets(hosts: HostFacts, settings: ModeSettings) -> dict[str, ipaddress.IPv4Network]:
    """A pod subnet per host (flannel's lease), in inventory order: host i gets subnet i+1."""
    cluster = network(settings.cluster_cidr, "cluster_cidr")
    prefix = settings.subnet_prefix
    if not isinstance(prefix, int) or not cluster.prefixlen <= prefix <= 30:
        raise PlanError(
            f"subnet_prefix /{prefix} does not fit cluster_cidr {cluster}: it must be between "
            f"/{cluster.prefixlen} and /30. Choose a subnet_prefix in that range."
        )
    available = 2 ** (prefix - cluster.prefixlen)
    if available < len(hosts) + 1:
        raise PlanError(
            f"cluster_cidr {cluster} holds {available} /{prefix} subnet(s), too few for {len(hosts)} hosts "
            "(subnet 0 is left unused). Use a larger cluster_cidr or a longer subnet_prefix."
        )
    check_networks(hosts, {"cluster_cidr": cluster})
    subnets = cluster.subnets(new_prefix=prefix)
    next(subnets)  # leave the first subnet unused (10.244.0.0/24 looks like the network itself)
    return {h.name: next(subnets) for h in hosts}


def nth(net: ipaddress.IPv4Network, n: int) -> str:
    return str(net.network_address + n)


def pod_to_pod_endpoint(mode: str, hosts: "HostFacts", settings: "ModeSettings") -> "Endpoint":
    """The client pod dials the server pod's own address (every mode without NAT)."""
    addr = nth(pod_subnets(hosts, settings)[hosts.server.name], 2)
    return Endpoint(mode, pod_netns(hosts.client.name), pod_netns(hosts.server.name), addr, settings.service_port,
                    addr, settings.service_port)


def sysctl_step(host: str, key: str, value, old) -> Step:
    return step(host, ["sysctl", "-q", "-w", f"{key}={value}"], ["sysctl", "-q", "-w", f"{key}={old}"])


def forwarding_step(h: HostFact) -> Step:
    """ip_forward on; undo restores it and all.accept_redirects, which the kernel resets when
    ip_forward changes (devinet.c: inet_forward_change)."""
    return step(
        h.name,
        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ["sysctl", "-q", "-w", f"net.ipv4.ip_forward={h.ip_forward}",
         f"net.ipv4.conf.all.accept_redirects={h.accept_redirects}"],
    )


def mtu_for(h: HostFact, settings: ModeSettings, overhead: int = 0) -> int:
    mtu = settings.mtu if settings.mtu else h.mtu - overhead
    if mtu < 576 or mtu > h.mtu - overhead:
        raise PlanError(f"MTU {mtu} does not fit {h.name}'s data MTU {h.mtu} minus {overhead} bytes of encapsulation. "
                        f"Choose an MTU from 576 to {h.mtu - overhead}.")
    return mtu
