"""`invoke clean`: remove every leftover of any network mode, by ownership, after a crash.

1. If a mode's state file exists, run its stored undo commands (this restores sysctls).
2. Sweep by prefix on every inventory host: container namespaces `cnib-<host>-*`, interfaces
   the modes name (cnibcni0, cnibflannel.1, cnibdocker0, cnib[vdcim]<host>), nftables tables
   `cnib*`, routes with protocol 203 (our marker), and /run/cnibench/modes/<host>.json.
3. On the testbed: routes with protocol 203 in the fabric (the VPC router).
4. The workload's leftovers on every host (a run killed before its `finally`): nginx started
   from /run/cnibench/workload/nginx-*/ is killed, and those directories and the generators'
   /run/cnibench/workload/<generator>-<pid>-* scratch directories are removed.
Never the data interface, never the interface the SSH session uses, never the testbed's own
namespaces or links (cnib-<host>, cnib-fabric, cnib-m-*, cnibd-*, cnibbr0).
"""

from __future__ import annotations

import json
import re

from .modes.base import ROUTE_PROTO

# Interface names modes generate (see the modes' modules); anything else is not ours to remove.
MODE_LINK = re.compile(r"^cnib(cni0|docker0|flannel\.1|[vdcim][a-z][a-z0-9]{0,7}|probe\w*)$")


def sweep_plan(host: str, netns: list[str], links: list[str], tables: list[tuple[str, str]], protect: set[str]) -> list[list[str]]:
    """Commands removing this host's leftovers (pure): netns, then links, tables, routes."""
    argvs = [["ip", "netns", "del", n] for n in sorted(netns) if n.startswith(f"cnib-{host}-")]
    argvs += [["ip", "link", "del", l] for l in sorted(links) if MODE_LINK.match(l) and l not in protect]
    argvs += [["nft", "delete", "table", fam, name] for fam, name in sorted(tables) if name.startswith("cnib")]
    argvs.append(["ip", "route", "flush", "table", "main", "proto", ROUTE_PROTO])
    return argvs


# Kills nginx masters whose pid file is ours, and their workers, then removes our
# scratch directories; prints each directory removed.
WORKLOAD_SWEEP_SH = r"""d=$1
[ -d "$d" ] || exit 0
for f in "$d"/nginx-*/nginx.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f" 2>/dev/null) && [ -n "$p" ] || continue
  kill -KILL "$p" $(cat "/proc/$p/task/$p/children" 2>/dev/null) 2>/dev/null
done
for x in "$d"/nginx-* "$d"/h2load-* "$d"/tcpkali-*; do
  [ -e "$x" ] || continue
  rm -rf -- "$x" && echo "$x"
done
"""


def workload_sweep_argv(run_dir: str) -> list[str]:
    return ["sh", "-c", WORKLOAD_SWEEP_SH, "cnib-clean", f"{run_dir}/workload"]


async def sweep_workload(host) -> list[str]:
    """Remove the workload's leftovers on one host; returns what was removed."""
    from .config import RUN_DIR

    r = await host.run(workload_sweep_argv(str(RUN_DIR)), check=False)
    return [f"{host.name}: removed {line}" for line in r.stdout.split()]


async def _listing(host):
    ns_out = (await host.run(["ip", "-j", "netns", "list"], check=False)).stdout.strip()
    netns = [e["name"] for e in json.loads(ns_out or "[]")]
    links = [l["ifname"] for l in json.loads((await host.run(["ip", "-j", "link", "show"])).stdout or "[]")]
    nft = await host.run(["nft", "-j", "list", "tables"], check=False)
    tables = [(t["table"]["family"], t["table"]["name"]) for t in json.loads(nft.stdout or '{"nftables": []}').get("nftables", []) if "table" in t] if nft.exit_status == 0 else []
    env = await host.ssh_connection()  # not through sudo, which drops it
    protect = {host.spec.data_interface}
    if env:
        route = json.loads((await host.run(["ip", "-j", "route", "get", env[0]])).stdout or "[]")
        protect |= {r.get("dev") for r in route if r.get("dev")}
    return netns, links, tables, protect


async def clean(fleet) -> list[str]:
    """Remove every leftover of any mode; returns what was done."""
    from .modes.apply import Runners, _settings_from, undo_steps
    from .modes.base import Step
    from .modes.local import LocalHost
    from .modes.state import current_state, state_path

    done: list[str] = []
    state = await current_state(fleet)
    if state:
        steps = [Step.from_dict(d) for d in state.get("steps", [])]
        problems = await undo_steps(Runners(fleet, _settings_from(state, fleet)), steps, strict=False)
        done.append(f"undid the stored plan of {state.get('mode')} ({state.get('status')})" + (f"; {len(problems)} undo(s) failed" if problems else ""))

    async def sweep(host):
        netns, links, tables, protect = await _listing(host)
        ran = []
        for argv in sweep_plan(host.name, netns, links, tables, protect) + [["rm", "-f", state_path(host.name)]]:
            r = await host.run(argv, check=False)
            if r.exit_status == 0 and argv[:3] != ["ip", "route", "flush"] and argv[0] != "rm":
                ran.append(f"{host.name}: {' '.join(argv)}")
        return ran + await sweep_workload(host)

    for ran in (await fleet.gather("clean", sweep)).values():
        done += ran
    tb = fleet.inventory.extra.get("testbed")
    if tb and tb.get("fabric_netns"):
        await LocalHost().run(["ip", "route", "flush", "table", "main", "proto", ROUTE_PROTO], netns=tb["fabric_netns"], check=False)
    return done
