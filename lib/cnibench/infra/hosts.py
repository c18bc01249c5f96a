"""Control of hosts over SSH: one reused asyncssh connection per host, argv-only commands.

Host.run(argv) quotes argv with shlex.join, so no value from a config file is ever pasted
into a shell string. Failures raise the typed errors of errors.py.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Sequence

import asyncssh

from ..catalog import PREFIX
from .config import HostSpec, Inventory
from ..errors import (AuthenticationFailed, CommandFailed, CommandTimeout, FleetError, HostError, HostKeyError,
                      HostUnreachable)

CONNECT_TIMEOUT = 10.0
DEFAULT_TIMEOUT = 60.0
# A background program dies with the session that started it (issue 22): its parent, the SSH
# session's process, ends with the driver's connection (a SIGKILLed run-all too), and then
# PR_SET_PDEATHSIG (setpriv, kept across exec) sends it SIGTERM. Its PID is printed only once
# that is set, and it does not start if its parent is gone already (no signal would come: a
# driver killed just after start() once left `sleep` running). Without setpriv it still runs,
# without that guarantee (the next command's sweep removes what it leaves: lease.py).
ARMED_SH = '[ "$PPID" = "$1" ] || exit 1; shift; echo "$$"; exec "$@"'
START_SH = ('command -v setpriv >/dev/null 2>&1 || { echo "$$"; exec "$@"; }; '
            f'exec setpriv --pdeathsig TERM -- sh -c {shlex.quote(ARMED_SH)} "$0" "$PPID" "$@"')


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def quote(argv: Sequence[str]) -> str:
    """The one place argv becomes a shell string: every element stays literal."""
    if isinstance(argv, str):
        raise TypeError("commands are argv lists, not strings")
    return shlex.join(str(a) for a in argv)


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """argv run inside a named network namespace (a container), or as is when netns is None."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


class Host:
    """One machine, reached over one reused SSH connection."""

    def __init__(self, spec: HostSpec):
        self.spec = spec
        self.name = spec.name
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.spec.user}@{self.spec.address}:{self.spec.port})"

    # -- connection ------------------------------------------------------------------------

    def _connect_options(self) -> dict:
        """Only the inventory decides how we connect: ~/.ssh/config is not read (config=None),
        so e.g. its `ForwardAgent yes` never hands the user's agent to a benchmark host (where
        root could use it). The agent is used for authentication only with `agent: true`, and
        never forwarded: nothing on the hosts needs it."""
        s = self.spec
        opts: dict = dict(host=s.address, port=s.port, username=s.user, connect_timeout=CONNECT_TIMEOUT,
                          config=None, agent_forwarding=False)
        if s.host_key_policy == "insecure-ignore":
            opts["known_hosts"] = None  # explicit inventory setting: host key not verified
        elif s.known_hosts:
            opts["known_hosts"] = s.known_hosts
        if s.key_file:
            opts["client_keys"] = [s.key_file]
        if not s.agent:
            opts["agent_path"] = None
        return opts

    async def connect(self) -> "Host":
        async with self._lock:
            if self._conn is not None:
                return self
            where = f"{self.spec.user}@{self.spec.address}:{self.spec.port}"
            try:
                self._conn = await asyncssh.connect(**self._connect_options())
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostKeyError(
                    self.name,
                    f"host key of {where} is unknown or has changed ({exc.reason}). "
                    "Check the fingerprint and add it to the inventory's known_hosts "
                    "(or set host_key_policy: insecure-ignore, knowingly).",
                ) from None
            except asyncssh.PermissionDenied:
                raise AuthenticationFailed(
                    self.name,
                    f"authentication failed for {where}. Check 'user' and 'key_file' in the "
                    "inventory, or load the key into ssh-agent and set 'agent: true'.",
                ) from None
            except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
                raise HostUnreachable(
                    self.name,
                    f"cannot reach {where} ({exc.__class__.__name__}: {exc}). Check the address, "
                    "the port, that sshd runs there, and any firewall on the way.",
                ) from None
            if self.spec.host_key_policy == "insecure-ignore":
                warn(f"warning: {self.name} ({where}): host key NOT verified (host_key_policy: insecure-ignore); "
                     "anyone on the path could pose as this host. Add its key to known_hosts and remove the setting.")
        return self

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            try:
                await self._conn.wait_closed()
            except Exception:
                pass
            self._conn = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def _connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            await self.connect()
        assert self._conn is not None
        return self._conn

    def _privileged(self, argv: Sequence[str]) -> list[str]:
        return ["sudo", "-n", "--", *argv] if self.spec.sudo else list(argv)

    async def ssh_connection(self) -> list[str]:
        """$SSH_CONNECTION of our session on the host (client ip, client port, server ip, server
        port), read WITHOUT sudo: sudo resets the environment and would drop it. [] if unset."""
        conn = await self._connection()
        try:
            proc = await asyncio.wait_for(conn.run(quote(["printenv", "SSH_CONNECTION"]), check=False), 30)
        except asyncio.TimeoutError:
            raise CommandTimeout(self.name, "printenv SSH_CONNECTION", 30) from None
        except (asyncssh.Error, OSError) as exc:
            self._conn = None
            raise HostUnreachable(self.name,
                                  f"connection lost while reading SSH_CONNECTION ({exc}). Check the host is up, then "
                                  "retry.") from None
        return _text(proc.stdout).split()

    # -- commands --------------------------------------------------------------------------

    async def run(
        self,
        argv: Sequence[str],
        check: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        input: str | None = None,
        netns: str | None = None,
    ) -> CommandResult:
        """Run argv on the host (inside `netns` if given) and return its result."""
        argv = tuple(str(a) for a in in_netns(netns, argv))
        wire = self._privileged(argv)
        if timeout is not None:
            # The remote side ends the command too, so a timed-out command leaves nothing running.
            wire = ["timeout", "--kill-after=2", f"{timeout:g}", *wire]
        conn = await self._connection()
        start = time.monotonic()
        try:
            proc = await asyncio.wait_for(
                conn.run(quote(wire), input=input, check=False),
                timeout=None if timeout is None else timeout + 5,
            )
        except asyncio.TimeoutError:
            raise CommandTimeout(self.name, quote(argv), timeout or 0) from None
        except (asyncssh.Error, OSError) as exc:
            self._conn = None
            raise HostUnreachable(self.name,
                                  f"connection lost while running {quote(argv)} ({exc}). Check the host is up, then "
                                  "retry.") from None
        status = proc.exit_status if proc.exit_status is not None else -1
        if timeout is not None and status in (124, 137):
            raise CommandTimeout(self.name, quote(argv), timeout)
        result = CommandResult(self.name, argv, status, _text(proc.stdout), _text(proc.stderr),
                               time.monotonic() - start)
        if check and status != 0:
            raise CommandFailed(result)
        return result

    async def start(self, argv: Sequence[str], netns: str | None = None) -> "Background":
        """Start argv in the background; the handle can check, stop and collect it."""
        argv = tuple(str(a) for a in in_netns(netns, argv))
        # `echo $$; exec` reports the PID of the program itself (ip netns exec execs too).
        wire = self._privileged(["sh", "-c", START_SH, f"{PREFIX}", *argv])
        conn = await self._connection()
        proc = await conn.create_process(quote(wire), encoding="utf-8", errors="replace")
        first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        try:
            pid = int(first.strip())
        except ValueError:
            proc.close()
            raise HostError(self.name, f"could not start {quote(argv)}: {first!r}") from None
        return Background(self, argv, pid, proc)

    async def interactive(self, argv: Sequence[str]):
        """argv as an asyncssh process whose stdin and stdout the caller drives line by line
        (limits.clock_offset's timestamp exchanges); the caller closes it."""
        conn = await self._connection()
        return await conn.create_process(quote(self._privileged(list(argv))), encoding="utf-8", errors="replace")

    async def write_file(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file on the host, creating its parent directory. As root: over SFTP. With
        `sudo: true` SFTP would write as the login user (into a directory root made), so the
        bytes go through `sudo install` instead: root owns the file, with `mode` from the start."""
        await self.run(["mkdir", "-p", str(Path(path).parent)])
        data = content.encode() if isinstance(content, str) else content
        if self.spec.sudo:
            await self._sudo_write(path, data, mode)
            return
        conn = await self._connection()
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(path, "wb") as f:
                await f.write(data)
            await sftp.chmod(path, mode)

    async def upload(self, local: str | Path, remote: str) -> None:
        await self.run(["mkdir", "-p", str(Path(remote).parent)])
        if self.spec.sudo:
            await self._sudo_write(remote, Path(local).read_bytes(), Path(local).stat().st_mode & 0o777)
            return
        conn = await self._connection()
        async with conn.start_sftp_client() as sftp:
            await sftp.put(str(local), remote)

    async def read_file(self, path: str) -> bytes:
        if self.spec.sudo:  # the file may be root's alone
            return await self._raw(self._privileged(["cat", "--", path]), None, f"read {path}")
        conn = await self._connection()
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(path, "rb") as f:
                return await f.read()

    async def _sudo_write(self, path: str, data: bytes, mode: int) -> None:
        await self._raw(self._privileged(["install", "-m", f"{mode:o}", "/dev/stdin", path]), data, f"write {path}")

    async def _raw(self, wire: Sequence[str], data: bytes | None, what: str) -> bytes:
        """Run a wire command with binary stdin/stdout (file transfer under sudo)."""
        conn = await self._connection()
        try:
            proc = await asyncio.wait_for(conn.run(quote(wire), input=data, check=False, encoding=None),
                                          DEFAULT_TIMEOUT)
        except asyncio.TimeoutError:
            raise CommandTimeout(self.name, quote(wire), DEFAULT_TIMEOUT) from None
        except (asyncssh.Error, OSError) as exc:
            self._conn = None
            raise HostUnreachable(self.name,
                                  f"connection lost during '{what}' ({exc}). Check the host is up, then "
                                  "retry.") from None
        if proc.exit_status != 0:
            raise CommandFailed(CommandResult(self.name, tuple(wire), proc.exit_status if proc.exit_status is not None
                                              else -1, "", _text(proc.stderr), 0.0))
        return proc.stdout or b""


class Background:
    """A process started with Host.start: check, stop (signal, then kill), collect output."""

    def __init__(self, host: Host, argv: tuple[str, ...], pid: int, proc):
        self.host, self.argv, self.pid, self._proc = host, argv, pid, proc
        self._out = asyncio.ensure_future(proc.stdout.read())
        self._err = asyncio.ensure_future(proc.stderr.read())
        self.started = time.monotonic()

    async def alive(self) -> bool:
        r = await self.host.run(["kill", "-0", str(self.pid)], check=False, timeout=10)
        return r.exit_status == 0

    async def signal(self, sig: str) -> None:
        await self.host.run(["kill", f"-{sig}", str(self.pid)], check=False, timeout=10)

    async def wait(self, timeout: float | None = None) -> CommandResult:
        await asyncio.wait_for(self._proc.wait_closed(), timeout)
        out, err = await self._out, await self._err
        status = self._proc.exit_status
        if (status is None or status < 0) and self._proc.exit_signal:  # killed by a signal: as a shell reports it
            status = 128 + _signal_number(self._proc.exit_signal)
        return CommandResult(self.host.name, self.argv, status, out, err, time.monotonic() - self.started)

    async def stop(self, sig: str = "TERM", grace: float = 5.0) -> CommandResult:
        """Ask the process to stop; kill it after `grace` seconds; return what it printed."""
        if not self._proc.is_closing() or self._proc.exit_status is None:
            await self.signal(sig)
        try:
            return await self.wait(grace)
        except asyncio.TimeoutError:
            await self.signal("KILL")
            return await self.wait(10)


def warn(text: str) -> None:
    """A warning the person at the terminal must see (stderr, not a logger they never configured)."""
    print(text, file=sys.stderr, flush=True)


def _signal_number(exit_signal) -> int:
    import signal as _signal

    if not exit_signal:
        return 0
    name = exit_signal[0]
    return int(getattr(_signal, f"SIG{name}", 0))


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class Fleet:
    """Many hosts at once: concurrent work, per-host results, one aggregate error."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.hosts: dict[str, Host] = {h.name: Host(h) for h in inventory.hosts}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __iter__(self):
        return iter(self.hosts.values())

    @property
    def client(self) -> Host:
        return self.hosts[self.inventory.client.name]

    def clients(self) -> list[str]:
        return [h.name for h in self.inventory.hosts if h.role == "client"]

    def with_client(self, name: str) -> "Fleet":
        """The same hosts and open connections with `name` as the client (a share of a run from
        several clients, workload/multiclient.py). The view owns nothing: close the fleet."""
        if self.inventory.host(name).role != "client":
            raise KeyError(f"{name} is not a client host")
        view, hosts = Fleet.__new__(Fleet), tuple(sorted(self.inventory.hosts, key=lambda h: h.name != name))
        view.inventory, view.hosts = replace(self.inventory, hosts=hosts), self.hosts
        return view

    @property
    def server(self) -> Host:
        return self.hosts[self.inventory.server.name]

    async def gather(self, action: str, fn: Callable[[Host], Awaitable], hosts: Iterable[Host] | None = None) -> dict:
        """Run fn(host) on every host concurrently; raise FleetError naming each failure."""
        chosen = list(hosts) if hosts is not None else list(self)
        results = await asyncio.gather(*(fn(h) for h in chosen), return_exceptions=True)
        errors = {h.name: r for h, r in zip(chosen, results) if isinstance(r, BaseException)}
        for r in errors.values():
            if isinstance(r, (KeyboardInterrupt, asyncio.CancelledError)):
                raise r
        if errors:
            raise FleetError(action, errors)
        return {h.name: r for h, r in zip(chosen, results)}

    async def run(self, argv: Sequence[str], **kw) -> dict[str, CommandResult]:
        return await self.gather(quote(argv), lambda h: h.run(argv, **kw))

    async def connect(self) -> "Fleet":
        await self.gather("connect", lambda h: h.connect())
        return self

    async def close(self) -> None:
        await asyncio.gather(*(h.close() for h in self), return_exceptions=True)

    async def __aenter__(self) -> "Fleet":
        try:
            return await self.connect()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc) -> None:
        await self.close()
