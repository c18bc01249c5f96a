"""macvlan in bridge mode (a mode of its own, not IPvlan): each container gets a macvlan
interface with its own MAC on the host's data interface; no Linux bridge, no routing in the
host. Containers on different hosts reach each other on the data segment (one L2 needed)."""

from __future__ import annotations

import json

from . import pieces
from ..parsing import ip_json
from ..catalog import PREFIX
from .base import Check, Endpoint, HostFacts, ModeSettings, NetworkMode, Step, ifname, nth, pod_subnets, pod_to_pod_endpoint, step
from .pathcheck import counters


class Macvlan(NetworkMode):
    name = "macvlan"
    link_kinds = ("macvlan",)

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        from .flannel import require_l2

        subnets = pod_subnets(hosts, settings)
        require_l2(hosts, self.name)
        steps: list[Step] = []
        for h in hosts:
            net = subnets[h.name]
            link = ifname(f"{PREFIX}m{h.name}")
            steps += pieces.netns(h)
            steps.append(step(h.name, ["ip", "link", "add", "name", link, "link", h.data_interface, "type", "macvlan", "mode", "bridge"], ["ip", "link", "del", link]))
            steps += pieces.move_into_pod(h, link)
            steps += pieces.pod_address(h, f"{nth(net, 2)}/{net.prefixlen}", [[settings.cluster_cidr, "dev", pieces.POD_IF]])
        return steps

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        return pod_to_pod_endpoint(self.name, hosts, settings)

    async def path_checks(self, fleet, endpoint, settings, facts, probe) -> list[Check]:
        return await no_bridge_checks(fleet, endpoint, settings, facts, probe, "macvlan", "bridge")


async def no_bridge_checks(fleet, endpoint, settings, facts, probe, kind: str, mode: str) -> list[Check]:
    """The container's eth0 is a `kind` child of the data interface, which is in no bridge."""
    c = facts.client
    delta = await counters(fleet.client, c.data_interface, endpoint, settings, probe)
    checks = []
    for host, f, ns in ((fleet.client, facts.client, endpoint.client_netns), (fleet.server, facts.server, endpoint.server_netns)):
        pod = ip_json((await host.run(["ip", "-d", "-j", "-n", ns, "link", "show", "dev", pieces.POD_IF])).stdout)[0]
        info = pod.get("linkinfo", {})
        got_mode = (info.get("info_data") or {}).get("mode")
        data = ip_json((await host.run(["ip", "-j", "link", "show", "dev", f.data_interface])).stdout)[0]
        checks.append(Check(f"{f.name}: container eth0 is {kind} ({mode}) and {f.data_interface} is in no bridge",
                            info.get("info_kind") == kind and got_mode == mode and "master" not in data,
                            f"kind={info.get('info_kind')} mode={got_mode} {f.data_interface} master={data.get('master')}"))
    # The container's packets leave the NIC (tx rises) without passing the host's IP stack
    # (its postrouting hook sees none of them): no bridge, no routing on the way.
    checks.append(Check(f"pod packets leave {c.data_interface} without crossing the host's stack",
                        delta["tx"] >= 3 and delta["plain"] == 0 and delta["encap"] == 0,
                        f"{c.data_interface} tx +{delta['tx']}, seen by the host's stack: {delta['plain']} plain, {delta['encap']} UDP/{settings.vxlan_port}"))
    return checks
