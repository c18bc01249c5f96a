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
from dataclasses import dataclass, field, fields
from typing import Iterable, Mapping

from ..catalog import IFNAME_MAX, ROUTE_PROTO  # noqa: F401  (re-exported to the modes)
from ..infra.kernelprobe import LinkKind
from .settings import ModeSettings, SettingError, check_settings, settings_fields  # noqa: F401  (re-exported)

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
    input: str | None = None  # the command's stdin (a CNI plugin's config), None: none
    undo_input: str | None = None  # the undo's stdin

    def to_dict(self) -> dict:
        d = {"host": self.host, "argv": list(self.argv), "undo": None if self.undo is None else list(self.undo),
             "netns": self.netns}
        d.update({k: v for k, v in (("input", self.input), ("undo_input", self.undo_input)) if v is not None})
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Step":
        undo = d.get("undo")
        return cls(d["host"], tuple(d["argv"]), None if undo is None else tuple(undo), d.get("netns"), d.get("input"),
                   d.get("undo_input"))


def step(host: str, argv: Iterable, undo: Iterable | None = None, netns: str | None = None, input: str | None = None,
         undo_input: str | None = None) -> Step:
    return Step(host, tuple(str(a) for a in argv), None if undo is None else tuple(str(a) for a in undo), netns,
                input, undo_input)


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
    data_ifindex: int = 0  # the data interface's ifindex (for a kind that writes it into BPF maps)

    @property
    def data_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(f"{self.data_address}/{self.data_prefix}").network


@dataclass(frozen=True)
class RouterFact:
    """The testbed's router (its fabric namespace, on this machine), for a kind that routes
    through it (`NetworkMode.needs_router`)."""

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
    """One subclass per mode kind, registered in modes/registry.py (`MODES.register`).

    Besides the plan and the endpoint, a kind says everything the engine, `clean`, the trust
    check and the host-state capture need to know about it, so none of them names a mode:
    its settings, the shapes of its undo commands, the links it owns, its leftovers, whether
    it routes through the testbed's router and the kernel link kinds it needs."""

    name: str = ""
    # Several implementations of one mode may be registered; a study picks one by name.
    implementation: str = "project"
    settings_type: type[ModeSettings] = ModeSettings
    link_kinds: tuple[LinkKind, ...] = ()  # probed in a throwaway namespace before any change
    needs_nft: bool = False
    needs_router: bool = False  # facts include the testbed router (HostFacts.router)
    ip_masq: bool = False  # on a node (`node: kubernetes`), the solution's masquerade rules too (flannel)
    # regexes (fullmatch) of the links this kind names (HOST_RE stands for a host name)
    owned_links: tuple[str, ...] = ()
    # regexes (match) of the commands that create a kernel object (the setup-cost record)
    creates: tuple[str, ...] = ()

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        raise NotImplementedError

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        raise NotImplementedError

    def settings(self, given: ModeSettings | Mapping | None = None) -> ModeSettings:
        """This kind's settings from a mapping, or from settings of another type (their shared
        fields carried over); an unknown key is a SettingError naming the known ones."""
        if isinstance(given, self.settings_type):
            return given
        known = settings_fields(self.settings_type)
        if isinstance(given, ModeSettings):
            return self.settings_type(**{k: getattr(given, k) for k in settings_fields(type(given)) if k in known})
        given = dict(given or {})
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise SettingError(unknown[0], f"is not a setting of {self.name}", f"Known settings: {', '.join(known)}.")
        return self.settings_type(**given)

    def settings_from_inventory(self, settings: ModeSettings, extra: Mapping) -> ModeSettings:
        """Settings the inventory adds (its extra sections); the default adds none."""
        return settings

    def settings_from_record(self, d: Mapping, trusted: bool) -> ModeSettings:
        """Settings back from a stored state (`trusted`: the driver's own copy)."""
        known = settings_fields(self.settings_type)
        return self.settings_type(**{k: v for k, v in d.items() if k in known})

    async def extend_facts(self, fleet, facts: HostFacts, settings: ModeSettings) -> HostFacts:
        """I/O-gathered facts only this kind needs, before planning; the default adds none."""
        return facts

    def undo_shapes(self, host: str, data_interface: str | None) -> list[tuple[str, ...]]:
        """argv patterns (one regex per word) of undos this kind plans beyond the shared ones
        (engine/trust.py); a host's copy of the state is trusted only with these."""
        return []

    def leftover_queries(self, host: str, data_interface: str) -> dict[str, list[str]]:
        """Read-only commands `clean` runs on a host (name -> argv) for `leftovers`."""
        return {}

    def leftovers(self, host: str, data_interface: str, outputs: Mapping[str, str]) -> list[list[str]]:
        """Commands removing what this kind may leave beyond links, namespaces, nft tables and
        routes (pure, from the queries' outputs; they run after the links are gone)."""
        return []

    def state_commands(self) -> list[tuple[str, list[str]]]:
        """Extra parts of a host's network state (name, argv) that `down` must restore."""
        return []

    def normalise_state(self, name: str, text: str) -> str:
        """One of this kind's state parts with its volatile values left out (pure)."""
        return text

    def explain(self, hosts: HostFacts, settings: ModeSettings) -> list[str]:
        """Lines `mode.up --dry-run` prints before the commands (e.g. a CNI conflist); pure."""
        return []

    def failure(self, error: BaseException) -> BaseException:
        """The error `up` raises once every change is undone (a kind may say it in its own
        words, e.g. a CNI plugin's code and message); the default is the error itself."""
        return error

    async def before_up(self, fleet, facts: HostFacts, settings: ModeSettings) -> dict:
        """I/O after the kernel probe and before the first change (checks, builds); what it
        returns is kept in the mode's state under `details`. Raises to refuse the mode."""
        return {}

    async def path_checks(self, fleet, endpoint: Endpoint, settings: ModeSettings, facts: HostFacts,
                          probe) -> list[Check]:
        """Checks that the data path is the intended one; `probe()` sends one HTTP request."""
        await probe()
        return []


BRIDGE = LinkKind("bridge")
VETH = LinkKind("veth")
HOST_RE = r"[a-z][a-z0-9]{0,7}"  # an inventory host name (config._NAME_RE), for owned_links
