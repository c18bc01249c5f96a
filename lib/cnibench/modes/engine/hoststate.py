"""Capture the network state of a host (or a local namespace) and diff two captures.

What `down` must leave exactly as `up` found it: links, addresses, routes (all tables), rules,
permanent neighbours, static FDB entries, the nftables ruleset, the sysctls modes touch, the
host's container namespaces, tc qdiscs and the filters on every link's ingress and egress, and
every part a registered mode kind adds (`NetworkMode.state_commands`, e.g. bpffs mounts and
pins). Only volatile values (timers, counters, lifetimes) are normalised.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import time
from typing import Awaitable, Callable, Sequence

from ...catalog import PREFIX
from ...infra.local import LocalHost
from ...parsing import ip_json
from ..registry import MODES

SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all", "net.ipv4.conf.default")


def state_commands(data_interface: str | None = None) -> list[tuple[str, list[str]]]:
    sysctls = list(SYSCTLS) + ([f"net.ipv4.conf.{data_interface}"] if data_interface else [])
    return [
        ("link", ["ip", "-d", "link", "show"]),
        ("addr", ["ip", "addr", "show"]),
        ("route", ["ip", "route", "show", "table", "all"]),
        ("rule", ["ip", "rule", "show"]),
        ("neigh", ["ip", "neigh", "show", "nud", "permanent"]),
        ("fdb", ["bridge", "fdb", "show"]),
        ("nft", ["nft", "list", "ruleset"]),
        ("sysctl", ["sysctl", *sysctls]),
        ("netns", ["ip", "netns", "list"]),
        ("qdisc", ["tc", "qdisc", "show"]),
        *kind_commands(),
    ]


def kind_commands(modes=MODES) -> list[tuple[str, list[str]]]:
    """The parts the registered kinds add, each name once (the first kind's command)."""
    seen: dict[str, list[str]] = {}
    for mode in modes.all():
        for name, argv in mode.state_commands():
            seen.setdefault(name, argv)
    return list(seen.items())


def _kind_normalise(name: str, text: str, modes=MODES) -> str:
    for mode in modes.all():
        if any(n == name for n, _ in mode.state_commands()):
            return mode.normalise_state(name, text)
    return text


async def tc_filters(run) -> str:
    """`tc filter show dev X ingress|egress` of every link (tc lists filters per device)."""

    links = [l["ifname"] for l in ip_json(await run(["ip", "-j", "link", "show"]))]
    parts = []
    for dev in sorted(links):
        for hook in ("ingress", "egress"):
            out = (await run(["tc", "filter", "show", "dev", dev, hook])).strip()
            if out:
                parts.append(f"{dev} {hook}:\n{out}")
    return "\n".join(parts)


_TIMERS = re.compile(r"\b(\w+_timer)\s+[\d.]+")
_LIFETIMES = re.compile(r"\b(valid_lft|preferred_lft)\s+\d+sec")
_EXPIRES = re.compile(r"\bexpires\s+\d+sec")
_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


def normalise(name: str, text: str, netns_prefix: str | None = None) -> str:
    lines = text.splitlines()
    if name == "link":
        lines = [_TIMERS.sub(r"\1 *", l) for l in lines]
    elif name == "addr":
        lines = [_LIFETIMES.sub(r"\1 *", l) for l in lines]
    elif name == "route":
        lines = [_EXPIRES.sub("expires *", l) for l in lines]
    elif name == "fdb":
        lines = [l for l in lines if "permanent" in l or "static" in l]
    elif name == "nft":
        lines = [_COUNTER.sub("counter packets * bytes *", l) for l in lines]
    elif name == "netns":
        # named namespaces are machine-wide: only this host's containers are its state
        names = [l.split()[0] for l in lines if l.strip()]
        lines = sorted(n for n in names if netns_prefix and n.startswith(netns_prefix))
    else:
        lines = _kind_normalise(name, text).splitlines()
    return "\n".join(l.rstrip() for l in lines)


async def capture(run: Callable[[Sequence[str]], Awaitable[str]], data_interface: str | None = None,
                  netns_prefix: str | None = None) -> dict[str, str]:
    """`run(argv) -> stdout` runs a command where the state lives (a host, a namespace)."""
    out = {name: normalise(name, await run(argv), netns_prefix) for name, argv in state_commands(data_interface)}
    out["tc_filter"] = await tc_filters(run)
    return out


async def settle(run, timeout: float = 10.0) -> None:
    """Wait until IPv6 duplicate address detection is over (a fresh link's addresses are
    'tentative' for a second or two and would show up as a difference)."""
    deadline = time.monotonic() + timeout
    while "tentative" in await run(["ip", "addr", "show"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def capture_host(host) -> dict[str, str]:
    async def run(argv):
        return (await host.run(argv)).stdout

    await settle(run)
    return await capture(run, host.spec.data_interface, f"{PREFIX}-{host.name}-")


async def capture_local(netns: str) -> dict[str, str]:
    local = LocalHost()

    async def run(argv):
        if argv[:1] == ["ip"] and argv[1:3] == ["netns", "list"]:
            return ""  # the fabric holds no containers
        return (await local.run(argv, netns=netns)).stdout

    await settle(run)
    return await capture(run)


def diff(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Unified diffs of every part that changed (empty dict: identical)."""
    out = {}
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name, ""), after.get(name, "")
        if a != b:
            out[name] = "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), f"before/{name}",
                                                       f"after/{name}", lineterm=""))
    return out
