"""The network-mode contract: facts in, a plan (ordered steps with undo) and an endpoint out.

A mode never does I/O while planning: `plan(facts, settings)` and `endpoint(facts, settings)`
are pure functions of the host facts (gathered once, see facts.py) and the settings. Applying
the plan, verifying and tearing it down live in apply.py and verify.py.

Names: every object a mode creates on a host carries the `cnib` prefix. Container namespaces
are `cnib-<host>-pod`; interface names are checked against the kernel's 15-character limit.
Routes a mode adds carry `proto 203` (ROUTE_PROTO), an ownership marker `invoke clean` uses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Mapping

from ..catalog import PREFIX
from ..catalog import name as prefixed
from ..catalog import IFNAME_MAX, ROUTE_PROTO  # noqa: F401  (re-exported to the modes)
from ..infra.config import RUN_DIR
from ..errors import PlanError

LOCAL = "@local"  # Step.host for commands run on this machine (the testbed's VPC router)
AWS = "@aws"  # Step.host for AWS API calls (argv read by the boto3 driver, aws.py)


@dataclass(frozen=True)
class Endpoint:
    mode: str
    client_netns: str | None  # where the load generator runs on the client host (None = host ns)
    server_netns: str | None  # where nginx runs on the server host (None = host ns)
    server_bind: str  # address nginx listens on inside server_netns
    server_port: int  # port nginx listens on
    connect_address: str  # address the client dials
    connect_port: int  # port the client dials (differs for docker-bridge's published port)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Endpoint":
        return cls(**{f.name: d[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Step:
    """One command on one host, and the command that undoes it (None: nothing to undo,
    e.g. an object that disappears with its parent)."""

    host: str
    argv: tuple[str, ...]
    undo: tuple[str, ...] | None
    netns: str | None = None

    def to_dict(self) -> dict:
        return {"host": self.host, "argv": list(self.argv), "undo": None if self.undo is None else list(self.undo), "netns": self.netns}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Step":
        undo = d.get("undo")
        return cls(d["host"], tuple(d["argv"]), None if undo is None else tuple(undo), d.get("netns"))


def step(host: str, argv: Iterable, undo: Iterable | None = None, netns: str | None = None) -> Step:
    return Step(host, tuple(str(a) for a in argv), None if undo is None else tuple(str(a) for a in undo), netns)


@dataclass(frozen=True)
class AwsSettings:
    """Where flannel-aws-vpc registers pod subnets on real AWS (inventory key `aws`)."""

    region: str = "us-east-1"
    route_table_id: str = ""
    instances: Mapping[str, str] = field(default_factory=dict)  # host name -> instance id
    endpoint_url: str | None = None  # for moto in tests; None = the real AWS endpoint


@dataclass(frozen=True)
class ModeSettings:
    cluster_cidr: str = "10.244.0.0/16"
    subnet_prefix: int = 24
    service_port: int = 8080  # the port nginx listens on in the server container
    published_port: int = 30080  # docker-bridge: the port published on the server's data address
    docker_cidr: str = "172.17.0.0/16"  # docker-bridge: Docker's default bridge network
    ipvlan_mode: str = "l2"  # l2 | l3
    mtu: int | None = None  # override the container MTU (default: what the real solution uses)
    vxlan_port: int = 8472  # flannel's default (the Linux kernel default, not IANA's 4789)
    vxlan_vni: int = 1
    route_limit: int = 50  # the VPC route table's entry limit (AWS default, named by the study)
    aws: AwsSettings | None = None  # None: the testbed's fabric namespace acts as the VPC router

    def __post_init__(self):
        check_settings(self)

    def with_(self, **kw) -> "ModeSettings":
        return replace(self, **kw)


SSH_PORT = 22
# (setting, low, high) of the whole-number settings; each reaches a command line or a config
# file, so it must be a real int (not a string, a float or a bool) in its range.
_INT_RANGES = (
    ("service_port", 1, 65535), ("published_port", 1, 65535), ("vxlan_port", 1, 65535),
    ("vxlan_vni", 0, 2**24 - 1), ("subnet_prefix", 1, 32), ("route_limit", 1, 10_000),
)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class SettingError(PlanError):
    """One mode setting is wrong: names the setting, the problem and the fix."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"mode setting {key}: {problem}. {fix}")


def check_settings(s: "ModeSettings") -> None:
    """Types and ranges of every setting (pure); SettingError naming the setting and the fix."""
    for key, lo, hi in _INT_RANGES:
        v = getattr(s, key)
        if not _whole(v) or not lo <= v <= hi:
            raise SettingError(key, f"{v!r} is not a whole number from {lo} to {hi}", f"Write e.g. '{key}: {getattr(ModeSettings, key)}'.")
    if s.published_port == SSH_PORT:
        raise SettingError("published_port", f"{SSH_PORT} is SSH's port; publishing it would send new SSH logins to the server container",
                           "Use another port, e.g. 30080.")
    if s.mtu is not None and (not _whole(s.mtu) or not 576 <= s.mtu <= 65535):
        raise SettingError("mtu", f"{s.mtu!r} is not a whole number from 576 to 65535", "Leave it out to use what the real solution uses.")
    if s.ipvlan_mode not in ("l2", "l3"):
        raise SettingError("ipvlan_mode", f"{s.ipvlan_mode!r} is not l2 or l3", "Write 'ipvlan_mode: l2' or 'ipvlan_mode: l3'.")
    for key in ("cluster_cidr", "docker_cidr"):
        v = getattr(s, key)
        try:
            if not isinstance(v, str):
                raise TypeError("not text")
            ipaddress.IPv4Network(v, strict=True)
        except (TypeError, ValueError) as exc:
            raise SettingError(key, f"{v!r} is not an IPv4 network ({exc})", "Write it like 10.244.0.0/16.") from None
    if s.aws is not None and not isinstance(s.aws, AwsSettings):
        raise SettingError("aws", "is not an AWS section", "Put the AWS settings in the inventory ('aws:').")


def check_published_port(settings: "ModeSettings", hosts: "HostFacts") -> None:
    """The published port must not be the port the server's sshd answers on (seen in SSH_CONNECTION)."""
    s = hosts.server
    if s.ssh_port is not None and settings.published_port == s.ssh_port:
        raise SettingError("published_port", f"{settings.published_port} is the SSH port of {s.name}; publishing it would send "
                           "new SSH logins to the server container", "Use another port, e.g. 30080.")


@dataclass(frozen=True)
class HostFact:
    """What a plan needs to know about one host, gathered once (facts.py)."""

    name: str
    role: str
    data_interface: str
    data_address: str  # e.g. 198.18.0.11
    data_prefix: int  # e.g. 24
    mtu: int
    mac: str
    ip_forward: int = 0
    accept_redirects: int = 1  # net.ipv4.conf.all.accept_redirects: toggling ip_forward resets it
    l2_peers: tuple[str, ...] = ()  # peers whose data address answers on the same L2 segment
    ssh_peer: str | None = None  # the address the SSH session comes from (never routed away)
    ssh_interface: str | None = None  # the interface the SSH session uses (never touched)
    ssh_port: int | None = None  # the port this host's sshd answered our session on
    data_ifindex: int = 0  # the data interface's ifindex (ebpf-redirect's maps name it)

    @property
    def data_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(f"{self.data_address}/{self.data_prefix}").network


@dataclass(frozen=True)
class RouterFact:
    """The VPC router of flannel-aws-vpc on the testbed: a namespace on this machine."""

    netns: str
    address: str
    interface: str
    ip_forward: int = 0
    accept_redirects: int = 1
    send_redirects_all: int = 1
    send_redirects_if: int = 1
    routes: int = 0  # routes already in its table (count toward the limit)


@dataclass(frozen=True)
class HostFacts:
    hosts: tuple[HostFact, ...]
    router: RouterFact | None = None
    source_dest_check: Mapping[str, bool] = field(default_factory=dict)  # AWS: instance id -> original value

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, name: str) -> HostFact:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def client(self) -> HostFact:
        return next(h for h in self.hosts if h.role == "client")

    @property
    def server(self) -> HostFact:
        return next(h for h in self.hosts if h.role == "server")

    def peers(self, name: str) -> list[HostFact]:
        return [h for h in self.hosts if h.name != name]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class VerifyResult:
    mode: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "ok": self.ok, "checks": [c.__dict__ for c in self.checks]}

    def __str__(self) -> str:
        lines = [f"{self.mode}: {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


class NetworkMode:
    """One subclass per mode, registered by name in modes/__init__.py."""

    name: str = ""
    # Link kinds the kernel must support; probed in a throwaway namespace before any change.
    link_kinds: tuple[str, ...] = ()
    needs_nft: bool = False

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        raise NotImplementedError

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        raise NotImplementedError

    async def before_up(self, fleet, facts: HostFacts, settings: ModeSettings) -> dict:
        """I/O after the kernel probe and before the first change (checks, builds); what it
        returns is kept in the mode's state under `details`. Raises to refuse the mode."""
        return {}

    async def path_checks(self, fleet, endpoint: Endpoint, settings: ModeSettings, facts: HostFacts, probe) -> list[Check]:
        """Checks that the data path is the intended one; `probe()` sends one HTTP request."""
        await probe()
        return []


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
                raise PlanError(f"{a} {na} overlaps {b} {nb}. Choose a {a} that does not overlap (change it in the settings).")


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
                raise PlanError(f"{ek} {ev} overlaps {k} ({v}). Choose a {ek} that does not overlap (change it in the settings).")
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
    return Endpoint(mode, pod_netns(hosts.client.name), pod_netns(hosts.server.name), addr, settings.service_port, addr, settings.service_port)


def sysctl_step(host: str, key: str, value, old) -> Step:
    return step(host, ["sysctl", "-q", "-w", f"{key}={value}"], ["sysctl", "-q", "-w", f"{key}={old}"])


def forwarding_step(h: HostFact) -> Step:
    """ip_forward on; undo restores it and all.accept_redirects, which the kernel resets when
    ip_forward changes (devinet.c: inet_forward_change)."""
    return step(
        h.name,
        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ["sysctl", "-q", "-w", f"net.ipv4.ip_forward={h.ip_forward}", f"net.ipv4.conf.all.accept_redirects={h.accept_redirects}"],
    )


def mtu_for(h: HostFact, settings: ModeSettings, overhead: int = 0) -> int:
    mtu = settings.mtu if settings.mtu else h.mtu - overhead
    if mtu < 576 or mtu > h.mtu - overhead:
        raise PlanError(f"MTU {mtu} does not fit {h.name}'s data MTU {h.mtu} minus {overhead} bytes of encapsulation. Choose an MTU from 576 to {h.mtu - overhead}.")
    return mtu


BPF_ROOT = f"{RUN_DIR}/bpf"  # bpffs mounts of the ebpf-redirect mode


def pin_dir(host: str) -> str:
    """The host's own bpffs mount: programs under prog/, maps under maps/."""
    return f"{BPF_ROOT}/{PREFIX}-{host}"
