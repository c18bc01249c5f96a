"""Commands and processes on this machine, for the local testbed (testbed.py): run a command,
list namespaces and links, find, stop and reap processes (sshd above all), all as root."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..errors import TestbedError
from ..parsing import ip_json

RUN_SSHD = "/run/sshd"  # sshd's privilege-separation directory (shared with the system's sshd)


def sh(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise TestbedError(f"command failed ({proc.returncode}): {' '.join(argv)}\n  {proc.stderr.strip()}")
    return proc


def netns_list() -> set[str]:
    out = sh(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return {entry["name"] for entry in ip_json(out)}


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = (["ip", "-n", netns] if netns else ["ip"]) + ["link", "show", "dev", name]
    return sh(argv, check=False).returncode == 0


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")


def root_links() -> list[str]:
    out = sh(["ip", "-j", "link", "show"], check=False).stdout
    return [l["ifname"] for l in ip_json(out)]


def gone(pid: int) -> bool:
    """Exited, or a zombie waiting for a parent that is not us (daemonized sshd)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def kill(pid: int, grace: float = 3.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if gone(pid):
            return
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def delete_netns(ns: str) -> None:
    """Kill what still runs in the namespace (nginx, generators, sessions), then delete it."""
    pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        kill(int(pid), grace=1.0)
    proc = sh(["ip", "netns", "del", ns], check=False)
    if proc.returncode != 0 and "No such file" not in proc.stderr:
        raise TestbedError(f"could not delete namespace {ns}: {proc.stderr.strip()}")


def sshd_pids() -> list[int]:
    """Every running sshd process on this machine (listeners and sessions)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("sshd") and not gone(int(d.name)):
                pids.append(int(d.name))
    return pids


def release_run_sshd(path: str = RUN_SSHD, running=sshd_pids) -> bool:
    """Remove the privilege-separation directory the testbed made, unless another sshd (the
    system's, started since) now uses it; never a directory with anything in it. Called after
    the testbed's own sshds are gone. True if removed."""
    if running():
        return False
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


# The open-file hard limit of the testbed's sshd (and so of every command run over it): Debian
# 12's systemd default for services (DefaultLimitNOFILE=1024:524288), what sshd has on a real
# host, instead of whatever the driver's shell has; the soft limit stays the driver's. Raised only
# where this process may (CAP_SYS_RESOURCE); else the driver's limits, as before.
SSHD_NOFILE_HARD = 524288


def nofile_prefix() -> list[str]:
    import resource
    import subprocess

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= SSHD_NOFILE_HARD or not which("prlimit"):
        return []
    argv = ["prlimit", f"--nofile={soft}:{SSHD_NOFILE_HARD}", "--"]
    return argv if subprocess.run([*argv, "true"], capture_output=True).returncode == 0 else []
