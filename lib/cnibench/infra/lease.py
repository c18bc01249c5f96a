"""One session per host: a lease on every host for run-all, bench, calibrate, clean, mode up/down.

    with session_lease(inventory, "run-all --study lab"):
        ...   # the hosts are this session's; a second session is refused, naming this one

The lease is a file on each host, RUN_DIR/lease/<host>.json (per host *name*: the testbed's
hosts are namespaces of one machine and share /run), holding its owner: the driver's host
name, pid and the pid's start time (so a reused pid is not mistaken for the holder), user,
command and start time. It only changes under `flock` on the lease directory, so of two
sessions starting at once exactly one wins. A thread of the holder refreshes the file's mtime
every HEARTBEAT_S over SSH connections of its own, independent of the session's event loops.

A lease is stale when
- its holder ran on this driver and that process is gone: provably dead. Any session takes
  it over and says so (a SIGKILLed run-all must not lock the next one out; run-all and clean
  sweep what it left, bench and mode.up refuse a mode left up and say to run clean);
- its holder ran on another driver and its heartbeat is older than STALE_AFTER_S: probably
  dead, but we cannot know. Only `invoke clean` (an explicit act) takes it over; the others
  refuse and say so.
A live lease is never taken over, not even by clean. Sessions nest in one process (run-all
holds the lease, run_study inside it finds it held by its own process and goes on).

What is read from a host here is only displayed (sanitized) and compared, never executed.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import socket
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

from ..catalog import PREFIX
from .config import RUN_DIR
from ..errors import CnibenchError, HostError

LEASE_DIR = RUN_DIR / "lease"
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0  # 12 missed heartbeats
LOCK_WAIT_S = 10
MAX_SHOWN = 4096  # bytes of a holder's record shown or compared

# Run under `flock LEASE_DIR`: $1 op, $2 lease file, $3 our owner record, $4 the record seen.
# acquire: free (or ours) -> write ours; held -> print HELD, heartbeat age (s), the record.
# takeover: only if the record is still the one we judged stale (compare-and-swap).
LEASE_SH = r"""op=$1 f=$2 me=$3 seen=$4
cur=$(cat -- "$f" 2>/dev/null)
case $op in
acquire)
  if [ -n "$cur" ] && [ "$cur" != "$me" ]; then
    echo HELD
    echo $(( $(date +%s) - $(stat -c %Y -- "$f") ))
    printf '%s\n' "$cur" | head -c 4096 | tr -cd '\11\12\40-\176'
    exit 0
  fi ;;
takeover) [ "$cur" = "$seen" ] || { echo CHANGED; exit 0; } ;;
refresh) if [ "$cur" = "$me" ]; then touch -- "$f" && echo OK; else echo LOST; fi; exit 0 ;;
release) [ "$cur" = "$me" ] && rm -f -- "$f"; echo RELEASED; exit 0 ;;
*) echo "unknown op" >&2; exit 2 ;;
esac
printf '%s\n' "$me" > "$f.tmp" && mv -f -- "$f.tmp" "$f" && echo ACQUIRED
"""
_LOCKED_SH = f'mkdir -p -- "$1" && exec flock -w "$2" "$1" sh -c "$3" {PREFIX}-lease "$4" "$5" "$6" "$7"'


class LeaseHeld(CnibenchError):
    """Another session holds (some of) the hosts; nothing was changed."""


@dataclass(frozen=True)
class Owner:
    session: str
    driver: str
    pid: int
    pid_start: int | None
    user: str
    command: str
    started_at: str

    def record(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start: int | None) -> bool:
    """Is the holder still running? A zombie is not: a SIGKILLed run-all stays one until its
    parent reaps it, and a run-all started at once must not be refused by it (issue 22)."""
    now = process_start(pid)
    return now is not None and (start is None or now == start) and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def me(command: str) -> Owner:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Owner(uuid.uuid4().hex, socket.gethostname(), os.getpid(), process_start(os.getpid()), user, command,
                 datetime.now(timezone.utc).isoformat(timespec="seconds"))


def parse_reply(text: str) -> tuple[str, float | None, str]:
    """(status, heartbeat age in s or None, the holder's record as the host has it) (pure)."""
    lines = text.split("\n")
    status = lines[0].strip()
    if status != "HELD":
        return status, None, ""
    try:
        age = float(lines[1])
    except (IndexError, ValueError):
        age = None
    return status, age, "\n".join(lines[2:]).rstrip("\n")


def holder_of(raw: str) -> dict | None:
    try:
        d = json.loads(raw)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def stale_reason(holder: dict | None, age: float | None, here: str,
                 alive: Callable[[int, int | None], bool] = pid_alive,
                 stale_after: float = STALE_AFTER_S) -> tuple[str | None, bool]:
    """(why the lease is stale or None, whether that is certain) (pure but for `alive`)."""
    if holder is None:
        return "its lease file is not a lease record", False
    pid, start = holder.get("pid"), holder.get("pid_start")
    if holder.get("driver") == here and isinstance(pid, int) and not isinstance(pid, bool):
        if alive(pid, start if isinstance(start, int) else None):
            return None, False
        return f"its process {pid} on {here} is gone", True
    if age is not None and age > stale_after:
        return f"no heartbeat for {age:.0f} s", False
    return None, False


def _clean(v, limit: int = 120) -> str:
    return "".join(c if c.isprintable() else "?" for c in str(v))[:limit]


def describe(holder: dict | None, raw: str) -> str:
    """The holder in words, from what the host says (sanitized: it is only shown)."""
    if holder is None:
        return f"an unreadable lease ({_clean(raw, 80)!r})"
    g = lambda k: _clean(holder.get(k, "?"))  # noqa: E731
    return f"'{g('command')}' (pid {g('pid')} on {g('driver')}, user {g('user')}, since {g('started_at')})"


def refusal(held: dict[str, tuple[str, str | None]], clean: bool) -> str:
    """One message for every host held: {host: (holder description, stale reason)} (pure)."""
    by_holder: dict[tuple[str, str | None], list[str]] = {}
    for host, key in sorted(held.items()):
        by_holder.setdefault(key, []).append(host)
    parts = []
    for (who, stale), hosts in by_holder.items():
        text = f"{', '.join(hosts)} {'is' if len(hosts) == 1 else 'are'} leased to {who}"
        if stale:
            text += (f"; it looks dead ({stale}), but it ran on another machine, so only 'invoke clean' takes it over"
                     if not clean else f"; it looks dead ({stale})")
        parts.append(text)
    return ("the hosts are in use by another cnibench session: " + "; ".join(parts) +
            ". Nothing was changed. Wait for that session to end, or stop it on the machine that runs it.")


_held: dict[tuple, "Lease"] = {}  # hosts this process holds (nested sessions)
_held_lock = threading.Lock()


def _key(inventory) -> tuple:
    return tuple(sorted((h.name, h.address, h.port) for h in inventory.hosts))


class Lease:
    """The lease on every host of an inventory, held by a heartbeat thread until release()."""

    def __init__(self, inventory, command: str, clean: bool = False, out: Callable[[str], None] = print):
        self.inventory, self.command, self.clean, self.out = inventory, command, clean, out
        self.owner = me(command)
        self.notes: list[str] = []  # what was taken over
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # driver-thread side
    def acquire(self) -> "Lease":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name=f"{PREFIX}-lease", daemon=True)
        self._thread.start()
        if not self._ready.wait(120):
            raise HostError("lease", "taking the hosts' lease did not finish within 120 s. Check the hosts (invoke "
                            "hosts.check).")
        if self._error is not None:
            self._thread.join(30)
            raise self._error
        for note in self.notes:
            self.out(note)
        return self

    def release(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        self._thread = None

    # lease-thread side
    async def _main(self) -> None:
        from .hosts import Fleet

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        fleet = Fleet(self.inventory)
        try:
            try:
                await fleet.connect()
                await self._acquire_all(fleet)
            except Exception as exc:  # handed to the caller's thread
                self._error = exc
                return
            finally:
                self._ready.set()
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    await self._heartbeat(fleet)
            await asyncio.gather(*(self._op(h, "release") for h in fleet), return_exceptions=True)
        finally:
            await fleet.close()

    async def _op(self, host, op: str, seen: str = "") -> tuple[str, float | None, str]:
        path = f"{LEASE_DIR}/{host.name}.json"
        r = await host.run(["sh", "-c", _LOCKED_SH, f"{PREFIX}-lease-lock", str(LEASE_DIR), str(LOCK_WAIT_S), LEASE_SH,
                            op, path, self.owner.record(), seen], check=False, timeout=LOCK_WAIT_S + 20)
        if r.exit_status == 127 or "flock: not found" in r.stderr or "flock: command not found" in r.stderr:
            raise HostError(host.name, "flock is not installed (the session lease needs it). Install util-linux there.")
        if r.exit_status != 0:
            raise HostError(host.name, f"could not take the session lease under {LEASE_DIR} (exit {r.exit_status}: "
                                       f"{_clean(r.stderr.strip(), 200)}). Another session may be locking it; retry.")
        return parse_reply(r.stdout)

    async def _acquire_one(self, host) -> tuple[str, str | None] | None:
        """None when ours; else (holder description, stale reason) of the lease that stays."""
        status, age, raw = await self._op(host, "acquire")
        if status == "ACQUIRED":
            return None
        holder = holder_of(raw)
        reason, certain = stale_reason(holder, age, self.owner.driver)
        if reason and (certain or self.clean):
            status, _, _ = await self._op(host, "takeover", seen=raw)
            if status == "ACQUIRED":
                self.notes.append(f"{host.name}: took over the stale session lease of {describe(holder, raw)}: "
                                  f"{reason}")
                return None
        return describe(holder, raw), reason

    async def _acquire_all(self, fleet) -> None:
        hosts = list(fleet)
        results = await asyncio.gather(*(self._acquire_one(h) for h in hosts), return_exceptions=True)
        held = {h.name: r for h, r in zip(hosts, results) if isinstance(r, tuple)}
        errors = [r for r in results if isinstance(r, BaseException)]
        if held or errors:  # all or nothing: give back what we got
            await asyncio.gather(*(self._op(h, "release") for h in hosts), return_exceptions=True)
            if errors:
                raise errors[0]
            raise LeaseHeld(refusal(held, self.clean))

    async def _heartbeat(self, fleet) -> None:
        for host in fleet:
            try:
                status, _, _ = await self._op(host, "refresh")
            except Exception as exc:  # a host that does not answer now may answer at the next beat
                print(f"warning: session lease heartbeat to {host.name} failed ({exc.__class__.__name__}); retrying",
                      file=sys.stderr)
                continue
            if status == "LOST":
                print(f"warning: the session lease on {host.name} was taken over by another session (our heartbeat "
                      f"was late?); results from now on may be disturbed", file=sys.stderr)


class session_lease:
    """Context manager: hold the hosts' lease for a session (nested use in one process is free)."""

    def __init__(self, inventory, command: str, clean: bool = False, out: Callable[[str], None] = print):
        self.inventory, self.command, self.clean, self.out = inventory, command, clean, out
        self._mine: Lease | None = None

    def __enter__(self) -> Lease:
        key = _key(self.inventory)
        with _held_lock:
            if key in _held:
                return _held[key]
        lease = Lease(self.inventory, self.command, self.clean, self.out).acquire()
        with _held_lock:
            _held[key] = lease
        self._mine = lease
        return lease

    def __exit__(self, *exc) -> None:
        if self._mine is None:
            return
        with _held_lock:
            _held.pop(_key(self.inventory), None)
        self._mine.release()
        self._mine = None


def lease_path(host_name: str) -> str:
    return f"{LEASE_DIR}/{host_name}.json"
