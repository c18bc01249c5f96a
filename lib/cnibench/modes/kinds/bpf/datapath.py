"""The redirect program's names on a host (pins, maps, programs) and the encodings of its map
values (pure): what ebpf-redirect's plan writes and its checks read."""

from __future__ import annotations

import ipaddress
import re

from ....catalog import PREFIX
from ....infra.config import RUN_DIR
from ...addressing import ifname
from ...base import Step, step

BPF_ROOT = f"{RUN_DIR}/bpf"  # the bpffs mounts of this mode, one per host
# Pins under the mode's bpffs root and the usual bpffs (a constant script; the root is $1).
BPF_PINS_SH = 'find "$1" /sys/fs/bpf -mindepth 1 2>/dev/null; true'
OUR_PROGRAM = re.compile(rf"\bname {PREFIX}_\w+")  # a tc filter running one of our programs


def pin_dir(host: str) -> str:
    """The host's own bpffs mount: programs under prog/, maps under maps/."""
    return f"{BPF_ROOT}/{PREFIX}-{host}"


def bpf_mounts(mountinfo: str) -> list[str]:
    """'mount point source' of every bpffs in /proc/self/mountinfo (pure; ids left out)."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and tail[:1] == ["bpf"]:
            out.append(f"{fields[4]} {tail[1] if len(tail) > 1 else ''}".rstrip())
    return sorted(out)


PROGRAM = "redirect"  # bpf/redirect.c
FROM_POD, FROM_NET = f"{PREFIX}_from_pod", f"{PREFIX}_from_net"
PODS_MAP, PEERS_MAP, STATS_MAP = f"{PREFIX}_pods", f"{PREFIX}_peers", f"{PREFIX}_stats"
STATS = ("neigh_ok", "peer_ok", "neigh_failed", "peer_failed")  # cnib_stats' keys, in order
POD_IFINDEX = int.from_bytes(b"cnib", "big")  # 1668180322: the host-side veth's ifindex
FILTER = ["pref", "1", "handle", "1", "bpf", "direct-action"]

HELPERS = ("bpf_redirect_neigh", "bpf_redirect_peer", "bpf_map_lookup_elem", "bpf_skb_store_bytes",
           "bpf_l3_csum_replace")
MAP_TYPES = ("hash", "lpm_trie", "percpu_array")
TOOLS = {"clang": "clang", "bpftool": "bpftool", "tc": "iproute2"}


def veth_name(host: str) -> str:
    return ifname(f"{PREFIX}e{host}")


def pod_mac(address: str) -> str:
    return "0e:cb:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def host_mac(address: str) -> str:
    return "0e:ce:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def hex_ip(address) -> list[str]:
    return [f"{b:02x}" for b in ipaddress.IPv4Address(str(address)).packed]


def hex_be32(n: int) -> list[str]:
    return [f"{b:02x}" for b in int(n).to_bytes(4, "big")]


def hex_le32(n: int) -> list[str]:
    return [f"{b:02x}" for b in int(n).to_bytes(4, "little")]


def hex_mac(mac: str) -> list[str]:
    return mac.lower().split(":")


def map_update(host: str, name: str, key: list[str], value: list[str]) -> Step:
    """Gone with the bpffs mount: no undo of its own."""
    return step(host, ["bpftool", "map", "update", "pinned", f"{pin_dir(host)}/maps/{name}", "key", "hex", *key,
                       "value", "hex", *value])
