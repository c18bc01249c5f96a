"""The local testbed: two or more "hosts" that are network namespaces on this machine.

    root namespace                 cnib-<host> (one per host)          cnib-fabric
    cnib-m-<host> 198.19.i.1/30 ── mgmt0 198.19.i.2/30  (sshd listens here)
                                   eth0  198.18.0.(11+i)/24 ──────── cnibd-<host> ─ bridge cnibbr0
                                                                                   198.18.0.1/24

The management link carries SSH only; eth0 is the data plane that network modes build on, so
no mode can cut the SSH session. Every address is in the RFC 2544 benchmarking range
198.18.0.0/15. sshd is Debian's, run with a generated config and per-testbed keys; it joins the
host's network namespace only (nsenter --net), so namespaces that modes create over SSH are
visible machine-wide like any other `ip netns` namespace.

`up` is idempotent; `down` removes what `up` made (and the `cnib-<host>-*` container namespaces
that live on testbed hosts) and nothing else.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..catalog import PREFIX
from ..catalog import name as prefixed
from .config import RUN_DIR, TESTBED_INVENTORY, TESTBED_STATE
from ..errors import TestbedError
from .testbed_proc import (RUN_SSHD, delete_netns, gone, kill, link_exists, netns_list, nofile_prefix, release_run_sshd,
                           root_links, sh, which)

FABRIC_NS = prefixed("fabric")
BRIDGE = f"{PREFIX}br0"
DATA_NET = ipaddress.IPv4Network("198.18.0.0/24")
ROUTER = "198.18.0.1"
MGMT_NET = ipaddress.IPv4Network("198.19.0.0/16")
SSH_PORT = 22
DEFAULT_HOSTS = ("client", "server")
TOOLS = {  # tool: Debian package that provides it
    "ip": "iproute2",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "nsenter": "util-linux",
}


def state_dir() -> Path:
    return TESTBED_STATE


def generated_inventory_path() -> Path:
    return TESTBED_INVENTORY


@dataclass(frozen=True)
class TestbedHost:
    name: str
    index: int

    @property
    def netns(self) -> str:
        return prefixed(self.name)

    @property
    def role(self) -> str:
        return "client" if self.index == 0 else "server"

    @property
    def data_address(self) -> str:
        return str(DATA_NET.network_address + 11 + self.index)

    @property
    def mgmt_root(self) -> str:  # root-namespace side of the management link
        return str(MGMT_NET.network_address + 256 * self.index + 1)

    @property
    def mgmt_host(self) -> str:  # where this host's sshd listens
        return str(MGMT_NET.network_address + 256 * self.index + 2)

    @property
    def mgmt_if(self) -> str:
        return prefixed("m", self.name)

    @property
    def fabric_port(self) -> str:
        return f"{PREFIX}d-{self.name}"

    @property
    def dir(self) -> Path:
        return state_dir() / self.name


def testbed_hosts(names=DEFAULT_HOSTS) -> list[TestbedHost]:
    names = list(names)
    if len(names) < 2:
        raise TestbedError("the testbed needs at least two hosts (a client and a server)")
    for n in names:
        if not n.isalnum() or not n.islower() or len(n) > 8 or not n[0].isalpha():
            raise TestbedError(f"testbed host name '{n}' must be 1-8 lowercase letters/digits starting with a letter")
    if len(set(names)) != len(names):
        raise TestbedError("testbed host names must be unique")
    return [TestbedHost(n, i) for i, n in enumerate(names)]


def precheck() -> None:
    """Root and the tools we need, or one clear message with the command to fix it."""
    if os.geteuid() != 0:
        raise TestbedError("the local testbed needs root (it creates network namespaces). Run as root, e.g. 'sudo "
                           "invoke testbed.up'.")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not which(tool)})
    if missing:
        raise TestbedError(f"missing tools for the testbed. Install them with: apt-get install -y {' '.join(missing)}")


def up(names=DEFAULT_HOSTS) -> Path:
    """Bring the testbed up (idempotent) and return the path of its generated inventory."""
    precheck()
    hosts = testbed_hosts(names)
    existing = read_state()
    if existing and existing.get("hosts") != [h.name for h in hosts]:
        raise TestbedError(f"a testbed with hosts {existing.get('hosts')} is up. Run 'invoke testbed.down' first.")
    sd = state_dir()
    sd.mkdir(parents=True, exist_ok=True)
    _write_state(hosts)  # first, so that down can clean a half-built testbed
    try:
        _keys(hosts)
        _fabric()
        for h in hosts:
            _host(h)
        for h in hosts:
            _sshd(h)
        _write_known_hosts(hosts)
        path = _write_inventory(hosts)
        _wait_for_ssh(hosts)
    except BaseException:
        down()
        raise
    return path


def _write_state(hosts: list[TestbedHost]) -> None:
    state = read_state() or {}
    state["hosts"] = [h.name for h in hosts]
    # /run/sshd is sshd's privilege-separation directory; remember whether we made it.
    if "made_run_sshd" not in state:
        state["made_run_sshd"] = not Path(RUN_SSHD).exists()
    (state_dir() / "state.yml").write_text(yaml.safe_dump(state))


def read_state() -> dict | None:
    p = state_dir() / "state.yml"
    return yaml.safe_load(p.read_text()) if p.exists() else None


def _keys(hosts: list[TestbedHost]) -> None:
    sd = state_dir()
    client_key = sd / "id_ed25519"
    if not client_key.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cnibench-testbed", "-f", str(client_key)])
    (sd / "authorized_keys").write_text((sd / "id_ed25519.pub").read_text())
    for h in hosts:
        h.dir.mkdir(parents=True, exist_ok=True)
        key = h.dir / "ssh_host_ed25519_key"
        if not key.exists():
            sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{PREFIX}-{h.name}", "-f", str(key)])


FABRIC_NO_NETFILTER = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
                       "net.bridge.bridge-nf-call-arptables")


def _fabric() -> None:
    if FABRIC_NS not in netns_list():
        sh(["ip", "netns", "add", FABRIC_NS])
    sh(["ip", "-n", FABRIC_NS, "link", "set", "lo", "up"])
    if not link_exists(BRIDGE, FABRIC_NS):
        sh(["ip", "-n", FABRIC_NS, "link", "add", BRIDGE, "type", "bridge"])
        sh(["ip", "-n", FABRIC_NS, "addr", "add", f"{ROUTER}/{DATA_NET.prefixlen}", "dev", BRIDGE])
    sh(["ip", "-n", FABRIC_NS, "link", "set", BRIDGE, "up"])
    # The fabric stands for the wire and a switch, and a switch runs no iptables. With
    # br_netfilter present (built into this kernel; its switches are per namespace, default on)
    # every frame the bridge forwards would cross the fabric's netfilter hooks, a cost that no
    # real network adds and that a profile of the sender showed (br_nf_*, nf_hook_slow).
    sh(["ip", "netns", "exec", FABRIC_NS, "sysctl", "-q", "-e", "-w", *(f"{k}=0" for k in FABRIC_NO_NETFILTER)])


def _host(h: TestbedHost) -> None:
    if h.netns not in netns_list():
        sh(["ip", "netns", "add", h.netns])
    sh(["ip", "-n", h.netns, "link", "set", "lo", "up"])
    if not link_exists("eth0", h.netns):
        sh(["ip", "link", "add", "eth0", "netns", h.netns, "type", "veth", "peer", "name", h.fabric_port, "netns",
            FABRIC_NS])
        sh(["ip", "-n", h.netns, "addr", "add", f"{h.data_address}/{DATA_NET.prefixlen}", "dev", "eth0"])
        sh(["ip", "-n", FABRIC_NS, "link", "set", h.fabric_port, "master", BRIDGE])
    sh(["ip", "-n", FABRIC_NS, "link", "set", h.fabric_port, "up"])
    sh(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
    if not link_exists(h.mgmt_if):
        sh(["ip", "link", "add", h.mgmt_if, "type", "veth", "peer", "name", "mgmt0", "netns", h.netns])
        sh(["ip", "addr", "add", f"{h.mgmt_root}/30", "dev", h.mgmt_if])
        sh(["ip", "-n", h.netns, "addr", "add", f"{h.mgmt_host}/30", "dev", "mgmt0"])
    sh(["ip", "link", "set", h.mgmt_if, "up"])
    sh(["ip", "-n", h.netns, "link", "set", "mgmt0", "up"])


def _sshd_config(h: TestbedHost) -> str:
    sd = state_dir()
    return "\n".join([
        "# generated by cnibench for the local testbed",
        f"ListenAddress {h.mgmt_host}",
        f"Port {SSH_PORT}",
        f"HostKey {h.dir / 'ssh_host_ed25519_key'}",
        f"PidFile {h.dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {sd / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "MaxSessions 200",
        "MaxStartups 200:30:400",
        "LogLevel ERROR",
        "Subsystem sftp internal-sftp",
        # Debian's bash sources ~/.bashrc for commands run by sshd when SHLVL < 2; a slow
        # .bashrc (pyenv init: ~90 ms) would then be paid on every command. Hosts get the
        # system PATH instead, which is what a fresh server has.
        "SetEnv SHLVL=1",
        "",
    ])


def _sshd_pid(h: TestbedHost) -> int | None:
    p = h.dir / "sshd.pid"
    try:
        pid = int(p.read_text().strip())
    except (OSError, ValueError):
        return None
    return None if gone(pid) else pid


def _sshd(h: TestbedHost) -> None:
    if _sshd_pid(h):
        return
    Path(RUN_SSHD).mkdir(mode=0o755, exist_ok=True)
    conf = h.dir / "sshd_config"
    conf.write_text(_sshd_config(h))
    sshd = which("sshd") or "/usr/sbin/sshd"
    sh([sshd, "-t", "-f", str(conf)])
    # Join only the network namespace: see the module docstring for why not `ip netns exec`.
    sh([*nofile_prefix(), "nsenter", f"--net=/run/netns/{h.netns}", "--", sshd, "-f", str(conf), "-E",
        str(h.dir / "sshd.log")])


def _write_known_hosts(hosts: list[TestbedHost]) -> None:
    lines = []
    for h in hosts:
        key = (h.dir / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{h.mgmt_host} {key[0]} {key[1]}")
    (state_dir() / "known_hosts").write_text("\n".join(lines) + "\n")


def inventory_document(hosts: list[TestbedHost]) -> dict:
    sd = state_dir()
    return {
        "name": "testbed",
        "testbed": {"fabric_netns": FABRIC_NS, "bridge": BRIDGE, "router": ROUTER, "data_cidr": str(DATA_NET)},
        "hosts": [
            {
                "name": h.name,
                "address": h.mgmt_host,
                "port": SSH_PORT,
                "user": "root",
                "key_file": str(sd / "id_ed25519"),
                "known_hosts": str(sd / "known_hosts"),
                "host_key_policy": "verify",
                "data_interface": "eth0",
                "data_address": h.data_address,
                "role": h.role,
                "testbed_netns": h.netns,
            }
            for h in hosts
        ],
    }


def _write_inventory(hosts: list[TestbedHost]) -> Path:
    path = generated_inventory_path()
    path.write_text("# generated by 'invoke testbed.up'; removed by 'invoke testbed.down'\n"
                    + yaml.safe_dump(inventory_document(hosts), sort_keys=False))
    return path


def _wait_for_ssh(hosts: list[TestbedHost], timeout: float = 10.0) -> None:
    import socket

    for h in hosts:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((h.mgmt_host, SSH_PORT), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    log = (h.dir / "sshd.log")
                    detail = log.read_text()[-500:] if log.exists() else ""
                    raise TestbedError(f"sshd of testbed host {h.name} does not answer on {h.mgmt_host}:{SSH_PORT}. "
                                       f"{detail}")
                time.sleep(0.05)


def down() -> list[str]:
    """Remove every object the testbed made. Returns what was removed."""
    precheck()
    state = read_state() or {}
    names = state.get("hosts") or [n[len(f"{PREFIX}-m-"):] for n in root_links() if n.startswith(f"{PREFIX}-m-")]
    hosts = [TestbedHost(n, i) for i, n in enumerate(names)]
    removed: list[str] = []
    for h in hosts:
        pid = _sshd_pid(h)
        if pid:
            kill(pid)
            removed.append(f"sshd {h.name} (pid {pid})")
    present = netns_list()
    for h in hosts:
        # container namespaces that modes made on this testbed host go with it
        for ns in sorted(n for n in present if n.startswith(h.netns + "-")):
            delete_netns(ns)
            removed.append(f"netns {ns}")
        if h.netns in present:
            delete_netns(h.netns)
            removed.append(f"netns {h.netns}")
        if link_exists(h.mgmt_if):  # normally gone with its peer
            sh(["ip", "link", "del", h.mgmt_if], check=False)
            removed.append(f"link {h.mgmt_if}")
    if FABRIC_NS in present:
        delete_netns(FABRIC_NS)
        removed.append(f"netns {FABRIC_NS}")
    if state.get("made_run_sshd") and release_run_sshd():
        removed.append(f"dir {RUN_SSHD}")
    if state_dir().exists():
        shutil.rmtree(state_dir())
        removed.append(f"dir {state_dir()}")
    try:
        (RUN_DIR / "lease").rmdir()  # the hosts' session leases (lease.py), when none is left
    except OSError:
        pass
    try:
        RUN_DIR.rmdir()  # only if nothing else of ours is left in it
    except OSError:
        pass
    return removed


def status() -> dict:
    """What of the testbed exists right now."""
    state = read_state()
    present = netns_list()
    names = (state or {}).get("hosts") or []
    hosts = [TestbedHost(n, i) for i, n in enumerate(names)]
    return {
        "up": bool(state) and all(h.netns in present and _sshd_pid(h) for h in hosts) and FABRIC_NS in present,
        "state_dir": str(state_dir()) if state_dir().exists() else None,
        "inventory": str(generated_inventory_path()) if generated_inventory_path().exists() else None,
        "fabric": FABRIC_NS in present,
        "hosts": [
            {
                "name": h.name,
                "role": h.role,
                "netns": h.netns if h.netns in present else None,
                "ssh": f"{h.mgmt_host}:{SSH_PORT}",
                "sshd_pid": _sshd_pid(h),
                "data_address": h.data_address,
                "containers": sorted(n for n in present if n.startswith(h.netns + "-")),
            }
            for h in hosts
        ],
        "other_cnib_netns": sorted(n for n in present if n.startswith(f"{PREFIX}") and n != FABRIC_NS
                                   and not any(n == h.netns or n.startswith(h.netns + "-") for h in hosts)),
    }
