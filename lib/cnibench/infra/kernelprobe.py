"""Kernel support is probed, not guessed: a throwaway interface of each kind is created and
deleted inside a throwaway namespace, so the probe changes nothing on the host.

Which link kinds to probe is the caller's to say (the modes' registry lists what its modes
need: `cnibench.modes.registry.MODES.link_kinds()`); this module only knows how to probe one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Iterable

from ..catalog import PREFIX
from .hosts import Host


@dataclass(frozen=True)
class LinkKind:
    """A kernel link type to probe: `ip link add NAME [link PARENT] type KIND ARGS...`."""

    kind: str
    args: tuple[str, ...] = ()  # the words after `type KIND` (e.g. a vxlan's id)
    on_parent: bool = False  # made on a parent link (macvlan, ipvlan): a veth in the namespace


def probe_commands(netns: str, kind: LinkKind) -> list[list[str]]:
    """argv lists that create one throwaway interface of `kind` inside `netns` (pure)."""
    ip = ["ip", "-n", netns, "link", "add"]
    if not kind.on_parent:
        return [ip + [f"{PREFIX}p0", "type", kind.kind, *kind.args]]
    return [
        ip + [f"{PREFIX}pp0", "type", "veth", "peer", "name", f"{PREFIX}pp1"],
        ip + [f"{PREFIX}p0", "link", f"{PREFIX}pp0", "type", kind.kind, *kind.args],
    ]


async def probe_kernel(host: Host, kinds: Iterable[LinkKind]) -> dict[str, dict]:
    """Create and delete one interface of each kind inside a throwaway namespace."""
    ns = f"{PREFIX}-probe-{secrets.token_hex(3)}"
    await host.run(["ip", "netns", "add", ns])
    try:
        errors = await probe_link_kinds(host, ns, kinds)
    finally:
        await host.run(["ip", "netns", "del", ns], check=False)
    return {kind: {"ok": not err, "reason": _explain(kind, err) if err else ""} for kind, err in errors.items()}


async def probe_link_kinds(host: Host, netns: str, kinds: Iterable[LinkKind]) -> dict[str, str]:
    """Inside an existing throwaway namespace: kind -> "" if it can be created, else the error."""
    out: dict[str, str] = {}
    for kind in kinds:
        err = ""
        for argv in probe_commands(netns, kind):
            r = await host.run(argv, check=False, timeout=10)
            if not r.ok:
                err = r.stderr.strip() or r.stdout.strip() or f"exit {r.exit_status}"
                break
        out[kind.kind] = err
        for name in (f"{PREFIX}p0", f"{PREFIX}pp0"):
            await host.run(["ip", "-n", netns, "link", "del", name], check=False, timeout=10)
    return out


def _explain(kind: str, err: str) -> str:
    if "Unknown device type" in err or "not supported" in err.lower():
        return (f"the kernel has no {kind} driver ({err}); load or build the module "
                f"('modprobe {kind}') on a kernel that has it")
    return err
