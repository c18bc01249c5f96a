"""A CNI runtime (spec 1.0): the reference plugins called the way kubelet's runtime calls them.

Planning is pure: a conflist and an attachment become ordered plugin calls, each an argv
(`env CNI_COMMAND=… <CNI_PATH>/<type>`: the variables ride in argv, as sudo would drop them from
the environment) and the JSON on its stdin. I/O is at the edge, through any host with the
project's `run(argv, input=…)` (an SSH Host or the LocalHost). ADD runs the plugins in order,
each given the previous one's result as `prevResult`; the final result is stored, and DEL (in
reverse) and CHECK (in order) are given it. Before the first ADD an attachment record is
written, so a session killed in the middle of ADD leaves something `clean` can find and DEL.
Every plugin's `dataDir` and the records live under the run directory, never /var/lib/cni.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..catalog import PREFIX
from ..errors import CommandFailed, HostError, PlanError
from .config import RUN_DIR

CNI_VERSION = "1.0.0"
CNI_PATH = "/usr/lib/cni"  # Debian's containernetworking-plugins
PACKAGE = "containernetworking-plugins"
INSTALL = f"apt-get install -y --no-install-recommends {PACKAGE}"
FORBIDDEN_DIR = "/var/lib/cni"  # the plugins' default state directory: never ours to write
# What DEL leaves on the host, measured on containernetworking-plugins 1.1.1 (Debian 12): the
# mode that used the plugin removes these itself (see the notes of issue 26).
LEFT_AFTER_DEL = {
    "bridge": ("the bridge with its address and connected route", "net.ipv4.ip_forward=1"),
    "host-local": ("<dataDir>/<network>/last_reserved_ip.0", "<dataDir>/<network>/lock"),
    "portmap": ("iptables nat chains CNI-HOSTPORT-{DNAT,SETMARK,MASQ} and their jumps",
                "an empty `table ip6 nat`", "net.ipv4.conf.<bridge>.route_localnet=1"),
    "firewall": ("iptables filter chains CNI-FORWARD, CNI-ADMIN and the FORWARD jump",),
    "ptp": ("net.ipv4.ip_forward=1",),
    "tuning": ("the directories /run/cni/tuning (its backups: not movable under dataDir)",),
    "macvlan": (), "static": (), "ipvlan": (), "loopback": (),
}
# bridge and ptp 1.1.1: CHECK compares a result route without `gw` against the route ADD made
# via the gateway and fails ("Expected Route {… GW:<nil>} not found"): give routes a gw.


@dataclass(frozen=True)
class Attachment:
    """One container's interface on one network: the runtime's side of the protocol."""

    host: str  # the inventory's host name: names the data directory
    container_id: str
    netns: str  # a named namespace (`ip netns`), passed to the plugins as /run/netns/<name>
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS
    runtime_config: dict[str, Any] = field(default_factory=dict)  # by capability name

    @property
    def netns_path(self) -> str:
        return self.netns if self.netns.startswith("/") else f"/run/netns/{self.netns}"


@dataclass(frozen=True)
class Call:
    """One plugin invocation; stdin's prevResult is filled in at run time for ADD."""

    command: str
    index: int
    plugin: str  # the plugin's `type`
    argv: tuple[str, ...]
    config: dict[str, Any]  # the execution config without prevResult

    def stdin(self, prev_result: dict | None) -> str:
        conf = dict(self.config)
        if prev_result is not None:
            conf["prevResult"] = prev_result
        return json.dumps(conf, sort_keys=True)


class CniError(HostError):
    """A plugin said no: its own code and message, the host and the plugin named."""

    def __init__(self, host: str, command: str, plugin: str, code: int | None, msg: str, details: str = ""):
        self.command, self.plugin, self.code, self.msg, self.details = command, plugin, code, msg, details
        code_txt = f"error code {code}" if code is not None else "no error code"
        super().__init__(host, f"CNI {command} of plugin '{plugin}' failed ({code_txt}): {msg}"
                         + (f" ({details})" if details else ""))


def data_dir(host: str, run_dir: str | None = None) -> str:
    """The host's CNI state: IPAM files, attachment records and results."""
    return f"{run_dir or RUN_DIR}/cni/{host}"


def conflist(name: str, plugins: Sequence[dict], disable_check: bool = False) -> dict:
    if not plugins:
        raise PlanError(f"CNI network {name!r}: a conflist needs at least one plugin")
    for p in plugins:
        if "type" not in p or "/" in p["type"]:
            raise PlanError(f"CNI network {name!r}: every plugin needs a plain `type` (got {p!r})")
    out = {"cniVersion": CNI_VERSION, "name": name, "plugins": [dict(p) for p in plugins]}
    if disable_check:
        out["disableCheck"] = True
    return out


def with_data_dir(net: dict, ddir: str) -> dict:
    """The conflist with host-local IPAM's dataDir under `ddir`; a dataDir elsewhere (above all
    the plugins' default /var/lib/cni) is refused rather than silently written."""
    out = json.loads(json.dumps(net))
    for p in out["plugins"]:
        ipam = p.get("ipam") or {}
        if ipam.get("type") == "host-local":
            ipam.setdefault("dataDir", f"{ddir}/ipam")
        where = ipam.get("dataDir")
        if where is not None and not where.startswith(f"{ddir}/"):
            raise PlanError(f"CNI network {net['name']!r}: plugin {p['type']!r} would keep its state in {where}, "
                            f"outside {ddir} (nothing of ours goes under {FORBIDDEN_DIR})")
    return out


def execution_config(net: dict, index: int, runtime_config: dict) -> dict:
    """Spec section 3: the plugin's object with the list's name and cniVersion, and the runtime
    config of only the capabilities the plugin declares."""
    plugin = dict(net["plugins"][index])
    caps = plugin.pop("capabilities", {}) or {}
    conf = {**plugin, "cniVersion": net["cniVersion"], "name": net["name"]}
    chosen = {k: v for k, v in runtime_config.items() if caps.get(k)}
    if chosen:
        conf["runtimeConfig"] = chosen
    return conf


def env_argv(command: str, att: Attachment, plugin: str, cni_path: str = CNI_PATH) -> tuple[str, ...]:
    env = [f"CNI_COMMAND={command}", f"CNI_CONTAINERID={att.container_id}", f"CNI_NETNS={att.netns_path}",
           f"CNI_IFNAME={att.ifname}", f"CNI_PATH={cni_path}"]
    if att.args:
        env.append("CNI_ARGS=" + ";".join(f"{k}={v}" for k, v in att.args))
    return ("env", *env, f"{cni_path}/{plugin}")


def plan(command: str, net: dict, att: Attachment, cni_path: str = CNI_PATH) -> list[Call]:
    """The ordered plugin calls of ADD, CHECK or DEL (DEL in reverse; CHECK none if disabled)."""
    if command not in ("ADD", "CHECK", "DEL"):
        raise PlanError(f"unknown CNI command {command!r} (ADD, CHECK or DEL)")
    if command == "CHECK" and net.get("disableCheck"):
        return []
    order = range(len(net["plugins"]))
    calls = [Call(command, i, net["plugins"][i]["type"], env_argv(command, att, net["plugins"][i]["type"], cni_path),
                  execution_config(net, i, att.runtime_config)) for i in order]
    return calls[::-1] if command == "DEL" else calls


def render(command: str, net: dict, att: Attachment, cni_path: str = CNI_PATH) -> str:
    """--dry-run: the conflist, then each plugin call as it would run (pure)."""
    lines = [f"# CNI {command} on {att.host}: container {att.container_id}, netns {att.netns_path}, "
             f"ifname {att.ifname}",
             json.dumps(net, indent=2, sort_keys=True)]
    prev = {"ADD": "<the previous plugin's result>", "CHECK": "<the stored result>",
            "DEL": "<the stored result>"}[command]
    for n, call in enumerate(plan(command, net, att, cni_path)):
        has_prev = command != "ADD" or n > 0
        lines.append(f"$ {shlex.join(call.argv)} <<'EOF'")
        lines.append(call.stdin(prev if has_prev else None))  # type: ignore[arg-type]
        lines.append("EOF")
    return "\n".join(lines)


def parse_error(stdout: str, stderr: str) -> tuple[int | None, str, str]:
    """A plugin's error: (code, msg, details) from its JSON, else its raw words."""
    try:
        err = json.loads(stdout)
    except ValueError:
        err = None
    if isinstance(err, dict) and "msg" in err:
        return err.get("code"), str(err["msg"]), str(err.get("details") or "")
    words = (stdout.strip() + "\n" + stderr.strip()).strip()
    return None, words or "the plugin printed nothing", ""


def record_key(net_name: str, att: Attachment) -> str:
    return f"{net_name}-{att.container_id}-{att.ifname}"


def record(net: dict, att: Attachment, result: dict | None) -> dict:
    """What is stored per attachment: enough to DEL it later without anything else."""
    return {"network": net, "host": att.host, "containerId": att.container_id, "netns": att.netns,
            "ifName": att.ifname, "args": [list(a) for a in att.args], "runtimeConfig": att.runtime_config,
            "result": result}


def attachment_of(rec: dict) -> Attachment:
    return Attachment(rec["host"], rec["containerId"], rec["netns"], rec["ifName"],
                      tuple((k, v) for k, v in rec.get("args", [])), rec.get("runtimeConfig") or {})



def nft_tables(text: str) -> set[tuple[str, str]]:
    """`nft list tables` -> {(family, name)}."""
    return {(w[1], w[2]) for w in (line.split() for line in text.splitlines()) if len(w) == 3 and w[0] == "table"}


def drop_new_tables(before: str, after: str) -> list[list[str]]:
    """The commands that remove the tables a plugin made (portmap, firewall, bridge's ipMasq
    write through iptables-nft; DEL leaves the shared chains and an empty `ip6 nat`): only
    tables absent from the snapshot taken before the first ADD (pure)."""
    return [["nft", "delete", "table", fam, name] for fam, name in sorted(nft_tables(after) - nft_tables(before))]

# -- at the edge: commands on a host ----------------------------------------------------------

def record_path(ddir: str, key: str) -> str:
    return f"{ddir}/attachments/{key}.json"


async def _write_json(host, path: str, obj: dict) -> None:
    # `install -D` makes the directory too; the JSON goes on stdin, never into argv.
    await host.run(["install", "-D", "-m", "600", "/dev/stdin", path], input=json.dumps(obj, sort_keys=True))


async def _call(host, host_name: str, call: Call, prev: dict | None) -> dict | None:
    r = await host.run(call.argv, input=call.stdin(prev), check=False)
    if r.exit_status != 0:
        code, msg, details = parse_error(r.stdout, r.stderr)
        raise CniError(host_name, call.command, call.plugin, code, msg, details)
    return json.loads(r.stdout) if r.stdout.strip() else None


async def require_plugins(host, host_name: str, net: dict, cni_path: str = CNI_PATH) -> None:
    """Every plugin binary present, else one message with the install line (nothing changed)."""
    for p in net["plugins"]:
        binary = f"{cni_path}/{p['type']}"
        if (await host.run(["test", "-x", binary], check=False)).exit_status != 0:
            raise HostError(host_name, f"CNI plugin '{p['type']}' is missing ({binary} not found). "
                                       f"Install it with: {INSTALL}")


async def add(host, net: dict, att: Attachment, ddir: str | None = None, cni_path: str = CNI_PATH) -> dict:
    """ADD the attachment; on a plugin's error DEL what was done and raise the plugin's words."""
    ddir = ddir or data_dir(att.host)
    net = with_data_dir(net, ddir)
    await require_plugins(host, att.host, net, cni_path)
    path = record_path(ddir, record_key(net["name"], att))
    if (await host.run(["test", "-e", path], check=False)).exit_status == 0:  # the journal is never overwritten
        raise HostError(att.host, f"CNI ADD of {net['name']}/{att.container_id}/{att.ifname}: already attached "
                                  f"(record {path}); DEL it first, or run `invoke clean`")
    await _write_json(host, path, record(net, att, None))  # first, so a kill mid-ADD is findable
    prev = None
    try:
        for call in plan("ADD", net, att, cni_path):
            prev = await _call(host, att.host, call, prev)
    except CniError as exc:
        undo = await _del(host, net, att, prev, cni_path, strict=False)
        if not undo:
            await host.run(["rm", "-f", "--", path])
        after = "every plugin's change undone with DEL" if not undo else f"DEL to undo it also failed: {undo}"
        raise CniError(att.host, exc.command, exc.plugin, exc.code, exc.msg,
                       "; ".join(x for x in (exc.details, f"network {net['name']}", after) if x)) from None
    await _write_json(host, path, record(net, att, prev))
    return prev or {}


async def _del(host, net: dict, att: Attachment, result: dict | None, cni_path: str, strict: bool) -> str:
    """DEL in reverse order with the stored result; every plugin is called even after an error
    (each cleans up what it can); returns the errors' text ('' if none), or raises if strict."""
    errors = []
    for call in plan("DEL", net, att, cni_path):
        try:
            await _call(host, att.host, call, result)
        except CniError as exc:
            errors.append(exc)
    if errors and strict:
        raise errors[0]
    return "; ".join(str(e) for e in errors)


async def stored(host, net_name: str, att: Attachment, ddir: str | None = None) -> dict | None:
    """The stored record of an attachment, or None when there is none."""
    path = record_path(ddir or data_dir(att.host), record_key(net_name, att))
    r = await host.run(["cat", "--", path], check=False)
    if r.exit_status != 0:
        return None
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise HostError(att.host, f"CNI record {path} is unreadable (cut short?); `invoke clean` removes it") from None


async def check(host, net_name: str, att: Attachment, ddir: str | None = None, cni_path: str = CNI_PATH) -> None:
    """CHECK in order, each plugin given the stored result; raises the first plugin's error."""
    rec = await stored(host, net_name, att, ddir)
    if rec is None or rec["result"] is None:
        raise HostError(att.host, f"CNI CHECK of {net_name}/{att.container_id}: no stored ADD result to check against")
    for call in plan("CHECK", rec["network"], att, cni_path):
        await _call(host, att.host, call, rec["result"])


async def delete(host, net_name: str, att: Attachment, ddir: str | None = None, cni_path: str = CNI_PATH) -> bool:
    """DEL with the stored config and result, then forget the record; False if none was stored."""
    ddir = ddir or data_dir(att.host)
    rec = await stored(host, net_name, att, ddir)
    if rec is None:
        return False
    await _del(host, rec["network"], att, rec["result"], cni_path, strict=True)
    await host.run(["rm", "-f", "--", record_path(ddir, record_key(net_name, att))])
    return True


async def records(host, ddir: str) -> list[dict]:
    """Every stored attachment record of a data directory (for `clean`, with no other journal)."""
    r = await host.run(["find", f"{ddir}/attachments", "-maxdepth", "1", "-name", "*.json"], check=False)
    out = []
    for path in sorted(r.stdout.split()) if r.exit_status == 0 else []:
        text = (await host.run(["cat", "--", path], check=False)).stdout
        try:
            out.append(json.loads(text))
        except ValueError:
            continue  # a record cut short by a kill: its netns and names are the mode's to find
    return out


async def clean(host, ddir: str, cni_path: str = CNI_PATH) -> list[str]:
    """DEL every stored attachment (even one killed mid-ADD), then remove the data directory
    (IPAM files included). Returns the keys deleted."""
    if not (ddir.startswith(f"{RUN_DIR}/cni/") or ddir.rstrip("/").rpartition("/")[2].startswith(PREFIX)):
        raise PlanError(f"refusing to clean {ddir}: not a cnibench CNI data directory")
    done = []
    for rec in await records(host, ddir):
        att = attachment_of(rec)
        await _del(host, rec["network"], att, rec["result"], cni_path, strict=False)
        done.append(record_key(rec["network"]["name"], att))
    await host.run(["rm", "-rf", "--", ddir])
    return done


async def versions(host, host_name: str, plugins: Sequence[str], cni_path: str = CNI_PATH) -> dict:
    """The package's version and each plugin's supported spec versions (for the record)."""
    pkg = await host.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE], check=False)
    version = pkg.stdout.strip() if pkg.exit_status == 0 else None
    out: dict[str, Any] = {"package": PACKAGE, "version": version, "plugins": {}}
    for p in plugins:
        try:
            r = await host.run(["env", "CNI_COMMAND=VERSION", f"{cni_path}/{p}"], input="{}")
        except CommandFailed as exc:
            raise HostError(host_name, f"CNI plugin '{p}' did not answer VERSION: {exc}") from None
        out["plugins"][p] = json.loads(r.stdout).get("supportedVersions", [])
    return out
