"""macvlan in bridge mode (a mode of its own, not IPvlan): each container gets a macvlan
interface with its own MAC on the host's data interface; no Linux bridge, no routing in the
host. Containers on different hosts reach each other on the data segment (one L2 needed)."""

from __future__ import annotations

from ...catalog import PREFIX
from ...infra.kernelprobe import LinkKind
from ..addressing import ifname, nth, pod_subnets, pod_to_pod_endpoint
from ..base import (
    HOST_RE,
    Check,
    Endpoint,
    HostFacts,
    ModeSettings,
    NetworkMode,
    Step,
    step,
)
from ..engine import cnisteps, pieces
from ..engine.cnisteps import CniImplementation
from ..engine.pathcheck import no_bridge_checks
from ..engine.pieces import require_l2


class Macvlan(NetworkMode):
    name = "macvlan"
    link_kinds = (LinkKind("macvlan", ("mode", "bridge"), on_parent=True),)
    owned_links = (rf"{PREFIX}m{HOST_RE}",)

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        subnets = pod_subnets(hosts, settings)
        require_l2(hosts, self.name)
        steps: list[Step] = []
        for h in hosts:
            net = subnets[h.name]
            link = ifname(f"{PREFIX}m{h.name}")
            steps += pieces.netns(h)
            steps.append(step(h.name, ["ip", "link", "add", "name", link, "link", h.data_interface, "type", "macvlan",
                                       "mode", "bridge"], ["ip", "link", "del", link]))
            steps += pieces.move_into_pod(h, link)
            steps += pieces.pod_address(
                h, f"{nth(net, 2)}/{net.prefixlen}", [[settings.cluster_cidr, "dev", pieces.POD_IF]])
        return steps

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        return pod_to_pod_endpoint(self.name, hosts, settings)

    async def path_checks(self, fleet, endpoint, settings, facts, probe) -> list[Check]:
        return await no_bridge_checks(fleet, endpoint, settings, facts, probe, "macvlan", "bridge")


class MacvlanCni(CniImplementation, Macvlan):
    """The same mode plumbed by the reference plugins: `macvlan` (mode bridge, master = the data
    interface) with `static` IPAM. The plugin makes the interface inside the pod (not in the host
    and then moved); the pod's route to the cluster CIDR has no gateway (IPAM's default .1 is an
    address nobody owns)."""

    plugins = ("macvlan", "static")

    def conflist(self, h, net, settings: ModeSettings) -> dict:
        ipam = cnisteps.static_ipam(f"{nth(net, 2)}/{net.prefixlen}", None, [(settings.cluster_cidr, None)])
        return cnisteps.network(f"{PREFIX}{self.name}", h.name, [
            {"type": "macvlan", "master": h.data_interface, "mode": "bridge", "ipam": ipam}])

    def networks(self, hosts: HostFacts, settings: ModeSettings) -> dict[str, dict]:
        subnets = pod_subnets(hosts, settings)
        require_l2(hosts, self.name)
        return {h.name: self.conflist(h, subnets[h.name], settings) for h in hosts}

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        nets = self.networks(hosts, settings)
        return [s for h in hosts for s in (*pieces.netns(h), *cnisteps.attach(h, nets[h.name]))]
