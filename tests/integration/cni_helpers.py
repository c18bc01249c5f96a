"""Throwaway `cnib-t26*` namespaces for the CNI and BIRD tests: a "host" namespace (the plugins
and BIRD run inside it, as on a testbed host) and pod namespaces; nothing of the shared testbed."""

from __future__ import annotations

import re
import subprocess

from cnibench.infra.local import LocalHost


def sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


def netns_add(name: str) -> None:
    sh("ip", "netns", "del", name, check=False)
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


def netns_del(*names: str) -> None:
    for n in names:
        sh("ip", "netns", "del", n, check=False)


class NetnsHost(LocalHost):
    """The LocalHost with every command inside one namespace: a stand-in for an SSH host's shell
    only in where the commands run (the plugins and BIRD are the real ones)."""

    def __init__(self, netns: str, name: str = "cnib-t26h"):
        self.netns, self.name = netns, name

    async def run(self, argv, check=True, timeout=60, input=None, netns=None):
        return await super().run(argv, check=check, timeout=timeout, input=input, netns=netns or self.netns)


_VOLATILE = re.compile(r"\s+(valid_lft|preferred_lft)\s+\S+|\s+link/ether \S+ brd \S+")


def snapshot(ns: str) -> dict:
    """What a namespace holds that the plugins touch: links (name, flags, master, promiscuity),
    addresses, routes, forwarding, nftables ruleset."""
    links = []
    for line in sh("ip", "-n", ns, "-d", "-o", "link", "show").splitlines():
        m = re.match(r"\d+: ([^:@]+)[^<]*<([^>]*)>.*?(master \S+)?.*promiscuity (\d+)", line)
        if m:
            links.append((m.group(1), m.group(2), m.group(3) or "", m.group(4)))
    addrs = sorted(_VOLATILE.sub("", " ".join(line.split()[1:])) for line in sh("ip", "-n", ns, "-o", "addr").splitlines())
    return {"links": sorted(links), "addrs": addrs, "routes": sorted(sh("ip", "-n", ns, "route").splitlines()),
            "forward": sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward").strip(),
            "nft": sh("ip", "netns", "exec", ns, "nft", "list", "ruleset")}
