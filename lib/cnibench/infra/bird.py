"""BIRD 2 under the project's control: Calico's BGP distribution of pod routes, as a study setting.

The project's own BIRD process per host, never the system service: its config, control socket,
pid file and log under the run directory (`<run>/bird/<host>/`), started with `bird -c -s -P`.
Hold time 3 s (a dead peer's routes go within seconds); the kernel protocol has no `persist`, so
the routes BIRD installed (`proto bird`) leave with it. Rendering and the `birdc` parsers are
pure; start, wait, stop and leftovers run through any host's `run(argv)`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Sequence

from ..errors import HostError, PlanError
from .config import RUN_DIR

PACKAGE = "bird2"
INSTALL = f"apt-get install -y --no-install-recommends {PACKAGE}"
AS_NUMBER = 64512  # Calico's default node-to-node mesh AS
HOLD_TIME = 3
KEEPALIVE_TIME = 1  # BIRD wants keepalive < hold
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Peer:
    name: str  # a BIRD symbol: the protocol is `cnib_peer_<name>`
    address: str


@dataclass(frozen=True)
class BirdConfig:
    router_id: str  # this host's data address
    blocks: tuple[str, ...]  # pod CIDRs this host owns (Calico's blocks): exported, blackholed here
    peers: tuple[Peer, ...]
    as_number: int = AS_NUMBER
    hold_time: int = HOLD_TIME
    log_file: str | None = None


def run_dir(host: str, base: str | None = None) -> str:
    return f"{base or RUN_DIR}/bird/{host}"


def paths(host: str, base: str | None = None) -> dict[str, str]:
    d = run_dir(host, base)
    return {"dir": d, "config": f"{d}/bird.conf", "socket": f"{d}/bird.ctl", "pid": f"{d}/bird.pid",
            "log": f"{d}/bird.log"}


def _validate(cfg: BirdConfig) -> None:
    ipaddress.IPv4Address(cfg.router_id)
    for b in cfg.blocks:
        ipaddress.IPv4Network(b)
    for p in cfg.peers:
        ipaddress.IPv4Address(p.address)
        if not _NAME.match(p.name):
            raise PlanError(f"BIRD peer name {p.name!r}: letters, digits and _ only, starting with a letter")
    if not 3 <= cfg.hold_time <= 65535 or cfg.hold_time <= KEEPALIVE_TIME:
        raise PlanError(f"BIRD hold time {cfg.hold_time}: BGP allows 3..65535 s, above the keepalive")


def render(cfg: BirdConfig) -> str:
    """The config (pure), in the shape of Calico's templates translated to BIRD 2: the host's
    blocks exported to every peer and nothing else, learned routes into the kernel."""
    _validate(cfg)
    blocks = ", ".join(cfg.blocks)
    out = [f"# cnibench: BIRD 2 for {cfg.router_id}, its own process (not bird.service)",
           f"router id {cfg.router_id};"]
    if cfg.log_file:
        out.append(f'log "{cfg.log_file}" all;')
    out += ["filter cnib_export_to_peers {",
            f"  if net ~ [ {blocks} ] then accept;" if cfg.blocks else "  reject;",
            "  reject;", "}",
            "protocol device { scan time 2; }",
            "protocol kernel cnib_kernel {",
            "  learn;", "  scan time 2;",
            "  ipv4 { import none; export where source = RTS_BGP; };",  # no `persist`: routes leave with BIRD
            "  merge paths on;", "}"]
    if cfg.blocks:
        out += ["protocol static cnib_blocks {", "  ipv4;", *[f"  route {b} blackhole;" for b in cfg.blocks], "}"]
    for p in cfg.peers:
        out += [f"protocol bgp cnib_peer_{p.name} {{",
                f"  local {cfg.router_id} as {cfg.as_number};",
                f"  neighbor {p.address} as {cfg.as_number};",
                "  direct;",
                f"  hold time {cfg.hold_time};", f"  keepalive time {KEEPALIVE_TIME};",
                "  connect retry time 1;", "  error wait time 1, 5;",
                "  ipv4 { import all; export filter cnib_export_to_peers; next hop self; };", "}"]
    return "\n".join(out) + "\n"


# -- birdc output -----------------------------------------------------------------------------

_PROTO = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(up|down|start|stop|flush)\s+(\S+(?: \S+)?)\s*(.*)$")
_ROUTE = re.compile(r"^(\d+\.\d+\.\d+\.\d+/\d+)?\s+(\w+)\s+\[(\S+)\s[^\]]*\]\s*(\*)?")
_VIA = re.compile(r"^\s+via (\S+) on (\S+)")


def parse_protocols(text: str) -> dict[str, dict]:
    """`birdc show protocols`: {name: {proto, state, info}}."""
    out = {}
    for line in text.splitlines():
        if line.startswith(("BIRD ", "Name ")) or not line.strip():
            continue
        m = _PROTO.match(line)
        if m:
            out[m.group(1)] = {"proto": m.group(2), "state": m.group(4), "info": m.group(6).strip()}
    return out


def parse_routes(text: str) -> list[dict]:
    """`birdc show route`: [{net, kind, protocol, best, via, dev}] (a net's extra paths too)."""
    out: list[dict] = []
    net = None
    for line in text.splitlines():
        m = _ROUTE.match(line)
        if m and (m.group(1) or net):
            net = m.group(1) or net
            out.append({"net": net, "kind": m.group(2), "protocol": m.group(3), "best": bool(m.group(4)),
                        "via": None, "dev": None})
            continue
        v = _VIA.match(line)
        if v and out:
            out[-1]["via"], out[-1]["dev"] = v.group(1), v.group(2)
    return out


def established(protocols: dict[str, dict], peers: Sequence[Peer]) -> list[str]:
    """The peers whose BGP session is not Established (empty when all are)."""
    return [p.name for p in peers if protocols.get(f"cnib_peer_{p.name}", {}).get("info") != "Established"]


def learned(routes: list[dict], peers: Sequence[Peer]) -> set[str]:
    """The nets learned over BGP from the given peers."""
    names = {f"cnib_peer_{p.name}" for p in peers}
    return {r["net"] for r in routes if r["protocol"] in names}


# -- at the edge: the process on a host -------------------------------------------------------

async def _birdc(host, sock: str, *cmd: str):
    return await host.run(["birdc", "-s", sock, *cmd], check=False, timeout=10)


async def start(host, host_name: str, cfg: BirdConfig, base: str | None = None) -> dict[str, str]:
    """Write the config, have BIRD parse it (`-p`), then start the project's own daemon. On any
    failure nothing is left: the message names the host and carries BIRD's own words."""
    p = paths(host_name, base)
    if (await host.run(["sh", "-c", 'command -v "$1"', "cnib", "bird"], check=False)).exit_status != 0:
        raise HostError(host_name, f"BIRD is missing (no `bird` program). Install it with: {INSTALL}")
    text = render(BirdConfig(**{**cfg.__dict__, "log_file": cfg.log_file or p["log"]}))
    await host.run(["install", "-D", "-m", "644", "/dev/stdin", p["config"]], input=text)
    for argv in (["bird", "-p", "-c", p["config"]], ["bird", "-c", p["config"], "-s", p["socket"], "-P", p["pid"]]):
        r = await host.run(argv, check=False)
        if r.exit_status != 0:
            await host.run(["rm", "-rf", "--", p["dir"]])
            words = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.exit_status}")
            raise HostError(host_name, f"BIRD did not start: {words}")
    return p


async def wait_up(host, host_name: str, p: dict, peers: Sequence[Peer], nets: Sequence[str],
                  timeout: float = 15) -> dict:
    """Until every peer's session is Established and every net in `nets` is learned over BGP
    (the routes then also in the kernel as `proto bird`); returns what was seen and when."""
    start_t = time.monotonic()
    protocols: dict = {}
    got: set = set()
    while time.monotonic() - start_t < timeout:
        protocols = parse_protocols((await _birdc(host, p["socket"], "show", "protocols")).stdout)
        got = learned(parse_routes((await _birdc(host, p["socket"], "show", "route")).stdout), peers)
        kernel = set(await kernel_routes(host))
        if not established(protocols, peers) and set(nets) <= got and set(nets) <= kernel:
            return {"seconds": round(time.monotonic() - start_t, 3), "learned": sorted(got), "protocols": protocols}
        await asyncio.sleep(0.2)
    states = "; ".join(f"{n}: {v['state']} {v['info']}".strip() for n, v in protocols.items() if v["proto"] == "BGP")
    raise HostError(host_name, f"BIRD: BGP not up within {timeout:g} s (sessions: {states or 'none'}; "
                               f"learned {sorted(got) or 'nothing'}, wanted {sorted(nets)})")


async def kernel_routes(host) -> list[str]:
    """The destinations of the kernel's `proto bird` routes (main table)."""
    r = await host.run(["ip", "-4", "route", "show", "proto", "bird"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


async def _pid(host, p: dict) -> int | None:
    r = await host.run(["cat", "--", p["pid"]], check=False)
    return int(r.stdout.strip()) if r.exit_status == 0 and r.stdout.strip().isdigit() else None


async def running(host, pid: int | None) -> bool:
    """A live process (a zombie left for a parent to reap counts as gone)."""
    if pid is None:
        return False
    r = await host.run(["ps", "-o", "stat=", "-p", str(pid)], check=False)
    return r.exit_status == 0 and bool(r.stdout.strip()) and not r.stdout.strip().startswith("Z")


async def stop(host, p: dict, journalled_routes: Sequence[str] = (), grace: float = 5) -> None:
    """`birdc down` (BIRD withdraws its kernel routes), TERM then KILL if it lingers; then the
    journalled `proto bird` routes a killed BIRD left, and the run directory, are removed."""
    pid = await _pid(host, p)
    if await running(host, pid):
        await _birdc(host, p["socket"], "down")
        deadline = time.monotonic() + grace
        while await running(host, pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for sig in ("TERM", "KILL"):
            if await running(host, pid):
                await host.run(["kill", f"-{sig}", str(pid)], check=False)
                await asyncio.sleep(0.5)
    await remove_routes(host, journalled_routes)
    await host.run(["rm", "-rf", "--", p["dir"]])


async def remove_routes(host, nets: Sequence[str]) -> list[str]:
    """Delete `proto bird` routes to the given (journalled) nets only: a host may run its own
    BIRD, so never every `proto bird` route."""
    present = set(await kernel_routes(host))
    gone = [n for n in nets if n in present]
    for n in gone:
        await host.run(["ip", "route", "del", n, "proto", "bird"], check=False)
    return gone


async def leftovers(host, p: dict, journalled_routes: Sequence[str] = ()) -> list[str]:
    """What a stopped BIRD left: its process, files in its directory, journalled routes."""
    out = []
    pid = await _pid(host, p)
    if await running(host, pid):
        out.append(f"process {pid}")
    r = await host.run(["find", p["dir"], "-mindepth", "1"], check=False)
    out += [f"file {f}" for f in r.stdout.split()] if r.exit_status == 0 else []
    out += [f"route {n} proto bird" for n in set(journalled_routes) & set(await kernel_routes(host))]
    return out
