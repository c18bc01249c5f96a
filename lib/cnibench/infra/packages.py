"""The Debian packages the project needs on the machine that drives it (and on testbed hosts).

`ensure()` installs what is missing when run as root with apt-get, or stops with the exact
command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

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
# `invoke test` only: the report's headless-browser test
FOR_TESTS = {"chromium": "chromium", "sudo": "sudo", "stress-ng": "stress-ng"}  # sudo: the `sudo: true` host test; stress-ng: the CPU-hog guard tests
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def missing(required: dict[str, str] = REQUIRED) -> list[str]:
    """Debian packages whose program is not installed (pure apart from PATH look-ups)."""
    path = os.environ.get("PATH", "") + ":" + SBIN
    return sorted({pkg for prog, pkg in required.items() if not (shutil.which(prog, path=path) or (prog.startswith("/") and os.path.exists(prog)))})


def install_command(pkgs: list[str]) -> list[str]:
    return ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]


def ensure(required: dict[str, str] = REQUIRED) -> list[str]:
    """Install missing packages (root + apt-get), else raise with the command to run."""
    pkgs = missing(required)
    if not pkgs:
        return []
    cmd = install_command(pkgs)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise CnibenchError(f"missing Debian packages: {' '.join(pkgs)}. Install them with: sudo apt-get update && sudo {' '.join(cmd)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"installing missing Debian packages: {' '.join(pkgs)}", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0 or missing(required):
        raise CnibenchError(f"could not install {' '.join(pkgs)}. Run: apt-get update && {' '.join(cmd)}")
    return pkgs
