"""Local ports for many connections: the client namespace's ip_local_port_range, widened for a
run that needs more connections than it has, and put back after (issue 27).

Every connection of a run goes from one source address to one server ip:port, so each needs its
own local port, and a new network namespace gets Linux's default range 32768-60999 (28,232
ports). A run asking for more (up to WIDE = 1024-65535, 64,512 ports) widens the range of the
namespace its generator runs in, for that run only (a run of more than 1,024 connections looks):

    widen_argv(netns, n)  before the generator starts: the original is journalled first (a
                          file under the run directory, written before the change; a journal
                          already there is older, so it is the true original and is kept), then
                          the range is set to WIDE
    restore_argv(netns)   in the run's clean-up (and for `invoke clean`): the journalled range
                          written back, then the journal removed; no journal: nothing to do

The sysctl is per namespace, so a widened client namespace changes nothing else on the host.
More connections than WIDE holds would need several server ports: refused (defaults.py's bound).
"""

from __future__ import annotations

import re

from ..catalog import PREFIX
from ..infra.config import RUN_DIR
from .defaults import PORT_RANGE, PORT_RANGE_WIDE

SYSCTL = "/proc/sys/net/ipv4/ip_local_port_range"


def ports_in(port_range: tuple[int, int]) -> int:
    return port_range[1] - port_range[0] + 1


CHECKED_FROM = 1024  # connections from which a run looks at its namespace's range (below: any range holds them)


def needs_widening(connections: int, current: tuple[int, int] = PORT_RANGE) -> bool:
    """Whether `connections` to one server ip:port need more local ports than `current` has (pure)."""
    return connections > ports_in(current)


def to_check(connections: int) -> bool:
    """Whether a run looks at its client namespace's range (widen_argv decides there, from the
    range the namespace has: the default 28,232, or narrower if someone set it so)."""
    return connections > CHECKED_FROM


def journal_path(netns: str | None) -> str:
    return f"{RUN_DIR}/port-range.{netns or 'host'}.orig"


# $1 journal, $2 $3 the wide range, $4 the connections. Exit 0 with "widened LO HI" (the
# original) or "kept LO HI" when the range already holds the connections.
WIDEN_SH = r"""j=$1; lo=$2; hi=$3; n=$4; f=/proc/sys/net/ipv4/ip_local_port_range
r=$(cat "$f") || exit 3; set -- $r; a=$1; b=$2  # cat: sh's byte-wise read sees a sysctl end after 1 byte
if [ $((b - a + 1)) -ge "$n" ]; then echo "kept $a $b"; exit 0; fi
if [ ! -s "$j" ]; then
  mkdir -p "$(dirname "$j")" && printf '%s %s\n' "$a" "$b" > "$j.tmp.$$" && mv -f "$j.tmp.$$" "$j" || exit 3
fi
printf '%s %s\n' "$lo" "$hi" > "$f" || exit 3
echo "widened $a $b"
"""
# $1 journal. Prints "restored LO HI" or nothing (no journal).
RESTORE_SH = r"""j=$1; f=/proc/sys/net/ipv4/ip_local_port_range
[ -s "$j" ] || exit 0
read -r a b < "$j" || exit 3
case "$a$b" in *[!0-9]*|'') echo "journal $j holds '$a $b', not a port range" >&2; exit 3;; esac
printf '%s %s\n' "$a" "$b" > "$f" || exit 3
rm -f "$j"
echo "restored $a $b"
"""


def widen_argv(netns: str | None, connections: int, wide: tuple[int, int] = PORT_RANGE_WIDE) -> list[str]:
    return ["sh", "-c", WIDEN_SH, f"{PREFIX}-ports", journal_path(netns), str(wide[0]), str(wide[1]), str(connections)]


def restore_argv(netns: str | None) -> list[str]:
    return ["sh", "-c", RESTORE_SH, f"{PREFIX}-ports", journal_path(netns)]


async def widen(host, netns: str | None, connections: int) -> str | None:
    """Widen the namespace's range when `connections` need more ports than it has; a note saying
    what was done, or None (the range holds them). A failure raises (HostError): the run fails
    before its generator starts."""
    r = await host.run(widen_argv(netns, connections), netns=netns, timeout=15)
    word, *old = r.stdout.split()
    if word == "kept":
        return None
    return (f"ip_local_port_range {' '.join(old)} widened to {PORT_RANGE_WIDE[0]} {PORT_RANGE_WIDE[1]} in the "
            f"client's namespace for {connections:,} connections (restored after the run)")


async def restore(host, netns: str | None) -> str | None:
    """Put the journalled range back (no journal: None)."""
    r = await host.run(restore_argv(netns), netns=netns, timeout=15)
    return f"ip_local_port_range {r.stdout.split(None, 1)[1].strip()} restored" if r.stdout.strip() else None


JOURNAL_NAME = re.compile(r"port-range\.([A-Za-z0-9_.-]{1,64})\.orig")


def journalled_namespaces(listing: str) -> list[str | None]:
    """The namespaces (None: the host's own) a listing of the run directory has range journals
    for (pure). A name read back from a host is used only when it is a plain namespace name."""
    out: list[str | None] = []
    for word in listing.split():
        m = JOURNAL_NAME.fullmatch(word)
        if m:
            out.append(None if m.group(1) == "host" else m.group(1))
    return out


async def restore_all(host) -> list[str]:
    """`invoke clean` and a dead session's sweep: every journalled range put back, in its
    namespace while that still exists (a deleted namespace took its range with it: the journal
    goes); what was done."""
    names = journalled_namespaces((await host.run(["ls", "-1", str(RUN_DIR)], check=False)).stdout)
    if not names:
        return []
    present = set((await host.run(["ip", "netns", "list"], check=False)).stdout.split())
    done = []
    for ns in names:
        if ns is None or ns in present:
            note = await restore(host, ns)
        else:
            await host.run(["rm", "-f", journal_path(ns)], check=False)
            note = f"ip_local_port_range journal of the deleted namespace {ns} removed"
        if note:
            done.append(f"{host.name}: {note}")
    return done
