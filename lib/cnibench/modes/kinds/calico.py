"""Calico-style routed veth: no bridge. Each container's veth has no host address; the host
answers ARP for the container's gateway 169.254.1.1 by proxy ARP, routes the container's /32
to its veth, and routes each peer's pod block via the peer's data address (what BIRD's BGP
routes amount to on one L2 segment). Host-side veth MAC ee:ee:ee:ee:ee:ee as Calico sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...catalog import PREFIX
from ..addressing import (
    forwarding_step,
    mtu_for,
    nth,
    pod_netns,
    pod_subnets,
    pod_to_pod_endpoint,
)
from ..base import (
    HOST_RE,
    ROUTE_PROTO,
    VETH,
    Check,
    Endpoint,
    HostFacts,
    ModeSettings,
    NetworkMode,
    SettingError,
    Step,
    step,
)
from ..engine import cnisteps, pieces
from ..engine.cnisteps import CniImplementation
from ..engine.pathcheck import direct_route_checks, route_get
from ..engine.pieces import require_l2
from . import calico_bgp

GATEWAY = "169.254.1.1"
HOST_MAC = "ee:ee:ee:ee:ee:ee"


@dataclass(frozen=True)
class CalicoSettings(ModeSettings):
    routing: str = "static"  # the peers' pod blocks: static routes, or learned over BGP (calico_bgp.py)

    def check_kind(self) -> None:
        if self.routing not in calico_bgp.ROUTING:
            raise SettingError("routing", f"{self.routing!r} is not one of {', '.join(calico_bgp.ROUTING)}",
                               "Write 'routing: bgp' (BIRD 2) or leave it out (static routes).")


class CalicoRouted(NetworkMode):
    name = "calico-routed"
    settings_type = CalicoSettings
    link_kinds = (VETH,)
    owned_links = (rf"{PREFIX}c{HOST_RE}",)

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        subnets = pod_subnets(hosts, settings)
        require_l2(hosts, self.name)
        steps: list[Step] = []
        for h in hosts:
            veth = f"{PREFIX}c{h.name}"
            pod = nth(subnets[h.name], 2)
            mtu = mtu_for(h, settings)
            steps.append(forwarding_step(h))
            steps += pieces.netns(h)
            steps += pieces.veth(h, veth, mtu, mac=HOST_MAC)
            # Per-device sysctls go with the device: no undo.
            steps.append(step(h.name, ["sysctl", "-q", "-w", f"net.ipv4.conf.{veth}.proxy_arp=1",
                                       f"net.ipv4.neigh.{veth}.proxy_delay=0"]))
            steps += pieces.pod_address(
                h, f"{pod}/32", [
                    [GATEWAY, "dev", pieces.POD_IF, "scope", "link"], ["default", "via", GATEWAY, "dev",
                                                                       pieces.POD_IF]])
            # Proxy ARP answers for the gateway only when the host has a route to it (Calico
            # hosts have a default route; testbed hosts do not): pin the gateway's MAC too.
            steps.append(step(h.name, ["ip", "-n", pod_netns(h.name), "neigh", "add", GATEWAY, "lladdr", HOST_MAC,
                                       "dev", pieces.POD_IF, "nud", "permanent"]))
            steps.append(step(h.name, ["ip", "route", "add", f"{pod}/32", "dev", veth, "scope", "link", "proto",
                                       ROUTE_PROTO]))
            if getattr(settings, "routing", "static") == "bgp":
                steps += calico_bgp.steps(hosts, h.name, subnets)
                continue
            steps += [pieces.host_route(h, subnets[p.name], p.data_address,
                                        h.data_interface) for p in hosts.peers(h.name)]
        return steps

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        return pod_to_pod_endpoint(self.name, hosts, settings)

    async def path_checks(self, fleet, endpoint, settings, facts, probe):
        checks = await direct_route_checks(fleet, endpoint, settings, facts, probe)
        r = await route_get(fleet.server, endpoint.connect_address)
        veth = f"{PREFIX}c{facts.server.name}"
        checks.append(Check("server host routes the pod's /32 straight to its veth (no bridge)", f"dev {veth}" in r, r))
        if getattr(settings, "routing", "static") == "bgp":
            checks += await calico_bgp.checks(fleet, facts, pod_subnets(facts, settings))
        return checks

    async def before_up(self, fleet, facts, settings):
        if getattr(settings, "routing", "static") == "bgp":
            await calico_bgp.require(fleet)
        return {}

    def undo_shapes(self, host, data_interface):
        return calico_bgp.undo_shapes(host)

    def leftover_queries(self, host, data_interface):
        return calico_bgp.leftover_queries(host)

    def leftovers(self, host, data_interface, outputs):
        return calico_bgp.leftovers(host, outputs)

class CalicoRoutedCni(CniImplementation, CalicoRouted):
    """The same routed veth by the reference `ptp` plugin with `static` IPAM. Unlike Calico, ptp
    gives the host veth an address: the pod subnet's .1 as a /32 (Calico: none, proxy ARP for
    169.254.1.1 and the host MAC ee:ee:ee:ee:ee:ee; ptp with 169.254.1.1 and a default route
    fails on 1.1.1). The pod gets the subnet's .2 with the subnet's
    prefix, a `.1 scope link` route and a default route via .1; the host routes the pod's /32 to
    the veth (ptp's own route). The peers' pod blocks are still the project's host routes."""

    plugins = ("ptp", "static")

    def conflist(self, h, net, mtu: int) -> dict:
        gw = nth(net, 1)
        ipam = cnisteps.static_ipam(f"{nth(net, 2)}/{net.prefixlen}", gw, [("0.0.0.0/0", gw)])
        return cnisteps.network(f"{PREFIX}calico", h.name, [{"type": "ptp", "mtu": mtu, "ipam": ipam}])

    def networks(self, hosts, settings) -> dict[str, dict]:
        subnets = pod_subnets(hosts, settings)
        require_l2(hosts, self.name)
        return {h.name: self.conflist(h, subnets[h.name], mtu_for(h, settings)) for h in hosts}

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        nets, subnets = self.networks(hosts, settings), pod_subnets(hosts, settings)
        steps: list[Step] = []
        for h in hosts:
            steps += [forwarding_step(h), *pieces.netns(h), *cnisteps.attach(h, nets[h.name])]
            steps += [pieces.host_route(h, subnets[p.name], p.data_address, h.data_interface)
                      for p in hosts.peers(h.name)]
        return steps

    async def path_checks(self, fleet, endpoint, settings, facts, probe):
        checks = await direct_route_checks(fleet, endpoint, settings, facts, probe)
        r = await route_get(fleet.server, endpoint.connect_address)
        checks.append(Check("server host routes the pod straight to a veth (no bridge)", " dev veth" in r, r))
        return checks
