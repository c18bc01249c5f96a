"""Flannel: a pod subnet per host from the cluster CIDR, bridge `cni0` (here `cnibcni0`) with
the subnet's first address, a veth per container, and one of three forwarding backends:

- vxlan:   VXLAN device `flannel.1` (VNI 1, UDP 8472, nolearning, MTU = data MTU - 50) holding
           the subnet's network address /32; per peer an onlink route via the peer's VTEP
           address, a permanent neighbour entry and an FDB entry naming the peer's data address;
- host-gw: per peer a route to its pod subnet via its data address (needs one L2 segment);
- aws-vpc: the VPC route table holds each host's subnet -> that host; hosts send pod traffic
           to the VPC router. On the testbed the fabric namespace is the router (<= 50 routes).

Names carry the project prefix: cni0 -> cnibcni0, flannel.1 -> cnibflannel.1.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Mapping

from ...catalog import PREFIX
from ...errors import PlanError
from ...infra.kernelprobe import LinkKind
from ..addressing import (
    forwarding_step,
    ifname,
    mtu_for,
    nth,
    pod_subnets,
    pod_to_pod_endpoint,
    sysctl_step,
)
from ..base import (
    AWS,
    HOST_RE,
    LOCAL,
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
from ..base import (
    BRIDGE as BRIDGE_KIND,
)
from ..engine import cnisteps, pieces
from ..engine.cnisteps import CniImplementation
from ..engine.aws import ROUTE_LIMIT, AwsDriver, AwsSettings
from ..engine.pathcheck import counters, direct_route_checks, ping_ttl, route_get
from ..engine.pieces import require_l2

BRIDGE = f"{PREFIX}cni0"
VXLAN = f"{PREFIX}flannel.1"
VXLAN_OVERHEAD = 50
VXLAN_KIND = LinkKind("vxlan", ("id", "42", "dstport", "4789"))


@dataclass(frozen=True)
class VxlanSettings(ModeSettings):
    vxlan_port: int = 8472  # flannel's default (the Linux kernel default, not IANA's 4789)
    vxlan_vni: int = 1

    INT_RANGES: ClassVar = (*ModeSettings.INT_RANGES, ("vxlan_port", 1, 65535), ("vxlan_vni", 0, 2**24 - 1))


@dataclass(frozen=True)
class AwsVpcSettings(ModeSettings):
    route_limit: int = ROUTE_LIMIT  # the VPC route table's entry limit (AWS default, named by the study)
    aws: AwsSettings | None = None  # None: the testbed's fabric namespace acts as the VPC router

    INT_RANGES: ClassVar = (*ModeSettings.INT_RANGES, ("route_limit", 1, 10_000))

    def check_kind(self) -> None:
        if self.aws is not None and not isinstance(self.aws, AwsSettings):
            raise SettingError("aws", "is not an AWS section", "Put the AWS settings in the inventory ('aws:').")


class _Flannel(NetworkMode):
    ip_masq = True  # flanneld --ip-masq: its masquerade rules go on a node (modes/node/)
    link_kinds = (BRIDGE_KIND, VETH)
    owned_links = (BRIDGE, rf"{PREFIX}v{HOST_RE}")
    overhead = 0

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        subnets = pod_subnets(hosts, settings)
        self.precheck_plan(hosts, settings)
        steps: list[Step] = []
        for h in hosts:
            net = subnets[h.name]
            mtu = mtu_for(h, settings, self.overhead)
            steps.append(forwarding_step(h))
            steps += pieces.netns(h)
            steps += self.pod_side(h, net, mtu)
            steps += self.backend(h, hosts, subnets, settings, mtu)
        return steps + self.fabric(hosts, subnets, settings)

    def pod_side(self, h, net, mtu: int) -> list[Step]:
        """The bridge with the subnet's first address, a veth into the pod, the pod's address."""
        return [*pieces.bridge(h, BRIDGE, f"{nth(net, 1)}/{net.prefixlen}", mtu),
                *pieces.veth(h, f"{PREFIX}v{h.name}", mtu, master=BRIDGE),
                *pieces.pod_address(h, f"{nth(net, 2)}/{net.prefixlen}", [["default", "via", nth(net, 1)]])]

    def precheck_plan(self, hosts: HostFacts, settings: ModeSettings) -> None:
        pass

    def backend(self, h, hosts, subnets, settings, mtu) -> list[Step]:
        raise NotImplementedError

    def fabric(self, hosts, subnets, settings) -> list[Step]:
        return []

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        return pod_to_pod_endpoint(self.name, hosts, settings)


class FlannelVxlan(_Flannel):
    name = "flannel-vxlan"
    settings_type = VxlanSettings
    link_kinds = (BRIDGE_KIND, VETH, VXLAN_KIND)
    owned_links = (BRIDGE, rf"{PREFIX}v{HOST_RE}", VXLAN.replace(".", r"\."))
    overhead = VXLAN_OVERHEAD

    def backend(self, h, hosts, subnets, settings, mtu) -> list[Step]:
        vx = ifname(VXLAN)
        net = subnets[h.name]
        add = ["ip", "link", "add", "name", vx, "address", pieces.vtep_mac(h.data_address), "mtu", mtu,
               "type", "vxlan", "id", settings.vxlan_vni, "local", h.data_address, "dev", h.data_interface,
               "dstport", settings.vxlan_port, "nolearning"]
        steps = [
            step(h.name, add, ["ip", "link", "del", vx]),
            step(h.name, ["ip", "addr", "add", f"{nth(net, 0)}/32", "dev", vx]),
            step(h.name, ["ip", "link", "set", vx, "up"]),
        ]
        for p in hosts.peers(h.name):
            pnet, mac = subnets[p.name], pieces.vtep_mac(p.data_address)
            # Gone with the VXLAN device, so no undo of their own.
            steps += [
                step(h.name, ["ip", "route", "add", str(pnet), "via", nth(pnet, 0), "dev", vx, "onlink", "proto",
                              ROUTE_PROTO]),
                step(h.name, ["ip", "neigh", "add", nth(pnet, 0), "lladdr", mac, "dev", vx, "nud", "permanent"]),
                step(h.name, ["bridge", "fdb", "append", mac, "dev", vx, "dst", p.data_address]),
            ]
        return steps

    async def path_checks(self, fleet, endpoint, settings, facts, probe):
        c = facts.client
        delta = await counters(fleet.client, c.data_interface, endpoint, probe, settings.vxlan_port)
        route = await route_get(fleet.client, endpoint.connect_address)
        return [
            Check(f"UDP/{settings.vxlan_port} packets rise on {c.data_interface}", delta["encap"] > 0,
                  f"{delta['encap']} packets"),
            Check("no unencapsulated pod packets on the data interface", delta["plain"] == 0,
                  f"{delta['plain']} packets"),
            Check(f"route to the server pod uses {VXLAN}", f"dev {VXLAN}" in route, route),
        ]


class FlannelHostGw(_Flannel):
    name = "flannel-host-gw"

    def precheck_plan(self, hosts, settings):
        require_l2(hosts, self.name)

    def backend(self, h, hosts, subnets, settings, mtu) -> list[Step]:
        return [pieces.host_route(h, subnets[p.name], p.data_address, h.data_interface) for p in hosts.peers(h.name)]

    async def path_checks(self, fleet, endpoint, settings, facts, probe):
        return await direct_route_checks(fleet, endpoint, settings, facts, probe)


class FlannelAwsVpc(_Flannel):
    name = "flannel-aws-vpc"
    settings_type = AwsVpcSettings
    needs_router = True  # on the testbed the fabric namespace is the VPC router
    creates = (r"ec2 create-route\b",)

    def settings_from_inventory(self, settings, extra: Mapping):
        aws = extra.get("aws")
        return settings.with_(aws=AwsSettings.from_inventory(aws)) if settings.aws is None and aws else settings

    def settings_from_record(self, d: Mapping, trusted: bool):
        """AWS settings only from the driver's own copy (a host must not name an AWS target)."""
        d = dict(d)
        aws = d.pop("aws", None)
        s = super().settings_from_record(d, trusted)
        return s.with_(aws=AwsSettings(**aws)) if aws and trusted else s

    async def extend_facts(self, fleet, facts, settings):
        if settings.aws is None or not settings.aws.instances:
            return facts
        # the original source/dest check of each instance, restored by the undo
        driver = AwsDriver.from_settings(settings.aws)
        return replace(facts, source_dest_check=driver.source_dest_check(settings.aws.instances.values()))

    def precheck_plan(self, hosts, settings):
        if settings.aws is None and hosts.router is None:
            raise PlanError("flannel-aws-vpc needs a VPC router: run it on the testbed (its fabric is the router) or "
                            "add an 'aws' section to the inventory.")
        existing = 0 if settings.aws else hosts.router.routes
        if existing + len(hosts) > settings.route_limit:
            raise PlanError(
                f"RouteLimitExceeded: the route table holds {existing} route(s) and {len(hosts)} more would pass "
                f"its limit of {settings.route_limit} (AWS's default). flannel-aws-vpc supports at most "
                f"{settings.route_limit} hosts; use flannel-host-gw or flannel-vxlan for more."
            )
        if settings.aws:
            missing = [h.name for h in hosts if h.name not in settings.aws.instances]
            if missing or not settings.aws.route_table_id:
                raise PlanError("the inventory's aws section needs route_table_id and an instance id for every host "
                                f"(missing: {', '.join(missing) or 'route_table_id'}).")

    def backend(self, h, hosts, subnets, settings, mtu) -> list[Step]:
        if settings.aws:
            return []  # on AWS the hosts' default route already leads to the VPC router
        r = hosts.router
        return [pieces.host_route(h, settings.cluster_cidr, r.address, h.data_interface)]

    def fabric(self, hosts, subnets, settings) -> list[Step]:
        if settings.aws:
            return aws_steps(hosts, subnets, settings)
        r = hosts.router
        ns = r.netns
        steps = [
            step(LOCAL, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                 ["sysctl", "-q", "-w", f"net.ipv4.ip_forward={r.ip_forward}",
                  f"net.ipv4.conf.all.accept_redirects={r.accept_redirects}"], netns=ns),
            # A router that forwards back out of the port a packet came in on sends ICMP
            # redirects, and hosts would then bypass it: the VPC router never does that.
            _local(sysctl_step(LOCAL, "net.ipv4.conf.all.send_redirects", 0, r.send_redirects_all), ns),
            _local(sysctl_step(LOCAL, f"net.ipv4.conf.{r.interface}.send_redirects", 0, r.send_redirects_if), ns),
        ]
        for h in hosts:
            tail = [str(subnets[h.name]), "via", h.data_address, "dev", r.interface, "proto", ROUTE_PROTO]
            steps.append(step(LOCAL, ["ip", "route", "add", *tail], ["ip", "route", "del", *tail], netns=ns))
        return steps

    async def path_checks(self, fleet, endpoint, settings, facts, probe):
        await probe()
        c = facts.client
        ttl = await ping_ttl(fleet.client, endpoint.client_netns, endpoint.connect_address)
        route = await route_get(fleet.client, endpoint.connect_address)
        # The reply leaves the server pod with TTL 64 and is forwarded by the server host, the
        # router and the client host: 61. Without the router (host-gw) it would arrive with 62.
        checks = [Check("TTL decremented by the router (61 = 64 - server host - router - client host)", ttl == 61,
                        f"ttl={ttl}")]
        if facts.router is not None:
            checks.append(Check("client host routes pod traffic to the VPC router",
                                f"via {facts.router.address} dev {c.data_interface}" in route, route))
        return checks


class _CniPodSide(CniImplementation):
    """The pod side by the reference plugins, the backend still the project's (as flanneld
    builds it): `bridge` (cnibcni0, isGateway, kube-flannel's `hairpinMode: true`, the backend's
    MTU) with `static` IPAM (the subnet's .2, default route via .1). DEL leaves the bridge: the
    guard before the ADD deletes it."""

    plugins = ("bridge", "static")

    def conflist(self, h, net, mtu: int) -> dict:
        gw = nth(net, 1)
        ipam = cnisteps.static_ipam(f"{nth(net, 2)}/{net.prefixlen}", gw, [("0.0.0.0/0", gw)])
        return cnisteps.network(f"{PREFIX}flannel", h.name, [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True, "mtu": mtu, "ipam": ipam}])

    def pod_side(self, h, net, mtu: int) -> list[Step]:
        return [cnisteps.guard_bridge(h, BRIDGE), *cnisteps.attach(h, self.conflist(h, net, mtu))]

    def networks(self, hosts, settings) -> dict[str, dict]:
        subnets = pod_subnets(hosts, settings)
        return {h.name: self.conflist(h, subnets[h.name], mtu_for(h, settings, self.overhead)) for h in hosts}


class FlannelVxlanCni(_CniPodSide, FlannelVxlan):
    pass


class FlannelHostGwCni(_CniPodSide, FlannelHostGw):
    pass


class FlannelAwsVpcCni(_CniPodSide, FlannelAwsVpc):
    creates = (*_CniPodSide.creates, *FlannelAwsVpc.creates)


def _local(s: Step, netns: str) -> Step:
    return Step(LOCAL, s.argv, s.undo, netns)


def aws_steps(hosts: HostFacts, subnets, settings: ModeSettings) -> list[Step]:
    """AWS API calls in the aws CLI's words (the boto3 driver in aws.py executes them)."""
    a = settings.aws
    steps = []
    for h in hosts:
        iid = a.instances[h.name]
        # undo puts back the check as it was (True unless the user had turned it off)
        original = "--source-dest-check" if hosts.source_dest_check.get(iid, True) else "--no-source-dest-check"
        steps.append(step(AWS, ["ec2", "modify-instance-attribute", "--instance-id", iid, "--no-source-dest-check"],
                          ["ec2", "modify-instance-attribute", "--instance-id", iid, original]))
        # delete-route names the target: the driver deletes the route only if it still leads there
        route = ["--route-table-id", a.route_table_id, "--destination-cidr-block", str(subnets[h.name]),
                 "--instance-id", iid]
        steps.append(step(AWS, ["ec2", "create-route", *route], ["ec2", "delete-route", *route]))
    return steps
