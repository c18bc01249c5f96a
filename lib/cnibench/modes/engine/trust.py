"""What a file read back from a host may say (pure). Root on one benchmark host must not be able
to run anything elsewhere, or anything of its own choosing through us: a host's copy of the mode
state and its sysctl originals are accepted only when every part has a known shape.

- steps: only for that host (never `@local`, never `@aws`); each undo one of the shared shapes
  (SHARED_SHAPES, what engine/pieces.py plans) or of the shapes the state's own mode kind
  declares (`NetworkMode.undo_shapes`; tests/unit/test_modes_trust.py checks every mode's plan);
- sysctl: only keys a mode touches, set to an integer;
- endpoint and settings: every field of the right type and range (ports 1..65535, addresses
  that parse, container namespaces named `cnib-<host>-<role>`).

Anything else refuses the whole file (StateRefused): it is then treated as absent.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Mapping, Sequence

from ...catalog import PREFIX
from ...errors import CnibenchError
from ..node.steps import undo_shapes as node_shapes
from ..registry import MODES

STATUSES = ("applying", "up", "rollback-failed")
STEP_KEYS = {"host", "argv", "undo", "netns", "input", "undo_input"}
HOST = r"[a-z][a-z0-9]{0,7}"  # inventory host names (config._NAME_RE)
IPV4 = r"\d{1,3}(\.\d{1,3}){3}"
CIDR = IPV4 + r"/\d{1,2}"
IFNAME = r"[A-Za-z0-9_.-]{1,15}"
OUR_IF = rf"{PREFIX}[A-Za-z0-9_.-]{{1,11}}"  # every interface a mode creates carries the prefix
OUR_TABLE = rf"{PREFIX}_[a-z0-9_]{{1,27}}"
INT = r"\d{1,3}"
# sysctls the modes change (with their original values in the undo); per-interface keys name a
# plain interface (no dots: sysctl reads dots as path separators).
SYSCTL_KEY = r"net\.ipv4\.(ip_forward|conf\.[A-Za-z0-9_-]{1,15}\.(accept_redirects|send_redirects))"
SYSCTL_SET = re.compile(rf"({SYSCTL_KEY})=({INT})")


class StateRefused(CnibenchError):
    """A file read from a host does not have a shape we trust."""


def pod_netns_re(host: str) -> str:
    return re.escape(f"{PREFIX}-{host}-") + r"[a-z0-9]{1,16}"


def shared_shapes(host: str) -> list[tuple[str, ...]]:
    """argv patterns (one regex per word) of the undos the engine's shared pieces plan."""
    ns = pod_netns_re(host)
    return [
        ("ip", "netns", "del", ns),
        ("ip", "link", "del", OUR_IF),
        ("ip", "-n", ns, "link", "del", "eth0"),
        ("ip", "route", "del", CIDR, "via", IPV4, "dev", IFNAME, "proto", "203"),
        ("nft", "delete", "table", "ip|inet", OUR_TABLE),
        ("tc", "qdisc", "del", "dev", OUR_IF, "clsact"),
        *node_shapes(host),
    ]


def undo_shapes(host: str, data_interface: str | None = None, mode: str | None = None, modes=MODES) -> list[
    tuple[str, ...]]:
    """The shared shapes and those of mode `mode` (None: of every registered kind).
    `data_interface` is the inventory's, never the host's word."""
    kinds = [m for m in modes.all() if mode is None or m.name == mode]
    return shared_shapes(host) + [shape for m in kinds for shape in m.undo_shapes(host, data_interface)]


def undo_allowed(host: str, argv: Sequence[str], data_interface: str | None = None, mode: str | None = None) -> bool:
    """Is `argv` an undo the modes (or mode `mode`) could have planned for `host`?"""
    if not all(isinstance(a, str) for a in argv):
        return False
    argv = list(argv)
    if argv[:3] == ["sysctl", "-q", "-w"] and 1 <= len(argv) - 3 <= 4:
        return all(SYSCTL_SET.fullmatch(a) for a in argv[3:])
    return any(len(shape) == len(argv) and all(re.fullmatch(p, a) for p, a in zip(shape, argv))
               for shape in undo_shapes(host, data_interface, mode))


def check_step(host: str, d: Any, data_interface: str | None = None, mode: str | None = None) -> dict:
    if not isinstance(d, dict) or not {"host", "argv", "undo", "netns"} <= set(d) <= STEP_KEYS:
        raise StateRefused(f"a step is not of the form {{host, argv, undo, netns[, input, undo_input]}}: {str(d)[:99]}")
    if d["host"] != host:
        raise StateRefused(f"a step is addressed to {d['host']!r}, not to this host")
    if not isinstance(d["argv"], list) or not all(isinstance(a, str) for a in d["argv"]):
        raise StateRefused("a step's argv is not a list of strings")
    if d["netns"] is not None and not (isinstance(d["netns"], str) and re.fullmatch(pod_netns_re(host), d["netns"])):
        raise StateRefused(f"a step runs in namespace {d['netns']!r}, not one of this host's containers")
    if d["undo"] is not None and not (
        isinstance(d["undo"], list) and undo_allowed(host, d["undo"], data_interface, mode)):
        raise StateRefused(f"undo {d['undo']!r} is not a command a mode plans")
    if d.get("undo_input") is not None:
        check_cni_input(d["undo"], d["undo_input"])
    return d


def check_cni_input(undo, text) -> None:
    """An undo's stdin from a host: only a CNI plugin's config for that very plugin, with static
    IPAM or none (a host must not choose which binary the plugin delegates to)."""
    plugin = undo[-1].rpartition("/")[2] if undo else ""
    try:
        conf = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        conf = None
    ipam = conf.get("ipam") if isinstance(conf, dict) else None
    if not (isinstance(conf, dict) and undo[0] == "env" and conf.get("type") == plugin
            and (ipam is None or (isinstance(ipam, dict) and ipam.get("type") == "static"))):
        raise StateRefused(f"the stdin of undo {' '.join(undo)[:80]!r} is not that CNI plugin's config")


def _int(value, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise StateRefused(f"{what} {value!r} is not a whole number from {lo} to {hi}")
    return value


def _address(value, what: str) -> str:
    try:
        ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise StateRefused(f"{what} {value!r} is not an IP address") from None
    return value


def check_endpoint(d: Any, modes: Sequence[str]) -> dict:
    """The endpoint's fields with their types; it reaches nginx's config and its run directory."""
    keys = {"mode", "client_netns", "server_netns", "server_bind", "server_port", "connect_address", "connect_port"}
    if not isinstance(d, dict) or set(d) != keys:
        raise StateRefused(f"the endpoint does not have exactly the fields {sorted(keys)}")
    if d["mode"] not in modes:
        raise StateRefused(f"the endpoint's mode {d['mode']!r} is not a known mode")
    for k in ("client_netns", "server_netns"):
        if d[k] is not None and not (isinstance(d[k], str) and re.fullmatch(rf"{PREFIX}-{HOST}-[a-z0-9]{{1,16}}",
                                                                            d[k])):
            raise StateRefused(f"endpoint {k} {d[k]!r} is not a container namespace of ours")
    _address(d["server_bind"], "endpoint server_bind")
    _address(d["connect_address"], "endpoint connect_address")
    _int(d["server_port"], 1, 65535, "endpoint server_port")
    _int(d["connect_port"], 1, 65535, "endpoint connect_port")
    return d


def port_settings(modes=MODES) -> set[str]:
    """Every setting of a registered kind that names a port (its INT_RANGES reach 65535)."""
    return {k for m in modes.all() for k, lo, hi in m.settings_type.INT_RANGES if (lo, hi) == (1, 65535)}


def check_settings(d: Any, defaults: Mapping[str, Any]) -> dict:
    """Known settings keys, each of its default's type (aws never comes from a host)."""
    if not isinstance(d, dict):
        raise StateRefused("settings are not a mapping")
    out = {}
    for k, v in d.items():
        if k == "aws" or k not in defaults:
            continue
        want = defaults[k]
        ok = (v is None and want is None) or (type(v) is type(want)) or (k == "mtu" and (v is None or type(v) is int))
        if not ok:
            raise StateRefused(f"setting {k}={v!r} is not of type {type(want).__name__}")
        if k in port_settings():
            _int(v, 1, 65535, f"setting {k}")
        elif isinstance(v, int) and not 0 <= v <= 2**24:
            raise StateRefused(f"setting {k}={v!r} is out of range")
        out[k] = v
    return out


def check_host_state(host: str, d: Any, modes: Sequence[str], setting_defaults: Mapping[str, Any],
                     data_interface: str | None = None) -> dict:
    """A host's copy of the mode state, or StateRefused saying what is wrong with it."""
    if not isinstance(d, dict):
        raise StateRefused("not a JSON object")
    if d.get("mode") not in modes:
        raise StateRefused(f"mode {d.get('mode')!r} is not a known mode")
    if d.get("status") not in STATUSES:
        raise StateRefused(f"status {d.get('status')!r} is not one of {STATUSES}")
    if not isinstance(d.get("steps"), list):
        raise StateRefused("steps is not a list")
    out = {
        "mode": d["mode"], "status": d["status"],
        "steps": [check_step(host, s, data_interface, d["mode"]) for s in d["steps"]],
        "endpoint": check_endpoint(d.get("endpoint"), modes),
        "settings": check_settings(d.get("settings", {}), setting_defaults),
    }
    impl = d.get("implementation", "project")
    if impl not in MODES.implementations(d["mode"]):
        raise StateRefused(f"implementation {impl!r} is not one of mode {d['mode']}")
    out["implementation"] = impl
    for k in ("commands", "kernel_objects"):
        out[k] = _int(d.get(k, 0), 0, 100_000, k)
    if d.get("setup_seconds") is not None:
        if not isinstance(d["setup_seconds"], (int, float)) or isinstance(d["setup_seconds"], bool):
            raise StateRefused("setup_seconds is not a number")
        out["setup_seconds"] = d["setup_seconds"]
    return out


def parse_originals(text: str) -> list[str]:
    """`key=value` lines of sysctl originals; StateRefused unless every line is a touched key
    set to an integer."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if not SYSCTL_SET.fullmatch(ln):
            raise StateRefused(f"{ln[:80]!r} is not a sysctl a mode changes, set to an integer")
    return lines


def sysctl_assignments(steps) -> list[str]:
    """The `key=value` originals in the sysctl undos of `steps`, in order (pure)."""
    out: list[str] = []
    for s in steps:
        undo = list(s.undo or ())
        if undo[:3] == ["sysctl", "-q", "-w"]:
            out += [a for a in undo[3:] if SYSCTL_SET.fullmatch(a)]
    return out
