"""IPvlan, as the study describes it: the container starts with no interface; an ipvlan
interface (l2 or l3) is created on the host's data interface, moved into the container,
addressed and routed. No bridge: packets go from the NIC straight to the virtual interface.

l2: containers answer ARP on the data segment; the cluster CIDR is on-link in the container.
l3: the host's stack routes for its containers; each host routes peers' pod subnets via the
    peer's data address, and the container's default route is the ipvlan device itself.

The kernel must have the ipvlan driver: the precheck probes it in a throwaway namespace and
refuses, before any change, when it is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...catalog import PREFIX
from ...errors import PlanError
from ...infra.kernelprobe import LinkKind
from ..addressing import ifname, nth, pod_subnets, pod_to_pod_endpoint
from ..base import (
    HOST_RE,
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
from ..engine.pathcheck import no_bridge_checks
from ..engine.pieces import require_l2

IPVLAN_MODES = ("l2", "l3")


@dataclass(frozen=True)
class IpvlanSettings(ModeSettings):
    ipvlan_mode: str = "l2"  # l2 | l3

    def check_kind(self) -> None:
        if self.ipvlan_mode not in IPVLAN_MODES:
            raise SettingError("ipvlan_mode", f"{self.ipvlan_mode!r} is not l2 or l3",
                               "Write 'ipvlan_mode: l2' or 'ipvlan_mode: l3'.")


class Ipvlan(NetworkMode):
    name = "ipvlan"
    settings_type = IpvlanSettings
    link_kinds = (LinkKind("ipvlan", ("mode", "l2"), on_parent=True),)
    owned_links = (rf"{PREFIX}i{HOST_RE}",)

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        mode = settings.ipvlan_mode
        if mode not in IPVLAN_MODES:
            raise PlanError(f"ipvlan_mode '{mode}' is not one of {', '.join(IPVLAN_MODES)}. Choose l2 or l3.")
        subnets = pod_subnets(hosts, settings)
        if mode == "l2":
            require_l2(hosts, f"{self.name} (l2)")
        steps: list[Step] = []
        for h in hosts:
            net = subnets[h.name]
            link = ifname(f"{PREFIX}i{h.name}")
            steps += pieces.netns(h)
            # Undo for the case where moving it into the container failed; afterwards it goes
            # with the namespace and this undo finds nothing (tolerated).
            steps.append(step(h.name, ["ip", "link", "add", "name", link, "link", h.data_interface, "type", "ipvlan",
                                       "mode", mode], ["ip", "link", "del", link]))
            steps += pieces.move_into_pod(h, link)
            if mode == "l2":
                steps += pieces.pod_address(
                    h, f"{nth(net, 2)}/{net.prefixlen}", [[settings.cluster_cidr, "dev", pieces.POD_IF]])
            else:
                steps += pieces.pod_address(h, f"{nth(net, 2)}/32", [["default", "dev", pieces.POD_IF]])
                steps += [pieces.host_route(h, subnets[p.name], p.data_address,
                                            h.data_interface) for p in hosts.peers(h.name)]
        return steps

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        return pod_to_pod_endpoint(self.name, hosts, settings)

    async def path_checks(self, fleet, endpoint, settings, facts, probe) -> list[Check]:
        return await no_bridge_checks(fleet, endpoint, settings, facts, probe, "ipvlan", settings.ipvlan_mode)


class IpvlanCni(CniImplementation, Ipvlan):
    """The same mode plumbed by the reference plugins: `ipvlan` (master = the data interface, the
    study's l2/l3) with `static` IPAM; in l3 the peers' pod subnets are still the project's host
    routes. The kernel probe refuses it, before any change, where the driver is missing."""

    plugins = ("ipvlan", "static")

    def conflist(self, h, net, settings: ModeSettings) -> dict:
        if settings.ipvlan_mode == "l2":
            ipam = cnisteps.static_ipam(f"{nth(net, 2)}/{net.prefixlen}", None, [(settings.cluster_cidr, None)])
        else:
            ipam = cnisteps.static_ipam(f"{nth(net, 2)}/32", None, [("0.0.0.0/0", None)])
        return cnisteps.network(f"{PREFIX}{self.name}", h.name, [
            {"type": "ipvlan", "master": h.data_interface, "mode": settings.ipvlan_mode, "ipam": ipam}])

    def networks(self, hosts: HostFacts, settings: ModeSettings) -> dict[str, dict]:
        if settings.ipvlan_mode not in IPVLAN_MODES:
            raise PlanError(f"ipvlan_mode '{settings.ipvlan_mode}' is not one of {', '.join(IPVLAN_MODES)}.")
        subnets = pod_subnets(hosts, settings)
        if settings.ipvlan_mode == "l2":
            require_l2(hosts, f"{self.name} (l2)")
        return {h.name: self.conflist(h, subnets[h.name], settings) for h in hosts}

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        nets, subnets = self.networks(hosts, settings), pod_subnets(hosts, settings)
        steps: list[Step] = []
        for h in hosts:
            steps += [*pieces.netns(h), *cnisteps.attach(h, nets[h.name])]
            if settings.ipvlan_mode == "l3":
                steps += [pieces.host_route(h, subnets[p.name], p.data_address, h.data_interface)
                          for p in hosts.peers(h.name)]
        return steps
