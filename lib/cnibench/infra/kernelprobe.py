"""Kernel support is probed, not guessed: a throwaway interface of each kind is created and
deleted inside a throwaway namespace, so the probe changes nothing on the host."""

from __future__ import annotations

import secrets

from ..catalog import PREFIX
from .hosts import Host

LINK_KINDS = ("bridge", "veth", "vxlan", "macvlan", "ipvlan")


def probe_commands(netns: str, kind: str) -> list[list[str]]:
    """argv lists that create one throwaway interface of `kind` inside `netns` (pure)."""
    ip = ["ip", "-n", netns, "link", "add"]
    if kind == "bridge":
        return [ip + [f"{PREFIX}p0", "type", "bridge"]]
    if kind == "veth":
        return [ip + [f"{PREFIX}p0", "type", "veth", "peer", "name", f"{PREFIX}p1"]]
    if kind == "vxlan":
        return [ip + [f"{PREFIX}p0", "type", "vxlan", "id", "42", "dstport", "4789"]]
    if kind in ("macvlan", "ipvlan"):
        mode = ["mode", "bridge"] if kind == "macvlan" else ["mode", "l2"]
        # a parent link is needed: a veth end inside the same throwaway namespace
        return [
            ip + [f"{PREFIX}pp0", "type", "veth", "peer", "name", f"{PREFIX}pp1"],
            ip + [f"{PREFIX}p0", "link", f"{PREFIX}pp0", "type", kind, *mode],
        ]
    raise ValueError(kind)


async def probe_kernel(host: Host) -> dict[str, dict]:
    """Create and delete one interface of each kind inside a throwaway namespace."""
    ns = f"{PREFIX}-probe-{secrets.token_hex(3)}"
    await host.run(["ip", "netns", "add", ns])
    try:
        errors = await probe_link_kinds(host, ns, LINK_KINDS)
    finally:
        await host.run(["ip", "netns", "del", ns], check=False)
    return {kind: {"ok": not err, "reason": _explain(kind, err) if err else ""} for kind, err in errors.items()}


async def probe_link_kinds(host: Host, netns: str, kinds) -> dict[str, str]:
    """Inside an existing throwaway namespace: kind -> "" if it can be created, else the error."""
    out: dict[str, str] = {}
    for kind in kinds:
        err = ""
        for argv in probe_commands(netns, kind):
            r = await host.run(argv, check=False, timeout=10)
            if not r.ok:
                err = r.stderr.strip() or r.stdout.strip() or f"exit {r.exit_status}"
                break
        out[kind] = err
        for name in (f"{PREFIX}p0", f"{PREFIX}pp0"):
            await host.run(["ip", "-n", netns, "link", "del", name], check=False, timeout=10)
    return out


def _explain(kind: str, err: str) -> str:
    if "Unknown device type" in err or "not supported" in err.lower():
        return f"the kernel has no {kind} driver ({err}); load or build the module ('modprobe {kind}') on a kernel that has it"
    return err
