"""calico-routed with `routing: bgp`: each host's pod block reaches its peers over BGP, as Calico
distributes it, from the project's own BIRD 2 (infra/bird.py), instead of the static routes.

Per host, as steps (pure; the engine journals and undoes them like any other):

1. per peer block, a journal step: refuses if a `proto bird` route to it is already there (a
   BIRD of the host's own); its undo deletes that one route (`ip route del NET proto bird`), so a
   killed BIRD's routes go, and never a route by protocol alone;
2. the run directory `<run>/bird/<host>/` and the config (`bird.render`); the undo stops this
   BIRD (`birdc down`, TERM, KILL, by the pid file in that directory) and removes the directory;
3. `bird -p` (BIRD parses its config), then the daemon (`-c -s -P`, no system service);
4. a wait until every peer block is in the kernel as `proto bird` (BIRD's BGP start takes ~4 s).

Verify adds: each host has the peer blocks as `proto bird` routes and birdc says every session
is Established. `clean` without a journal stops a BIRD found by its run directory only, and
leaves `proto bird` routes alone (BIRD without `persist` withdraws its own as it stops).
"""

from __future__ import annotations

import re
from typing import Mapping

from ...infra import bird
from ..base import Check, HostFacts, Step, step
from ..node.checks import require as require_programs

ROUTING = ("static", "bgp")  # calico-routed's `routing` setting: static routes (the default) or BGP
WAIT_S = 20  # how long up waits for the peers' blocks to be learned

JOURNAL_SH = ('test -z "$(ip -4 route show "$1" proto bird)" || '
              '{ echo "a proto bird route to $1 is already there (a BIRD of the host\'s own?)" >&2; exit 1; }')
WRITE_SH = 'mkdir -p -m 700 -- "$1" && printf "%s" "$2" > "$1/bird.conf"'
STOP_SH = ('d=$1; pid=$(cat -- "$d/bird.pid" 2>/dev/null); '
           'alive() { [ -n "$pid" ] && s=$(ps -o stat=,comm= -p "$pid") && case $s in Z*) return 1;; '
           '*bird*) return 0;; *) return 1;; esac; }; '
           'if alive; then birdc -s "$d/bird.ctl" down >/dev/null 2>&1; i=0; '
           'while alive && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; fi; '
           'for sig in TERM KILL; do alive && kill -$sig "$pid" && sleep 0.5; done; '
           'rm -rf -- "$d"; rmdir -- "${d%/*}" 2>/dev/null; true')
WAIT_SH = ('t=$1; shift; i=0; while [ $i -lt $((t*10)) ]; do miss=; for n; do '
           'ip -4 route show "$n" proto bird | grep -q . || miss="$miss $n"; done; '
           '[ -z "$miss" ] && exit 0; sleep 0.1; i=$((i+1)); done; '
           'echo "BIRD: not learned over BGP within $t s:$miss" >&2; exit 1')
PRESENT_SH = 'test -d "$1" && echo present; true'


def peers(hosts: HostFacts, name: str) -> tuple[bird.Peer, ...]:
    return tuple(bird.Peer(p.name, p.data_address) for p in hosts.peers(name))


def config(hosts: HostFacts, name: str, subnets: Mapping[str, object]) -> bird.BirdConfig:
    h = hosts[name]
    return bird.BirdConfig(h.data_address, (str(subnets[name]),), peers(hosts, name),
                           log_file=bird.paths(name)["log"])


def steps(hosts: HostFacts, name: str, subnets: Mapping[str, object]) -> list[Step]:
    """The BIRD steps of host `name` (pure): journal its peers' blocks, config, start, wait."""
    p = bird.paths(name)
    nets = [str(subnets[q.name]) for q in hosts.peers(name)]
    out = [step(name, ["sh", "-c", JOURNAL_SH, "cnib", n], ["ip", "route", "del", n, "proto", "bird"]) for n in nets]
    out += [
        step(name, ["sh", "-c", WRITE_SH, "cnib", p["dir"], bird.render(config(hosts, name, subnets))],
             ["sh", "-c", STOP_SH, "cnib", p["dir"]]),
        step(name, ["bird", "-p", "-c", p["config"]]),
        step(name, ["bird", "-c", p["config"], "-s", p["socket"], "-P", p["pid"]]),
        step(name, ["sh", "-c", WAIT_SH, "cnib", WAIT_S, *nets]),
    ]
    return out


async def require(fleet) -> None:
    """Before any change: BIRD 2 on every host (`bird`, `birdc`), else the install line."""
    await require_programs(fleet, {"bird": bird.PACKAGE, "birdc": bird.PACKAGE})


def undo_shapes(host: str) -> list[tuple[str, ...]]:
    """The undos above, as argv patterns (engine/trust.py)."""
    return [("ip", "route", "del", r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}", "proto", "bird"),
            ("sh", "-c", re.escape(STOP_SH), "cnib", re.escape(bird.paths(host)["dir"]))]


def leftover_queries(host: str) -> dict[str, list[str]]:
    return {"bird": ["sh", "-c", PRESENT_SH, "cnib", bird.paths(host)["dir"]]}


def leftovers(host: str, outputs: Mapping[str, str]) -> list[list[str]]:
    """Stop our BIRD if its run directory is there (pure); its routes go with it (no persist)."""
    if outputs.get("bird", "").strip() == "present":
        return [["sh", "-c", STOP_SH, "cnib", bird.paths(host)["dir"]]]
    return []


def route_check(name: str, kernel: list[str], wanted: list[str]) -> Check:
    missing = sorted(set(wanted) - set(kernel))
    return Check(f"{name}: the peers' pod blocks are learned over BGP (proto bird in the kernel)", not missing,
                 f"proto bird: {', '.join(kernel) or 'none'}" + (f"; missing {', '.join(missing)}" if missing else ""))


def session_check(name: str, protocols: dict[str, dict], want: tuple[bird.Peer, ...]) -> Check:
    down = bird.established(protocols, want)
    info = "; ".join(f"{n}: {v['info'] or v['state']}" for n, v in protocols.items() if v["proto"] == "BGP")
    return Check(f"{name}: birdc says every BGP session is Established", not down, info or "no BGP protocol")


async def checks(fleet, hosts: HostFacts, subnets: Mapping[str, object]) -> list[Check]:
    """Verify: on every host, the peers' blocks are `proto bird` routes, every session Established."""
    out = []
    for h in hosts:
        host = fleet[h.name]
        wanted = [str(subnets[q.name]) for q in hosts.peers(h.name)]
        out.append(route_check(h.name, await bird.kernel_routes(host), wanted))
        r = await host.run(["birdc", "-s", bird.paths(h.name)["socket"], "show", "protocols"], check=False)
        out.append(session_check(h.name, bird.parse_protocols(r.stdout), peers(hosts, h.name)))
    return out
