"""`invoke clean`: remove every leftover of any network mode, by ownership, after a crash.

1. The mode's state (the driver's copy; without one, the hosts' checked copies, see
   modes/engine/state.py): undo every step that was started. A state file that cannot be read or is
   not trusted is reported and treated as absent: the sweep below still runs.
2. Sweep by prefix on every inventory host: container namespaces `cnib-<host>-*`, the probe
   namespaces `cnib-probe-*` a killed `hosts.check` leaves, interfaces the registered mode kinds
   own (`NetworkMode.owned_links`) and the kernel probes' `cnibp*`, nftables tables `cnib*`,
   what each kind lists as its leftovers (`NetworkMode.leftovers`, e.g. a bpffs mount), routes
   with protocol 203 (our marker); then restore the sysctls from their recorded originals.
3. On the testbed: routes with protocol 203 in the fabric (the VPC router), and its sysctls.
4. The state is forgotten only when every undo and restore succeeded; otherwise it is kept
   (and said so) for the next `clean`.
5. The workload's leftovers on every host (a run killed before its `finally`): nginx started
   from /run/cnibench/workload/nginx-*/ is killed (only a process that is still that nginx),
   and those directories and the generators' /run/cnibench/workload/<generator>-<pid>-*
   scratch directories are removed.
Never the data interface, never the interface the SSH session uses, never the testbed's own
namespaces or links (cnib-<host>, cnib-fabric, cnib-m-*, cnibd-*, cnibbr0).
"""

from __future__ import annotations

import json
import re

from ..catalog import PREFIX, ROUTE_PROTO
from ..infra.config import RUN_DIR
from ..infra.local import LocalHost
from ..parsing import ip_json
from .engine.apply import Runners, settings_from_state, undo_steps
from .engine.state import load, read_originals, remove_all, steps_to_undo
from .node import steps as node
from .registry import MODES

PROBE_NETNS = f"{PREFIX}-probe-"  # precheck.probe_kernel's throwaway namespaces
PROBE_LINK = rf"{PREFIX}probe\w*"  # throwaway probe links


def link_pattern(modes=MODES) -> re.Pattern:
    """Interface names the registered kinds own; anything else is not ours to remove."""
    return re.compile("^(" + "|".join((*(p for m in modes.all() for p in m.owned_links), PROBE_LINK)) + ")$")


def sweep_plan(host: str, netns: list[str], links: list[str], tables: list[tuple[str, str]], protect: set[str],
               leftovers: list[list[str]] = (), modes=MODES) -> list[list[str]]:
    """Commands removing this host's leftovers (pure): netns, links, tables, the kinds'
    `leftovers` (their commands, from NetworkMode.leftovers), then routes."""
    owned = link_pattern(modes)
    argvs = [["ip", "netns", "del", n] for n in sorted(netns) if n.startswith((f"{PREFIX}-{host}-", PROBE_NETNS))]
    argvs += [["ip", "link", "del", lk] for lk in sorted(links) if owned.match(lk) and lk not in protect]
    argvs += [["nft", "delete", "table", fam, name] for fam, name in sorted(tables) if name.startswith(f"{PREFIX}")]
    argvs += [list(a) for a in leftovers]
    argvs.append(["ip", "route", "flush", "table", "main", "proto", ROUTE_PROTO])
    return argvs


async def kind_leftovers(host, modes=MODES) -> list[list[str]]:
    """Run each kind's read-only queries on `host`; the commands removing what they found."""
    argvs: list[list[str]] = []
    dev = host.spec.data_interface
    for mode in modes.all():
        queries = mode.leftover_queries(host.name, dev)
        outputs = {k: (await host.run(argv, check=False)).stdout for k, argv in queries.items()}
        argvs += [a for a in mode.leftovers(host.name, dev, outputs) if a not in argvs]
    query = node.leftover_query(host.name)  # node: kubernetes, its iptables-nft part
    return argvs + node.leftovers(host.name, (await host.run(query, check=False)).stdout)


# Kills nginx masters whose pid file is ours, and their workers, then removes our
# scratch directories and the C programs built for this host (cbuild: rebuilt on next use);
# prints each path removed. A pid is killed only while it is still
# the nginx master of that directory (its command line names it): a pid file outlives its
# process, and the number may now belong to anything (or be -1: every process).
WORKLOAD_SWEEP_SH = r"""d=$1
[ -d "$d" ] || exit 0
cmd() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null; }
for f in "$d"/nginx-*/nginx.pid; do
  [ -f "$f" ] || continue
  p=$(head -c 20 "$f" 2>/dev/null | tr -d ' \n')
  case "$p" in ''|*[!0-9]*|0*|1) continue ;; esac
  case "$(cmd "$p")" in "nginx: master process "*"${f%/nginx.pid}/"*) ;; *) continue ;; esac
  w=""
  for c in $(cat "/proc/$p/task/$p/children" 2>/dev/null); do
    case "$(cmd "$c")" in "nginx: "*) w="$w $c" ;; esac
  done
  kill -KILL "$p" $w 2>/dev/null
done
for x in "$d"/nginx-* "$d"/h2load-* "$d"/tcpkali-* "$d"/openloop-* "${d%/workload}"/bin/*; do
  [ -e "$x" ] || continue
  rm -rf -- "$x" && echo "$x"
done
"""


def workload_sweep_argv(run_dir: str) -> list[str]:
    return ["sh", "-c", WORKLOAD_SWEEP_SH, f"{PREFIX}-clean", f"{run_dir}/workload"]


async def sweep_workload(host) -> list[str]:
    """Remove the workload's leftovers on one host; returns what was removed."""
    r = await host.run(workload_sweep_argv(str(RUN_DIR)), check=False)
    return [f"{host.name}: removed {line}" for line in r.stdout.split()]


async def _listing(host):
    ns_out = (await host.run(["ip", "-j", "netns", "list"], check=False)).stdout.strip()
    netns = [e["name"] for e in ip_json(ns_out)]
    links = [l["ifname"] for l in ip_json((await host.run(["ip", "-j", "link", "show"])).stdout)]
    nft = await host.run(["nft", "-j", "list", "tables"], check=False)
    listed = json.loads(nft.stdout or '{"nftables": []}').get("nftables", []) if nft.exit_status == 0 else []
    tables = [(t["table"]["family"], t["table"]["name"]) for t in listed if "table" in t]
    env = await host.ssh_connection()  # not through sudo, which drops it
    protect = {host.spec.data_interface}
    if env:
        route = ip_json((await host.run(["ip", "-j", "route", "get", env[0]])).stdout)
        protect |= {r.get("dev") for r in route if r.get("dev")}
    return netns, links, tables, protect, await kind_leftovers(host)


async def restore_sysctls(target, netns: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """Put back the sysctl originals recorded on `target`: (done, ignored, problems)."""
    originals, why = await read_originals(target)
    ignored = [why] if why else []
    if not originals:
        return [], ignored, []
    r = await target.run(["sysctl", "-q", "-w", *originals], netns=netns, check=False)
    if r.exit_status != 0:
        return [], ignored, [f"{target.name}: sysctl -w {' '.join(originals)}: {(r.stderr or r.stdout).strip()}"]
    return [f"{target.name}: restored {' '.join(originals)}"], ignored, []


async def clean(fleet) -> list[str]:
    """Remove every leftover of any mode; returns what was done."""
    loaded = await load(fleet)
    done = [f"ignored: {p}" for p in loaded.problems]
    problems: list[str] = []
    state = loaded.state
    if state:
        problems += await undo_steps(Runners(fleet, settings_from_state(state, fleet)), steps_to_undo(state),
                                     strict=False)
        failed = f"; {len(problems)} undo(s) failed" if problems else ""
        done.append(f"undid the stored plan of {state.get('mode')} ({state.get('status')})" + failed)

    async def sweep(host):
        netns, links, tables, protect, leftovers = await _listing(host)
        ran = []
        for argv in sweep_plan(host.name, netns, links, tables, protect, leftovers):
            r = await host.run(argv, check=False)
            if r.exit_status == 0 and argv[:3] != ["ip", "route", "flush"]:
                ran.append(f"{host.name}: {' '.join(argv)}")
        restored, ignored, failed = await restore_sysctls(host)
        return ran + restored + [f"ignored: {w}" for w in ignored] + await sweep_workload(host), failed

    for ran, failed in (await fleet.gather("clean", sweep)).values():
        done += ran
        problems += failed
    tb = fleet.inventory.extra.get("testbed")
    local = None
    if tb and tb.get("fabric_netns"):
        local = LocalHost()
        await local.run(["ip", "route", "flush", "table", "main", "proto", ROUTE_PROTO], netns=tb["fabric_netns"],
                        check=False)
        restored, ignored, failed = await restore_sysctls(local, tb["fabric_netns"])
        done += restored + [f"ignored: {w}" for w in ignored]
        problems += failed
    if problems:
        done += [f"problem: {p}" for p in problems]
        done.append("kept the mode's state and sysctl originals: fix the problems above, then run 'invoke clean' again")
    else:
        await remove_all(fleet, local)
    return done
