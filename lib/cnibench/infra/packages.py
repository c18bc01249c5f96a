"""The Debian packages the project needs on the machine that drives it (and on testbed hosts).

`ensure()` installs what is missing when run as root with apt-get, or stops with the exact
command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager

from ..errors import CnibenchError

# program that must exist -> Debian package that provides it
REQUIRED = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "nginx": "nginx-light",
    "h2load": "nghttp2-client",
    "nft": "nftables",
    "ethtool": "ethtool",
    "taskset": "util-linux",
    "ps": "procps",
    "ping": "iputils-ping",
    "curl": "curl",
    "cc": "build-essential",  # builds cnib-openloop, the project's own load generator
    "tcpdump": "tcpdump",  # the tests compare the generator's log with the wire
    # ebpf-redirect builds its tc programs with clang on each host and loads them with bpftool
    "clang": "clang",
    "bpftool": "bpftool",
    "tc": "iproute2",
    "/usr/include/bpf/bpf_helpers.h": "libbpf-dev",  # a header, not a program: looked up as a file
}
# The real Kubernetes parts (a study's `implementation: cni`, Calico's BGP): the reference CNI
# plugins, BIRD 2, and iptables for the plugins that write iptables rules (through iptables-nft).
FOR_CNI = {
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/lib/cni/macvlan": "containernetworking-plugins",
    "bird": "bird2",
    "birdc": "bird2",
    "iptables": "iptables",
}
# `invoke test` only: the report's headless-browser test
# sudo: the `sudo: true` host test; stress-ng: the CPU-hog guard tests
FOR_TESTS = {"chromium": "chromium", "sudo": "sudo", "stress-ng": "stress-ng",
             **FOR_CNI}
# Services a package starts or enables on install; the project runs its own copies, never these.
# nginx-light: the testbed runs its own nginx per run; the packaged site on port 80 is not ours to leave on.
# openssh-server is left alone: a real host is reached through its sshd.
SERVICES = {"bird2": ("bird",), "nginx-light": ("nginx",)}
POLICY_RC = "/usr/sbin/policy-rc.d"
# invoke-rc.d asks this script before starting a service; 101 is "action forbidden".
REFUSE_STARTS = "#!/bin/sh\n# cnibench: no service starts while the project installs packages\nexit 101\n"
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def missing(required: dict[str, str] = REQUIRED) -> list[str]:
    """Debian packages whose program is not installed (pure apart from PATH look-ups)."""
    path = os.environ.get("PATH", "") + ":" + SBIN
    return sorted({pkg for prog, pkg in required.items()
                   if not (shutil.which(prog, path=path) or (prog.startswith("/") and os.path.exists(prog)))})


def install_command(pkgs: list[str]) -> list[str]:
    return ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]


def ensure(required: dict[str, str] = REQUIRED) -> list[str]:
    """Install missing packages (root + apt-get), else raise with the command to run."""
    pkgs = missing(required)
    if not pkgs:
        return []
    cmd = install_command(pkgs)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise CnibenchError(f"missing Debian packages: {' '.join(pkgs)}. Install them with: sudo apt-get update && "
                            f"sudo {' '.join(cmd)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"installing missing Debian packages: {' '.join(pkgs)}", flush=True)
    with services_refused():
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        proc = subprocess.run(cmd, env=env)
    stop_services(pkgs)
    if proc.returncode != 0 or missing(required):
        raise CnibenchError(f"could not install {' '.join(pkgs)}. Run: apt-get update && {' '.join(cmd)}")
    return pkgs


@contextmanager
def services_refused(path: str = POLICY_RC):
    """A policy-rc.d that refuses every start for the duration of an install; whatever was there
    before (e.g. a container image's own) is put back afterwards, byte for byte."""
    before = open(path, "rb").read() if os.path.exists(path) else None
    mode = os.stat(path).st_mode & 0o777 if before is not None else 0o755
    with open(path, "w") as f:
        f.write(REFUSE_STARTS)
    os.chmod(path, 0o755)
    try:
        yield
    finally:
        if before is None:
            os.unlink(path)
        else:
            with open(path, "wb") as f:
                f.write(before)
            os.chmod(path, mode)


def service_commands(pkgs: list[str], running: bool) -> list[list[str]]:
    """Commands that disable (and, under a running systemd, stop) the services the given
    packages bring (pure). `systemctl disable` works on the unit files without systemd too."""
    units = sorted({u for p in pkgs for u in SERVICES.get(p, ())})
    now = ["--now"] if running else []
    return [["systemctl", "disable", *now, f"{u}.service"] for u in units]


def stop_services(pkgs: list[str]) -> None:
    """After the install: the package's postinst enabled its unit (deb-systemd-helper ignores
    policy-rc.d), and a start may have slipped through; both are undone."""
    if not shutil.which("systemctl"):
        return
    running = os.path.isdir("/run/systemd/system")
    for argv in service_commands(pkgs, running):
        subprocess.run(argv, check=False, capture_output=True)
