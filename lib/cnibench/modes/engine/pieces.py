"""Building blocks the modes share: a container namespace, a bridge, a veth into a container.

Each returns steps (pure). Objects inside a container namespace need no undo: deleting the
namespace removes them; a veth pair goes with either end.
"""

from __future__ import annotations

import ipaddress

from ...errors import PlanError
from ..addressing import ifname, pod_netns
from ..base import ROUTE_PROTO, HostFact, HostFacts, Step, step

POD_IF = "eth0"  # the container's interface, as Docker and Kubernetes name it


def netns(h: HostFact) -> list[Step]:
    ns = pod_netns(h.name)
    return [
        step(h.name, ["ip", "netns", "add", ns], ["ip", "netns", "del", ns]),
        step(h.name, ["ip", "-n", ns, "link", "set", "lo", "up"]),
    ]


def bridge(h: HostFact, name: str, address: str, mtu: int) -> list[Step]:
    """A Linux bridge holding the gateway address (`cni0`, `docker0`)."""
    name = ifname(name)
    return [
        step(h.name, ["ip", "link", "add", "name", name, "mtu", mtu, "type", "bridge"], ["ip", "link", "del", name]),
        step(h.name, ["ip", "addr", "add", address, "dev", name]),
        step(h.name, ["ip", "link", "set", name, "up"]),
    ]


def veth(h: HostFact, host_if: str, mtu: int, master: str | None = None, mac: str | None = None) -> list[Step]:
    """A veth pair: `host_if` in the host, eth0 created directly inside the container."""
    host_if = ifname(host_if)
    ns = pod_netns(h.name)
    add = ["ip", "link", "add", "name", host_if, *(["address", mac] if mac else []), "mtu", mtu,
           "type", "veth", "peer", "name", POD_IF, "mtu", mtu, "netns", ns]
    steps = [step(h.name, add, ["ip", "link", "del", host_if])]
    up = ["ip", "link", "set", host_if, *(["master", master] if master else []), "up"]
    steps.append(step(h.name, up))
    return steps


def pod_address(h: HostFact, address: str, routes: list[list[str]]) -> list[Step]:
    """Bring the container's eth0 up with `address` and `routes` (each an `ip route add` tail)."""
    ns = pod_netns(h.name)
    steps = [
        step(h.name, ["ip", "-n", ns, "link", "set", POD_IF, "up"]),
        step(h.name, ["ip", "-n", ns, "addr", "add", address, "dev", POD_IF]),
    ]
    steps += [step(h.name, ["ip", "-n", ns, "route", "add", *r]) for r in routes]
    return steps


def move_into_pod(h: HostFact, link: str) -> list[Step]:
    """Move a link made in the host (ipvlan, macvlan) into the container and name it eth0."""
    ns = pod_netns(h.name)
    return [
        step(h.name, ["ip", "link", "set", link, "netns", ns]),
        # Deleting the link itself on teardown (not only its namespace, which the kernel destroys
        # asynchronously) puts the data interface back as found at once: promiscuity included.
        step(h.name, ["ip", "-n", ns, "link", "set", link, "name", POD_IF], ["ip", "-n", ns, "link", "del", POD_IF]),
    ]


def host_route(h: HostFact, dest, via: str, dev: str) -> Step:
    """A route in the host's main table, marked with our protocol number, with its undo."""
    tail = [str(dest), "via", via, "dev", dev, "proto", ROUTE_PROTO]
    return step(h.name, ["ip", "route", "add", *tail], ["ip", "route", "del", *tail])


def vtep_mac(address: str) -> str:
    """A stable, locally administered MAC for a host's VTEP, derived from its data address
    (flanneld publishes the VTEP MAC in etcd; deriving it keeps planning pure)."""
    b = ipaddress.IPv4Address(address).packed
    return "0e:cb:" + ":".join(f"{x:02x}" for x in b)


def require_l2(hosts: HostFacts, mode: str) -> None:
    for h in hosts:
        for p in hosts.peers(h.name):
            if p.name not in h.l2_peers:
                raise PlanError(
                    f"{mode} needs every host on one L2 segment, but {h.name} does not reach "
                    f"{p.name} ({p.data_address}) directly on {h.data_interface}. Use a mode with an "
                    "overlay (VXLAN), or put the hosts' data interfaces on one switch/subnet."
                )
