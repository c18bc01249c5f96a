"""Typed, validated configuration (inventories) and the project's paths.

An error names the file, the key, what is wrong and how to fix it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..catalog import IFNAME_MAX
from ..errors import ConfigError


ROOT = Path(os.environ.get("CNIBENCH_ROOT", Path(__file__).resolve().parents[3]))
# Where generated output goes (data/, figures/, reports/): the project, unless redirected
# (the test suite points it at a temporary directory so tests never touch real results).
OUTPUT = Path(os.environ.get("CNIBENCH_OUTPUT", ROOT))
DATA = OUTPUT / "data"
RAW = DATA / "raw"
RUNS = DATA / "runs"
PROCESSED = DATA / "processed"
FIGURES = OUTPUT / "figures"
REPORTS = OUTPUT / "reports"
INVENTORIES = ROOT / "inventories"
STUDIES = ROOT / "studies"
NOTEBOOKS = ROOT / "notebooks"
# Everything the project leaves on a host lives here (ownership prefix: cnib).
RUN_DIR = Path(os.environ.get("CNIBENCH_RUN_DIR", "/run/cnibench"))
TESTBED_STATE = RUN_DIR / "testbed"  # the local testbed's state (testbed.py)
TESTBED_INVENTORY = TESTBED_STATE / "inventory.yml"  # the inventory `testbed.up` writes
DEFAULT_INVENTORY = INVENTORIES / "testbed.yml"

ROLES = ("client", "server")
HOST_KEY_POLICIES = ("verify", "insecure-ignore")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
# Names that become part of a path (data/calibration/<inventory>/, data/raw/<study>/): no '/',
# no '..', no spaces or shell characters.
SAFE_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class HostSpec:
    """One machine under test, as the inventory describes it."""

    name: str
    address: str  # where SSH connects
    role: str  # client | server
    data_interface: str  # the data-plane NIC (never the SSH one on the testbed)
    port: int = 22
    user: str = "root"
    key_file: str | None = None  # None: use the SSH agent / default keys
    agent: bool = False
    host_key_policy: str = "verify"
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    sudo: bool = False  # prefix privileged commands with `sudo -n`
    data_address: str | None = None  # discovered from data_interface when absent
    testbed_netns: str | None = None  # set for testbed hosts: the namespace that *is* the host


@dataclass(frozen=True)
class Inventory:
    path: Path
    name: str
    hosts: tuple[HostSpec, ...]
    testbed: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def by_role(self, role: str) -> HostSpec:
        return next(h for h in self.hosts if h.role == role)

    @property
    def client(self) -> HostSpec:
        return self.by_role("client")

    @property
    def server(self) -> HostSpec:
        return self.by_role("server")


_HOST_KEYS = {
    "name", "address", "port", "user", "key_file", "agent", "host_key_policy", "known_hosts",
    "data_interface", "data_address", "role", "sudo", "testbed_netns",
}


def did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def read_yaml(path: Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, "(file)", "does not exist",
                          "Check the path, or copy one of the examples in inventories/ or studies/.")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise ConfigError(path, where, f"is not valid YAML ({getattr(exc, 'problem', exc)})",
                          "Fix the YAML syntax at that line.") from None


def parse_inventory(data: Any, path: Path | str = "<inventory>") -> Inventory:
    """Validate an inventory document (already parsed YAML) into typed objects."""
    path = Path(path)
    if not isinstance(data, dict):
        raise ConfigError(path, "(top level)", "must be a mapping with a 'hosts' list",
                          "Start the file with 'hosts:' followed by a list of hosts.")
    unknown = set(data) - {"name", "hosts", "testbed", "aws"}
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(path, k, "is not a known key" + did_you_mean(k, ["name", "hosts", "testbed", "aws"]),
                          "Known top-level keys: name, hosts, testbed, aws.")
    hosts_raw = data.get("hosts")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise ConfigError(path, "hosts", "must be a non-empty list of hosts",
                          "Add one entry per machine with at least name, address, role and data_interface.")
    hosts: list[HostSpec] = []
    for i, raw in enumerate(hosts_raw):
        hosts.append(_parse_host(raw, f"hosts[{i}]", path))
    names = [h.name for h in hosts]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(path, "hosts", f"host name '{n}' appears twice", "Give every host a unique name.")
    roles = [h.role for h in hosts]
    for role in ROLES:
        if role not in roles:
            raise ConfigError(path, "hosts", f"no host has role '{role}'",
                              "Mark one host 'role: client' (load generator) and one 'role: server' (nginx).")
    endpoints = [(h.address, h.port) for h in hosts]
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError(path, "hosts", "two hosts share the same SSH address and port",
                          "Each host needs its own address:port.")
    tb = data.get("testbed", False)
    if not isinstance(tb, (bool, dict)):
        raise ConfigError(path, "testbed", f"'{tb}' is neither true/false nor a mapping",
                          "Leave 'testbed' out for real hosts; the testbed writes it itself.")
    extra = {k: data[k] for k in ("aws", "testbed") if isinstance(data.get(k), dict)}
    name = str(data.get("name") or path.stem)
    if not SAFE_NAME_RE.match(name):
        raise ConfigError(path, "name", f"'{name}' is not a usable inventory name",
                          "Use 1-64 letters, digits, '-' and '_', starting with a letter (it becomes a directory name "
                          "under data/calibration/).")
    return Inventory(path=path, name=name, hosts=tuple(hosts), testbed=bool(tb), extra=extra)


def _parse_host(raw: Any, where: str, path: Path) -> HostSpec:
    if not isinstance(raw, dict):
        raise ConfigError(path, where, "must be a mapping",
                          "Write each host as 'name: ...', 'address: ...' on its own lines.")
    unknown = set(raw) - _HOST_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(path, f"{where}.{k}", "is not a known host key" + did_you_mean(k, _HOST_KEYS),
                          f"Known keys: {', '.join(sorted(_HOST_KEYS))}.")
    for key in ("name", "address", "role", "data_interface"):
        if key not in raw or raw[key] in (None, ""):
            raise ConfigError(path, f"{where}.{key}", "is missing", f"Add '{key}:' to this host.")
    name = str(raw["name"])
    if not _NAME_RE.match(name):
        raise ConfigError(path, f"{where}.name", f"'{name}' is not a valid host name",
                          "Use 1-8 lowercase letters and digits, starting with a letter (it becomes part of "
                          "15-character interface names).")
    role = str(raw["role"])
    if role not in ROLES:
        raise ConfigError(path, f"{where}.role", f"'{role}' is not a role{did_you_mean(role, ROLES)}",
                          "Use 'client' or 'server'.")
    port = raw.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(path, f"{where}.port", f"'{port}' is not a TCP port",
                          "Use a whole number from 1 to 65535 (22 is the SSH default).")
    ifname = str(raw["data_interface"])
    if not _IFNAME_RE.match(ifname):
        raise ConfigError(path, f"{where}.data_interface", f"'{ifname}' is not a valid interface name",
                          f"Interface names have 1-{IFNAME_MAX} characters without spaces or '/'; see 'ip link' on the "
                          "host.")
    policy = str(raw.get("host_key_policy", "verify"))
    if policy not in HOST_KEY_POLICIES:
        raise ConfigError(path, f"{where}.host_key_policy",
                          f"'{policy}' is not a policy{did_you_mean(policy, HOST_KEY_POLICIES)}",
                          "Use 'verify' (default: known_hosts must hold the key) or, knowingly, 'insecure-ignore'.")
    key_file = raw.get("key_file")
    agent = raw.get("agent", False)
    if not isinstance(agent, bool):
        raise ConfigError(path, f"{where}.agent", f"'{agent}' is not true or false",
                          "Write 'agent: true' to use the SSH agent.")
    key_file = _key_file(key_file, where, path)
    known_hosts = _known_hosts(raw.get("known_hosts"), where, path, policy)
    data_address = _data_address(raw.get("data_address"), where, path)
    for flag in ("sudo",):
        if not isinstance(raw.get(flag, False), bool):
            raise ConfigError(path, f"{where}.{flag}", f"'{raw[flag]}' is not true or false",
                              f"Write '{flag}: true' or '{flag}: false'.")
    return HostSpec(
        name=name, address=str(raw["address"]), role=role, data_interface=ifname, port=port,
        user=str(raw.get("user", "root")), key_file=key_file, agent=agent, host_key_policy=policy,
        known_hosts=known_hosts, sudo=bool(raw.get("sudo", False)), data_address=data_address,
        testbed_netns=raw.get("testbed_netns"),
    )


def _key_file(key_file: Any, where: str, path: Path) -> str | None:
    if key_file is not None:
        key_path = resolve_relative(path, key_file)
        if not key_path.exists():
            raise ConfigError(path, f"{where}.key_file", f"'{key_path}' does not exist",
                              "Point key_file at a private key, or remove it and set 'agent: true'.")
        perms = key_path.stat().st_mode & 0o777
        if perms & 0o077:  # as ssh itself: a key others can read is not private
            raise ConfigError(path, f"{where}.key_file",
                              f"'{key_path}' can be read or written by other users (mode {perms:04o})",
                              f"Make it private: chmod 600 {key_path}")
        key_file = str(key_path)
    return key_file


def _known_hosts(known_hosts: Any, where: str, path: Path, policy: str) -> str | None:
    if known_hosts is not None:
        kh = resolve_relative(path, known_hosts)
        if policy == "verify" and not kh.exists():
            raise ConfigError(path, f"{where}.known_hosts", f"'{kh}' does not exist",
                              "Create it with 'ssh-keyscan -p PORT ADDRESS >> FILE' after checking the fingerprint, or "
                              "remove the key to use ~/.ssh/known_hosts.")
        known_hosts = str(kh)
    return known_hosts


def _data_address(data_address: Any, where: str, path: Path) -> str | None:
    if data_address is not None:
        try:
            ipaddress.IPv4Address(str(data_address))
        except ValueError:
            raise ConfigError(path, f"{where}.data_address", f"'{data_address}' is not an IPv4 address",
                              "Write the data interface's address like 198.18.0.11, or remove it to discover "
                              "it.") from None
        data_address = str(data_address)
    return data_address


def resolve_relative(base_file: Path, value: Any) -> Path:
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else (Path(base_file).parent / p)


def load_inventory(path: Path | str | None = None) -> Inventory:
    """Load and validate an inventory. A testbed marker file resolves to the live testbed's inventory."""
    path = Path(path) if path else DEFAULT_INVENTORY
    data = read_yaml(path)
    if isinstance(data, dict) and set(data) == {"testbed"} and isinstance(data["testbed"], dict):
        live = TESTBED_INVENTORY
        if not live.exists():
            raise ConfigError(path, "testbed", "the local testbed is not up",
                              "Run 'invoke testbed.up' first (as root).")
        return parse_inventory(read_yaml(live), live)
    return parse_inventory(data, path)


def testbed_hosts(path: Path | str | None = None) -> list[str] | None:
    """Host names of a testbed marker inventory, or None if the file is a real inventory."""
    data = read_yaml(Path(path) if path else DEFAULT_INVENTORY)
    if isinstance(data, dict) and set(data) == {"testbed"} and isinstance(data["testbed"], dict):
        return list(data["testbed"].get("hosts", ["client", "server"]))
    return None
