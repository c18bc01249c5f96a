"""Gather HostFacts over the fleet: the only I/O planning needs (plans are pure functions of it)."""

from __future__ import annotations

from ...catalog import PREFIX
from ...errors import HostError, PlanError
from ...infra.local import LocalHost
from ...parsing import ip_json
from ..base import HostFact, HostFacts, RouterFact
from .state import read_originals

L2_STATES = {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"}


async def gather_facts(fleet, with_router: bool = True) -> HostFacts:
    inv = fleet.inventory
    # Data addresses first: each host's L2 probe needs its peers' addresses.
    basics = await fleet.gather("gather facts", _basics)
    addresses = {name: b["data_address"] for name, b in basics.items()}

    async def l2(host):
        peers = {n: a for n, a in addresses.items() if n != host.name}
        return await _l2_peers(host, basics[host.name]["data_interface"], peers)

    l2s = await fleet.gather("probe L2 neighbours", l2)
    hosts = tuple(HostFact(**basics[h.name], l2_peers=tuple(sorted(l2s[h.name]))) for h in inv.hosts)
    router = None
    tb = inv.extra.get("testbed") if with_router else None
    if tb and tb.get("fabric_netns"):
        router = await router_facts(
            tb["fabric_netns"], tb.get("router", "198.18.0.1"), tb.get("bridge", f"{PREFIX}br0"))
    return HostFacts(hosts, router)


async def recorded(target) -> list[str]:
    """Sysctl originals an earlier, unfinished mode recorded on `target` (state.py)."""
    return (await read_originals(target))[0]


def originals_over(recorded: list[str], keys: list[str], values: list[str]) -> list[str]:
    """The live `values` of `keys`, except where an original was recorded: a value a mode
    changed and did not restore is never taken for the original (pure)."""
    rec = dict(a.split("=", 1) for a in recorded)
    return [rec.get(k, v) for k, v in zip(keys, values)]


async def _basics(host) -> dict:
    spec = host.spec
    dev = spec.data_interface
    link = ip_json((await host.run(["ip", "-j", "link", "show", "dev", dev])).stdout)[0]
    addrs = ip_json((await host.run(["ip", "-j", "-4", "addr", "show", "dev", dev])).stdout)
    inet = [a for entry in addrs for a in entry.get("addr_info", []) if a.get("family") == "inet"]
    chosen = next((a for a in inet if a["local"] == spec.data_address),
                  None) if spec.data_address else (inet[0] if inet else None)
    if chosen is None:
        want = spec.data_address or "an IPv4 address"
        raise HostError(host.name,
                        f"data interface {dev} has no {want}. Check data_interface/data_address in the inventory "
                        f"('ip addr show dev {dev}' on the host).")
    sysctl = (await host.run(["sysctl", "-n", "net.ipv4.ip_forward",
                              "net.ipv4.conf.all.accept_redirects"])).stdout.split()
    sysctl = originals_over(await recorded(host), ["net.ipv4.ip_forward", "net.ipv4.conf.all.accept_redirects"], sysctl)
    ssh_peer, ssh_if, ssh_port = await ssh_path(host)
    return dict(
        name=host.name, role=spec.role, data_interface=dev, data_address=chosen["local"],
        data_prefix=int(chosen["prefixlen"]),
        mtu=int(link["mtu"]), mac=link.get("address", ""), ip_forward=int(sysctl[0]), accept_redirects=int(sysctl[1]),
        ssh_peer=ssh_peer, ssh_interface=ssh_if, ssh_port=ssh_port, data_ifindex=int(link.get("ifindex", 0)),
    )


async def ssh_path(host) -> tuple[str | None, str | None, int | None]:
    """(address our SSH session comes from, the interface it uses, sshd's port) on the host.

    Plans keep that path untouched, so on a real host we refuse to plan without it, and refuse
    a data interface that carries it (a mode builds on the data interface: promiscuous mode,
    macvlan/ipvlan children, routes). The testbed's SSH runs on its own management link."""
    env = await host.ssh_connection()
    peer = env[0] if env else None
    port = int(env[3]) if len(env) >= 4 and env[3].isdigit() else None
    dev = None
    if peer:
        route = ip_json((await host.run(["ip", "-j", "route", "get", peer])).stdout)
        dev = route[0].get("dev") if route else None
    check_ssh_path(host.name, host.spec.data_interface, peer, dev, testbed=host.spec.testbed_netns is not None)
    return peer, dev, port


def check_ssh_path(name: str, data_interface: str, peer: str | None, dev: str | None, testbed: bool) -> None:
    """Raise PlanError when the SSH path is unknown on a real host or is the data interface (pure)."""
    if peer is None and not testbed:
        raise PlanError(f"{name}: cannot tell which address this SSH session comes from (SSH_CONNECTION is not set "
                        "for the login user), so a plan could cut it. Nothing was changed. Check that sshd sets "
                        "SSH_CONNECTION (it always does unless the login shell or PAM clears it).")
    if dev is not None and dev == data_interface:
        raise PlanError(f"{name}: the SSH session runs over the data interface {data_interface}; a network mode "
                        "changes that interface and could cut the session. Nothing was changed. Connect over another "
                        "interface (a management NIC: set 'address' in the inventory) or use another NIC as "
                        "data_interface.")


async def _l2_peers(host, dev: str, peers: dict[str, str]) -> list[str]:
    """Peers whose data address is on-link (no gateway) and answers ARP on `dev`."""
    found = []
    for name, addr in peers.items():
        route = ip_json((await host.run(["ip", "-j", "route", "get", addr])).stdout)
        if not route or route[0].get("gateway") or route[0].get("dev") != dev:
            continue
        await host.run(["ping", "-n", "-c", "1", "-W", "1", "-I", dev, addr], check=False)
        neigh = ip_json((await host.run(["ip", "-j", "neigh", "show", "to", addr, "dev", dev])).stdout)
        if any(n.get("lladdr") and set(n.get("state", [])) & L2_STATES for n in neigh):
            found.append(name)
    return found


async def router_facts(netns: str, address: str, interface: str) -> RouterFact:
    local = LocalHost()
    keys = ["net.ipv4.ip_forward", "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.all.send_redirects",
            f"net.ipv4.conf.{interface}.send_redirects"]
    vals = (await local.run(["sysctl", "-n", *keys], netns=netns)).stdout.split()
    vals = originals_over(await recorded(local), keys, vals)
    routes = ip_json((await local.run(["ip", "-j", "-n", netns, "route", "show"])).stdout)
    return RouterFact(netns=netns, address=address, interface=interface, ip_forward=int(vals[0]),
                      accept_redirects=int(vals[1]),
                      send_redirects_all=int(vals[2]), send_redirects_if=int(vals[3]), routes=len(routes))
