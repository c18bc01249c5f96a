"""Docker's default network: bridge `docker0` (here `cnibdocker0`) with 172.17.0.1/16, a veth
per container, masquerade for traffic leaving the bridge network, and a published port: DNAT
from the host's data address to the container. The client container reaches the server
through the published port on the server's data address (Docker: `-p 30080:8080`).

NAT lives in nftables table `ip cnib_docker` (Docker writes iptables rules; same hooks).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import ClassVar

from ...catalog import PREFIX
from ..addressing import (
    check_networks,
    forwarding_step,
    mtu_for,
    network,
    nth,
    pod_netns,
)
from ..base import (
    BRIDGE as BRIDGE_KIND,
)
from ..base import (
    HOST_RE,
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

BRIDGE = f"{PREFIX}docker0"
TABLE = f"{PREFIX}_docker"
SSH_PORT = 22


@dataclass(frozen=True)
class DockerBridgeSettings(ModeSettings):
    published_port: int = 30080  # the port published on the server's data address
    docker_cidr: str = "172.17.0.0/16"  # Docker's default bridge network

    INT_RANGES: ClassVar = (*ModeSettings.INT_RANGES, ("published_port", 1, 65535))
    NETWORKS: ClassVar = (*ModeSettings.NETWORKS, "docker_cidr")

    def check_kind(self) -> None:
        if self.published_port == SSH_PORT:
            raise SettingError("published_port",
                               f"{SSH_PORT} is SSH's port; publishing it would send new SSH logins to "
                               "the server container", "Use another port, e.g. 30080.")


def check_published_port(settings: DockerBridgeSettings, hosts: HostFacts) -> None:
    """The published port must not be the port the server's sshd answers on (SSH_CONNECTION)."""
    s = hosts.server
    if s.ssh_port is not None and settings.published_port == s.ssh_port:
        raise SettingError("published_port", f"{settings.published_port} is the SSH port of {s.name}; publishing it "
                           "would send new SSH logins to the server container", "Use another port, e.g. 30080.")


class DockerBridge(NetworkMode):
    name = "docker-bridge"
    settings_type = DockerBridgeSettings
    link_kinds = (BRIDGE_KIND, VETH)
    needs_nft = True
    owned_links = (BRIDGE, rf"{PREFIX}d{HOST_RE}")

    def _net(self, hosts: HostFacts, settings: ModeSettings):
        net = network(settings.docker_cidr, "docker_cidr")
        check_networks(hosts, {"docker_cidr": net})
        return net

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        net = self._net(hosts, settings)
        check_published_port(settings, hosts)
        gw, pod = nth(net, 1), nth(net, 2)
        steps: list[Step] = []
        for h in hosts:
            mtu = mtu_for(h, settings)
            steps.append(forwarding_step(h))
            steps += pieces.netns(h)
            steps += pieces.bridge(h, BRIDGE, f"{gw}/{net.prefixlen}", mtu)
            steps += pieces.veth(h, f"{PREFIX}d{h.name}", mtu, master=BRIDGE)
            steps += pieces.pod_address(h, f"{pod}/{net.prefixlen}", [["default", "via", gw]])
            steps += [
                step(h.name, ["nft", "add", "table", "ip", TABLE], ["nft", "delete", "table", "ip", TABLE]),
                step(h.name, ["nft", "add", "chain", "ip", TABLE, "postrouting", "{", "type", "nat", "hook",
                              "postrouting", "priority", "srcnat", ";", "policy", "accept", ";", "}"]),
                step(h.name, ["nft", "add", "rule", "ip", TABLE, "postrouting", "ip", "saddr", str(net), "oifname",
                              "!=", BRIDGE, "counter", "masquerade"]),
            ]
            if h.role == "server":
                steps += [
                    step(h.name, ["nft", "add", "chain", "ip", TABLE, "prerouting", "{", "type", "nat", "hook",
                                  "prerouting", "priority", "dstnat", ";", "policy", "accept", ";", "}"]),
                    step(h.name, ["nft", "add", "rule", "ip", TABLE, "prerouting", "ip", "daddr", h.data_address,
                                  "tcp", "dport", settings.published_port,
                                  "counter", "dnat", "to", f"{pod}:{settings.service_port}"]),
                ]
        return steps

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        net = self._net(hosts, settings)
        s = hosts.server
        return Endpoint(self.name, pod_netns(hosts.client.name), pod_netns(s.name), nth(net, 2), settings.service_port,
                        s.data_address, settings.published_port)

    async def path_checks(self, fleet, endpoint, settings, facts, probe) -> list[Check]:
        before = await dnat_packets(fleet.server)
        await probe()
        after = await dnat_packets(fleet.server)
        return [Check("the published port's DNAT rule counter rises", after > before, f"{before} -> {after} packets")]


async def dnat_packets(host) -> int:
    out = (await host.run(["nft", "-j", "list", "chain", "ip", TABLE, "prerouting"])).stdout
    return parse_dnat_packets(out)


def parse_dnat_packets(nft_json: str) -> int:
    """Packets counted by the DNAT rule in `nft -j list chain` output."""
    for item in json.loads(nft_json).get("nftables", []):
        rule = item.get("rule")
        if rule and any("dnat" in e for e in rule.get("expr", [])):
            return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    raise ValueError("no DNAT rule with a counter in the chain")


class DockerBridgeCni(CniImplementation, DockerBridge):
    """The same network by the reference plugins, podman's chain: `bridge` (cnibdocker0, gateway
    172.17.0.1, `ipMasq`, hairpin) with `static` IPAM, `firewall` (iptables backend) and
    `portmap` (`snat`, the published port on the server's data address only). The rules are
    iptables rules through iptables-nft (required: `iptables -V` must say nf_tables), in the
    tables `ip nat` and `ip filter` (and portmap's empty `ip6 nat`), which a guard creates empty
    before the first ADD and deletes after the last DEL. CHECK is disabled in the conflist:
    portmap 1.1.1's CHECK fails (upstream #819). Verify reads the DNAT rule's counter."""

    needs_nft = True
    iptables = True
    plugins = ("bridge", "firewall", "portmap", "static")

    def conflist(self, h, net, mtu: int) -> dict:
        gw = nth(net, 1)
        ipam = cnisteps.static_ipam(f"{nth(net, 2)}/{net.prefixlen}", gw, [("0.0.0.0/0", gw)])
        return cnisteps.network(f"{PREFIX}docker", h.name, [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True, "mtu": mtu,
             "ipam": ipam},
            {"type": "firewall", "backend": "iptables"},
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}], disable_check=True)

    def runtime(self, hosts: HostFacts, settings) -> dict[str, dict]:
        s = hosts.server
        return {s.name: {"portMappings": [{"hostPort": settings.published_port, "containerPort": settings.service_port,
                                           "protocol": "tcp", "hostIP": s.data_address}]}}

    def networks(self, hosts, settings) -> dict[str, dict]:
        net = self._net(hosts, settings)
        check_published_port(settings, hosts)
        return {h.name: self.conflist(h, net, mtu_for(h, settings)) for h in hosts}

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        nets, runtime = self.networks(hosts, settings), self.runtime(hosts, settings)
        return [s for h in hosts for s in (forwarding_step(h), *pieces.netns(h), *cnisteps.guard_tables(h),
                                           cnisteps.guard_bridge(h, BRIDGE),
                                           *cnisteps.attach(h, nets[h.name], runtime.get(h.name)))]

    async def path_checks(self, fleet, endpoint, settings, facts, probe) -> list[Check]:
        before = await iptables_dnat_packets(fleet.server)
        await probe()
        after = await iptables_dnat_packets(fleet.server)
        return [Check("the published port's DNAT rule counter rises (iptables-nft, portmap's CNI-DN-* chain)",
                      after > before, f"{before} -> {after} packets")]


async def iptables_dnat_packets(host) -> int:
    return parse_iptables_dnat(
        (await host.run(["iptables-save", "-c", "-t", "nat"])).stdout)


def parse_iptables_dnat(text: str) -> int:
    """Packets counted by portmap's DNAT rules (`[packets:bytes] -A CNI-DN-… -j DNAT`) in
    `iptables-save -c` output (pure)."""
    found = [int(m.group(1)) for m in re.finditer(r"^\[(\d+):\d+\] -A CNI-DN-\S+ .*-j DNAT\b", text, re.M)]
    if not found:
        raise ValueError("no DNAT rule of portmap's in the nat table")
    return sum(found)
