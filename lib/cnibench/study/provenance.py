"""The provenance manifest of a study: what ran, where, with which code and machines.

One manifest per study at data/raw/<study>/manifest.json (every record links to it). It holds
the study and inventory hashes, the seed, the calibration the rates came from, the planned order,
and one entry per session (each `run-all` invocation): git commit and dirty flag, the driving
machine, each host's kernel, CPU model and count, NIC driver, MTU, offloads and tool versions,
the runs executed in order, start and end times and how the session ended.

Parsers are pure and tested on real command output; gathering is the only I/O.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping

from ..catalog import PREFIX
from ..infra.config import ROOT
from ..parsing import version
from ..results import atomic_write_text, now_iso

MANIFEST_SCHEMA = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def manifest_path(raw_dir: Path, study: str) -> Path:
    return Path(raw_dir) / study / MANIFEST_NAME


def manifest_ref(study: str) -> str:
    """What a record's `provenance` key holds: the manifest's path relative to data/raw."""
    return f"{study}/{MANIFEST_NAME}"


def fact_commands(data_interface: str) -> dict[str, list[str]]:
    """The read-only commands whose output describes a host."""
    return {
        "kernel": ["uname", "-r"],
        "machine": ["uname", "-m"],
        "cpu_count": ["nproc", "--all"],
        "cpuinfo": ["cat", "/proc/cpuinfo"],
        "os_release": ["cat", "/etc/os-release"],
        "nic_driver": ["ethtool", "-i", data_interface],
        "mtu": ["cat", f"/sys/class/net/{data_interface}/mtu"],
        "offloads": ["ethtool", "-k", data_interface],
        "tuning": ["sh", "-c", TUNING_SH, f"{PREFIX}-tuning", data_interface],
        "nginx": ["nginx", "-v"],
        "h2load": ["h2load", "--version"],
        "tcpkali": ["tcpkali", "--version"],
        "wrk": ["wrk", "--version"],
        "cc": ["cc", "--version"],  # compiles cnib-openloop on the host
    }


# Host tuning that moves latency: frequency governor per CPU, C-state limits, the data NIC's
# interrupts and their CPU affinity (lines of /proc/interrupts naming the interface or its PCI
# address). One read-only command; parse_tuning reads its lines.
TUNING_SH = r"""i=$1
for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
  [ -r "$f" ] && { c=${f#/sys/devices/system/cpu/}; echo "governor ${c%%/*} $(cat "$f")"; }
done
[ -r /sys/module/intel_idle/parameters/max_cstate ] && echo "max_cstate $(cat /sys/module/intel_idle/parameters/max_cstate)"
[ -r /sys/devices/system/cpu/cpuidle/current_driver ] && echo "cpuidle_driver $(cat /sys/devices/system/cpu/cpuidle/current_driver)"
[ -r /sys/devices/system/cpu/cpuidle/current_governor_ro ] && echo "cpuidle_governor $(cat /sys/devices/system/cpu/cpuidle/current_governor_ro)"
for d in /sys/devices/system/cpu/cpu0/cpuidle/state[0-9]*; do
  [ -r "$d/name" ] && echo "cstate ${d##*/} $(cat "$d/disable" 2>/dev/null || echo ?) $(cat "$d/name")"
done
bus=$(basename "$(readlink "/sys/class/net/$i/device" 2>/dev/null)" 2>/dev/null)
grep -E "(^|[^[:alnum:]])$i([^[:alnum:]]|\$)${bus:+|$bus}" /proc/interrupts 2>/dev/null | while read -r n rest; do
  n=${n%:}; echo "irq $n $(cat /proc/irq/$n/smp_affinity_list 2>/dev/null || echo ?) ${rest##* }"
done
exit 0
"""  # noqa: E501 (three shell lines of sysfs paths; wrapping them would change the script)


def parse_tuning(text: str) -> dict[str, Any]:
    """TUNING_SH's lines as {"governor": {cpu: name}, "max_cstate", "cpuidle_driver",
    "cpuidle_governor", "cstates": [{"state", "name", "disabled"}], "nic_irqs": [{"irq", "affinity", "name"}]}."""
    out: dict[str, Any] = {"governor": {}, "max_cstate": None, "cpuidle_driver": None, "cpuidle_governor": None,
                           "cstates": [], "nic_irqs": []}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        key = parts[0]
        if key == "governor" and len(parts) == 3:
            out["governor"][parts[1]] = parts[2]
        elif key == "max_cstate":
            out["max_cstate"] = int(parts[1]) if parts[1].lstrip("-").isdigit() else parts[1]
        elif key in ("cpuidle_driver", "cpuidle_governor"):
            out[key] = parts[1]
        elif key == "cstate" and len(parts) >= 4:
            out["cstates"].append({"state": parts[1], "name": " ".join(parts[3:]),
                                   "disabled": {"1": True, "0": False}.get(parts[2])})
        elif key == "irq" and len(parts) >= 3:
            out["nic_irqs"].append({"irq": parts[1], "affinity": parts[2], "name": parts[3] if len(parts) > 3 else ""})
    return out


def parse_cpu_model(cpuinfo: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return None


def parse_ethtool_driver(text: str) -> dict[str, str]:
    """`ethtool -i`: driver, version, firmware-version, bus-info, ... as a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def parse_offloads(text: str) -> dict[str, bool]:
    """`ethtool -k`: feature name -> on/off (the '[fixed]' note dropped)."""
    out = {}
    for line in text.splitlines()[1:]:
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        state = value.split()[0] if value.split() else ""
        if state in ("on", "off"):
            out[key.strip()] = state == "on"
    return out


def parse_os_release(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


parse_version = version  # the one parser (parsing.version); the manifest's tool versions


def host_facts_from_outputs(outputs: Mapping[str, tuple[int, str, str]]) -> dict[str, Any]:
    """Turn {fact: (exit_status, stdout, stderr)} into the manifest's host entry."""

    def ok(key):
        r = outputs.get(key)
        return r[1] if r and r[0] == 0 else None

    def tool(key):
        r = outputs.get(key)
        if not r or r[0] == 127:
            return None
        return parse_version(r[1] + "\n" + r[2]) if (r[1] or r[2]) else None

    cpuinfo, mtu, drv, offl, osr = ok("cpuinfo"), ok("mtu"), ok("nic_driver"), ok("offloads"), ok("os_release")
    count = ok("cpu_count")
    mtu_v = int(mtu) if mtu and mtu.strip().isdigit() else None
    offloads = parse_offloads(offl) if offl else None
    tuning = parse_tuning(ok("tuning") or "") if outputs.get("tuning") else None
    if tuning is not None:
        tuning.update(mtu=mtu_v, offloads=offloads)
    return {
        "kernel": (ok("kernel") or "").strip() or None,
        "machine": (ok("machine") or "").strip() or None,
        "os": parse_os_release(osr) if osr else None,
        "cpu_model": parse_cpu_model(cpuinfo) if cpuinfo else None,
        "cpu_count": int(count) if count and count.strip().isdigit() else None,
        "nic": parse_ethtool_driver(drv) if drv else None,
        "mtu": mtu_v,
        "offloads": offloads,
        "tuning": tuning,
        "tools": {name: tool(name) for name in ("nginx", "h2load", "tcpkali", "wrk", "cc")},
    }


async def gather_host_facts(fleet) -> dict[str, dict]:
    """Each host's facts (read-only commands; a missing tool is recorded as None)."""

    async def one(host):
        outputs = {}
        for key, argv in fact_commands(host.spec.data_interface).items():
            r = await host.run(argv, check=False, timeout=15)
            outputs[key] = (r.exit_status, r.stdout, r.stderr)
        facts = host_facts_from_outputs(outputs)
        facts.update(address=host.spec.address, role=host.spec.role, data_interface=host.spec.data_interface)
        return facts

    return await fleet.gather("gather host facts", one)


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the code that ran (None when not a git checkout)."""

    def git(*args):
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def lock_sha256() -> str | None:
    """Hash of requirements.lock, the environment the suite passed with (None: no lock)."""
    from ..infra.lockfile import LOCK

    return sha256_file(LOCK)


def driver_facts() -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for pkg in ("cnibench", "asyncssh", "papermill", "hdrhistogram", "numpy", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    from ..workload import hiccup, stealprobe
    from ..workload.loadgen import SOURCES, source_hash

    return {"hostname": platform.node(), "python": platform.python_version(), "kernel": platform.release(),
            "packages": versions, "lock_sha256": lock_sha256(),
            # the project's own C programs, built on the hosts from these sources (the build's
            # compiler is each host's `tools.cc`; each run record names the binary it ran)
            "c_sources_sha256": {**{name: source_hash(name) for name in SOURCES},
                                 "hiccup": hashlib.sha256(hiccup.source()).hexdigest(),
                                 "stealprobe": hashlib.sha256(stealprobe.source()).hexdigest()}}


def new_manifest(study, inventory, planned_order: list[str], calibration: dict | None) -> dict:
    """A study's manifest. `inventory` is a config.Inventory (name, path, testbed flag)."""
    return {
        "schema": MANIFEST_SCHEMA,
        "study": study.name,
        "study_file": str(study.path),
        "study_sha256": study.digest,
        "inventory": inventory_entry(inventory),
        "seed": study.seed,
        "calibration": calibration,
        "order": planned_order,  # run ids in execution order (a resume continues it)
        "hosts": {},  # the latest session's hosts (each session keeps its own)
        "git_commit": None,  # the latest session's
        "sessions": [],
    }


def inventory_entry(inventory) -> dict:
    path = Path(inventory.path)
    return {"name": inventory.name, "file": str(path), "sha256": sha256_file(path), "testbed": bool(inventory.testbed)}


def add_session(manifest: dict, session: dict) -> dict:
    """Append a session; the top-level hosts/git/inventory describe the latest one."""
    manifest["sessions"].append(session)
    manifest["hosts"] = session["hosts"]
    manifest["git_commit"] = session["git"].get("commit")
    manifest["git_dirty"] = session["git"].get("dirty")
    manifest["inventory"] = session["inventory"]
    return manifest


def new_session(study, inventory, git: dict, driver: dict, hosts: dict) -> dict:
    return {
        "started_at": now_iso(),
        "ended_at": None,
        "ended": None,  # complete | stopped-on-failure | interrupted | crashed
        "study_sha256": study.digest,
        "inventory": inventory_entry(inventory),
        "git": git,
        "driver": driver,
        "hosts": hosts,
        "executed": [],  # run ids in the order they ran in this session
        "mode_blocks": [],  # [{"repetition", "mode", "up_s", "down_s", "error"[, "details"]}]
    }


def read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == MANIFEST_SCHEMA else None


def write_manifest(path: Path, manifest: dict) -> None:
    """Atomic replace: a crash leaves the previous or the new manifest, never half of one."""
    atomic_write_text(Path(path), json.dumps(manifest, indent=1, sort_keys=True))
