"""The pod side built by the reference CNI plugins (`implementation: cni`), as journalled steps.

Each plugin call of a conflist's ADD is one Step: its argv is the call itself (`env CNI_COMMAND=ADD
… /usr/lib/cni/<type>`, infra/cni.py), its stdin the execution config, and its undo the same
plugin's DEL. So the engine journals, rolls back and `clean`s a plugin call like any of the
project's commands: a session killed in the middle of ADD leaves a journal whose in-flight step
is DELed. IPAM is `static`, so every address is known when planning (pure) and the result each
plugin hands the next (`prevResult`) is the planned one: the IPs (all that firewall and portmap
read of it), not the interfaces with their random veth names. No plugin keeps state on disk with
static IPAM; a `dataDir` anywhere would be under the run directory (cni.with_data_dir).

What DEL leaves (cni.LEFT_AFTER_DEL) is undone by guard steps planned before the first ADD, so
their undos run after the last DEL: the bridge (`test ! -e` refuses one that is already there,
which would not be ours), ip_forward (the shared forwarding step), and each iptables-nft table
the plugins write (`nft create table` refuses a host whose table already exists; its undo
deletes the table with every CNI-* chain in it).
"""

from __future__ import annotations

import json
import re
import shlex

from ...catalog import PREFIX
from ...errors import CommandFailed, FleetError, UnsupportedFeature
from ...infra import cni
from ..addressing import pod_netns
from ..base import HostFact, Step, step

IFNAME = "eth0"
# The tables iptables-nft writes for bridge's ipMasq, firewall and portmap (portmap also makes
# an empty ip6 nat: measured on 1.1.1, infra/cni.py).
IPTABLES_TABLES = (("ip", "nat"), ("ip", "filter"), ("ip6", "nat"))


def container_id(host: str) -> str:
    return pod_netns(host)


def attachment(h: HostFact, runtime_config: dict | None = None) -> cni.Attachment:
    return cni.Attachment(h.name, container_id(h.name), pod_netns(h.name), IFNAME,
                          runtime_config=dict(runtime_config or {}))


def static_ipam(address: str, gateway: str | None, routes: list[tuple[str, str | None]]) -> dict:
    """`static` IPAM: one address, its gateway, routes each with a `gw` where one is given
    (bridge and ptp 1.1.1 CHECK fail on a route without one: infra/cni.py)."""
    addr = {"address": address, **({"gateway": gateway} if gateway else {})}
    return {"type": "static", "addresses": [addr],
            "routes": [{"dst": dst, **({"gw": gw} if gw else {})} for dst, gw in routes]}


def planned_result(ipam: dict) -> dict:
    """The result static IPAM gives (its IPs and routes): the prevResult of a chained plugin."""
    ips = [{"address": a["address"], **({"gateway": a["gateway"]} if "gateway" in a else {})}
           for a in ipam["addresses"]]
    return {"cniVersion": cni.CNI_VERSION, "ips": ips, "routes": ipam.get("routes", [])}


def network(name: str, host: str, plugins: list[dict], disable_check: bool = False) -> dict:
    """The conflist, any plugin's `dataDir` under the host's run directory (never /var/lib/cni)."""
    return cni.with_data_dir(cni.conflist(name, plugins, disable_check), cni.data_dir(host))


def attach(h: HostFact, net: dict, runtime_config: dict | None = None) -> list[Step]:
    """One step per plugin call of ADD, each undone by that plugin's DEL (so DEL runs in
    reverse), every call after the first given the planned result."""
    att = attachment(h, runtime_config)
    result = planned_result(net["plugins"][0]["ipam"])
    adds = cni.plan("ADD", net, att)
    dels = {c.index: c for c in cni.plan("DEL", net, att)}
    return [step(h.name, c.argv, dels[c.index].argv, input=c.stdin(result if c.index else None),
                 undo_input=dels[c.index].stdin(result)) for c in adds]


def guard_bridge(h: HostFact, bridge: str) -> Step:
    """Refuse a bridge that already exists (not ours to delete); undo: delete the one the
    bridge plugin made (DEL leaves it, with its address and route)."""
    return step(h.name, ["test", "!", "-e", f"/sys/class/net/{bridge}"], ["ip", "link", "del", bridge])


def guard_tables(h: HostFact) -> list[Step]:
    """Make the iptables-nft tables empty before the plugins fill them; the undo deletes each
    with everything in it (CNI-HOSTPORT-*, CNI-FORWARD, CNI-ADMIN and their jumps)."""
    return [step(h.name, ["nft", "create", "table", fam, name], ["nft", "delete", "table", fam, name])
            for fam, name in IPTABLES_TABLES]


def render(hosts, nets: dict[str, dict], runtime: dict[str, dict] | None = None) -> list[str]:
    """--dry-run: each host's conflist and runtime config (the plugin calls are in the plan)."""
    runtime = runtime or {}
    out = []
    for h in hosts:
        att = attachment(h, runtime.get(h.name))
        out.append(f"# CNI network {nets[h.name]['name']} on {h.name}: container {att.container_id}, netns "
                   f"{att.netns_path}, ifname {att.ifname}" + (f", runtimeConfig {json.dumps(att.runtime_config)}"
                                                               if att.runtime_config else ""))
        out += [f"# {line}" for line in conflist_json(nets[h.name]).splitlines()]
    return out


def undo_shapes(host: str, plugins: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The DEL calls a host's copy of the state may hold (and the guards' undos)."""
    ns = f"/run/netns/{pod_netns(host)}"
    cid = container_id(host)
    dels = [("env", "CNI_COMMAND=DEL", f"CNI_CONTAINERID={cid}", f"CNI_NETNS={ns}", f"CNI_IFNAME={IFNAME}",
             f"CNI_PATH={cni.CNI_PATH}", f"{cni.CNI_PATH}/{p}") for p in plugins]
    tables = [("nft", "delete", "table", fam, name) for fam, name in IPTABLES_TABLES]
    return [tuple(map(re.escape, s)) for s in dels + tables]


async def require(fleet, plugins: tuple[str, ...], iptables: bool = False) -> dict:
    """Before any change: every plugin on every host (else the install line), iptables-nft where
    the plugins write iptables rules; returns the versions for the state and the record."""
    async def one(host):
        net = {"plugins": [{"type": p} for p in plugins]}
        await cni.require_plugins(host, host.name, net)
        if iptables:
            r = await host.run(["iptables", "-V"], check=False)
            if "nf_tables" not in r.stdout:
                raise UnsupportedFeature(
                    f"{host.name}: the CNI plugins write iptables rules, and `iptables -V` says "
                    f"{(r.stdout or r.stderr).strip() or 'nothing'!r}, not nf_tables. Nothing was changed. "
                    "Select iptables-nft: 'update-alternatives --set iptables /usr/sbin/iptables-nft' "
                    "(or install it: apt-get install -y iptables).")
        return await cni.versions(host, host.name, plugins)

    return {"cni": dict(await fleet.gather("CNI plugins", one))}


def conflist_json(net: dict) -> str:
    return json.dumps(net, indent=2, sort_keys=True)


# Where CNI state could land on a host: ours under the run directory, host-local's default
# /var/lib/cni (never ours): part of the state `down` must restore. (tuning's /run/cni is left
# out: no cni implementation uses tuning, and the executor's own tests make it concurrently.)
CNI_FILES = ("cni_files", ["sh", "-c", f"ls -d {cni.FORBIDDEN_DIR} {cni.data_dir('')} 2>/dev/null; true"])


class CniImplementation:
    """What every `implementation: cni` kind shares; mixed in before the project's kind, whose
    name, settings, endpoint and path checks it keeps. A kind says `plugins` (IPAM last) and
    `networks()` (host -> conflist); `runtime()` gives the capabilities' runtime config."""

    implementation = "cni"
    plugins: tuple[str, ...] = ()
    iptables = False  # the plugins write iptables rules (iptables-nft required)
    creates = (r"env CNI_COMMAND=ADD ",)  # a plugin's ADD makes kernel objects (the setup-cost record)

    def networks(self, hosts, settings) -> dict[str, dict]:
        raise NotImplementedError

    def runtime(self, hosts, settings) -> dict[str, dict]:
        return {}

    def explain(self, hosts, settings) -> list[str]:
        return render(hosts, self.networks(hosts, settings), self.runtime(hosts, settings))

    def undo_shapes(self, host, data_interface):
        return undo_shapes(host, tuple(p for p in self.plugins if p != "static"))

    def state_commands(self):
        return [CNI_FILES]

    async def before_up(self, fleet, facts, settings) -> dict:
        return await require(fleet, self.plugins, self.iptables)

    def failure(self, error):
        return plugin_failure(error)

    def leftover_queries(self, host, data_interface):
        return LEFTOVER_QUERIES

    def leftovers(self, host, data_interface, outputs):
        return sweep_without_journal(outputs)


def plugin_failure(error: BaseException) -> BaseException:
    """A plugin call that failed, as one CniError: the host, the command, the plugin, its code
    and its own words, and that every change was undone (up raises it after the rollback)."""
    if isinstance(error, FleetError):  # several hosts' plugins failed: each in its own words
        return FleetError("mode up", {h: plugin_failure(e) for h, e in error.errors.items()})
    result = getattr(error, "result", None)
    argv = list(getattr(result, "argv", ()) or ())
    command = next((a.partition("=")[2] for a in argv if a.startswith("CNI_COMMAND=")), None)
    if not isinstance(error, CommandFailed) or command is None:
        return error
    code, msg, details = cni.parse_error(result.stdout, result.stderr)
    plugin = argv[-1].rpartition("/")[2]
    return cni.CniError(result.host, command, plugin, code, msg,
                        "; ".join(x for x in (details, "every change undone") if x))


# `clean` without a journal (read-only queries, then pure commands): the plugins' unprefixed
# objects are found by what ties them to us, never by their names alone.
LEFTOVER_QUERIES = {"veth": ["ip", "-j", "link", "show", "type", "veth"],
                    "nat": ["iptables-save", "-t", "nat"], "filter": ["iptables-save", "-t", "filter"]}
_OUR_RULE = re.compile(rf'^-A (\S+) (.*--comment "(?:dnat )?name: \\"{PREFIX}[a-z0-9-]*\\" .*)$')
_JUMP = re.compile(r"-j (CNI-(?:DN-)?[0-9a-f]{21,24})\b")


def sweep_without_journal(outputs: dict[str, str]) -> list[list[str]]:
    """Host veths (`veth` + 8 hex) enslaved to one of our bridges (a veth in a pod namespace of
    ours goes with the namespace); each iptables rule whose comment names one of our networks
    (the plugins write `name: "<network>" id: "<container>"`), then the per-container chains
    those rules jump to (CNI-<hash>, CNI-DN-<hash>). The shared chains (CNI-HOSTPORT-*,
    CNI-FORWARD, CNI-ADMIN) and the tables stay: without the journal they may be another
    runtime's; so do the firewall plugin's per-address ACCEPT rules, which carry no comment.
    Pure."""
    out: list[list[str]] = []
    try:
        links = json.loads(outputs.get("veth") or "[]")
    except ValueError:
        links = []
    out += [["ip", "link", "del", lk["ifname"]] for lk in links
            if re.fullmatch(r"veth[0-9a-f]{8}", lk.get("ifname", "")) and str(lk.get("master", "")).startswith(PREFIX)]
    for table in ("nat", "filter"):
        chains = []
        for line in (outputs.get(table) or "").splitlines():
            m = _OUR_RULE.match(line)
            if m:
                out.append(["iptables", "-t", table, "-D", m.group(1), *shlex.split(m.group(2))])
                chains += [c for c in _JUMP.findall(line) if c not in chains]
        for c in chains:
            out += [["iptables", "-t", table, "-F", c], ["iptables", "-t", table, "-X", c]]
    return out
