"""What a mode applied, where it is kept, and how it is read back.

The driver's copy is the authority: DRIVER_DIR/<inventory>/<target>.json (0600, in a 0700
directory), one file per target (each inventory host, `@local`, `@aws`) holding that target's
steps and a journal: how many of them were started (the step in flight counts, so a crash
leaves it to undo). Only this copy's undo commands run on `@local` (this machine) or `@aws`.

Each host also keeps a copy, /run/cnibench/modes/<host>.json, so a later process on another
machine can find what is up. A host's copy is used only when the driver has none, and only
after trust.check_host_state: its own steps, undo commands of known shapes, a typed endpoint.

Sysctl originals: before a mode changes a sysctl, its original value is recorded where the
sysctl lives (/run/cnibench/modes/<target>.sysctl, on the host; `@local`'s on this machine),
kept across failed teardowns and read by fact gathering, so a second `up` after a crash never
takes a value we changed for the original, and `clean` can restore it without any state.

Every file is written whole or not at all: a temporary file renamed over the old one (on a
host by one shell command that also checks the byte count, so a dropped connection cannot
leave half a file). An unreadable file is treated as absent (and reported).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ...catalog import PREFIX
from ...errors import PlanError
from ...infra.config import DATA, RUN_DIR
from ..base import AWS, LOCAL, Step, settings_fields
from ..registry import MODES
from .trust import StateRefused, check_endpoint, check_host_state, parse_originals

DRIVER_DIR = DATA / "state" / "modes"
HOST_DIR = RUN_DIR / "modes"
SPECIAL = (LOCAL, AWS)


def host_state_path(name: str) -> str:
    return f"{HOST_DIR}/{name}.json"


def originals_path(name: str) -> str:
    return f"{HOST_DIR}/{name}.sysctl"


def inventory_key(name: str) -> str:
    """A directory name for an inventory: readable, and distinct for distinct names."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)).lstrip(".")[:40] or "inventory"
    return f"{safe}-{hashlib.sha256(str(name).encode()).hexdigest()[:8]}"


def driver_dir(inventory) -> Path:
    return Path(DRIVER_DIR) / inventory_key(inventory.name)


def _commit(tmp: str, path: str) -> None:
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one


def write_driver(inventory, target: str, doc: dict, durable: bool = True) -> None:
    """Write one target's state on this machine, whole or not at all (0600)."""
    d = driver_dir(inventory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=d)  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        _commit(tmp, str(d / f"{target}.json"))
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_driver(inventory) -> tuple[dict[str, dict], list[str]]:
    """target -> its state document, and the files that could not be read (treated as absent)."""
    d = driver_dir(inventory)
    docs, problems = {}, []
    if not d.is_dir():
        return docs, problems
    for p in sorted(d.glob("*.json")):
        try:
            doc = json.loads(p.read_text())
            if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list):
                raise ValueError("not a state document")
            check_endpoint(doc.get("endpoint"), _modes())
        except (OSError, ValueError, StateRefused) as exc:
            problems.append(f"{p} is unreadable ({exc}); treated as absent")
            continue
        docs[p.stem] = doc
    return docs, problems


def remove_driver(inventory) -> None:
    d = driver_dir(inventory)
    if d.is_dir():
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


# Writes stdin to $1 through a temporary file in the same directory; renames it only when all
# $2 bytes arrived (a dropped connection gives a short stdin, never a torn file).
ATOMIC_WRITE_SH = r"""set -e
f=$1; n=$2; m=$3
mkdir -p "${f%/*}"
t=$(mktemp "$f.XXXXXX")
trap 'rm -f "$t"' EXIT
cat > "$t"
s=$(wc -c < "$t")
[ $s -eq "$n" ] || { echo "short write: $s of $n bytes" >&2; exit 3; }
chmod "$m" "$t"
mv -f "$t" "$f"
"""


def atomic_write_argv(path: str, nbytes: int, mode: str = "644") -> list[str]:
    return ["sh", "-c", ATOMIC_WRITE_SH, f"{PREFIX}-write", path, str(nbytes), mode]


async def write_atomic(target, path: str, text: str, mode: str = "644") -> None:
    await target.run(atomic_write_argv(path, len(text.encode()), mode), input=text)


async def read_text(target, path: str) -> str | None:
    r = await target.run(["cat", path], check=False)
    return r.stdout if r.exit_status == 0 else None


async def read_host_copy(host) -> tuple[dict | None, str | None]:
    """A host's copy of the state, checked; (None, why) when it is unreadable or refused."""
    text = await read_text(host, host_state_path(host.name))
    if text is None:
        return None, None
    try:
        return check_host_state(host.name, json.loads(text), _modes(), _setting_defaults(),
                                host.spec.data_interface), None
    except (ValueError, StateRefused) as exc:
        return None, f"{host.name}:{host_state_path(host.name)} is not trusted ({exc}); treated as absent"


async def read_originals(target) -> tuple[list[str], str | None]:
    """Recorded sysctl originals on a target (`key=value`), checked."""
    text = await read_text(target, originals_path(target.name))
    if text is None:
        return [], None
    try:
        return parse_originals(text), None
    except StateRefused as exc:
        return [], f"{target.name}:{originals_path(target.name)} is not trusted ({exc}); ignored"


async def record_originals(target, assignments: list[str]) -> None:
    """Add originals not recorded yet; a recorded one is older, so it is the true original."""
    if not assignments:
        return
    old, _ = await read_originals(target)
    keys = {a.split("=", 1)[0] for a in old}
    new = old + [a for a in assignments if a.split("=", 1)[0] not in keys]
    if new != old:
        await write_atomic(target, originals_path(target.name), "".join(f"{a}\n" for a in new))


async def remove_originals(target) -> None:
    await target.run(["rm", "-f", originals_path(target.name)], check=False)


@dataclass
class Loaded:
    state: dict | None = None  # mode, status, endpoint, settings, steps, started, source
    problems: list[str] = field(default_factory=list)  # files treated as absent, and why


def merge(docs: dict[str, dict], source: str) -> dict | None:
    """One state from per-target documents (all carry the same mode, endpoint and settings)."""
    if not docs:
        return None
    first = next(iter(docs.values()))
    statuses = {d.get("status") for d in docs.values()}
    status = next((s for s in ("rollback-failed", "applying") if s in statuses), "up")
    keys = ("mode", "implementation", "endpoint", "settings", "commands", "kernel_objects", "setup_seconds", "details")
    state = {k: first.get(k) for k in keys}
    state.update(status=status, source=source, steps=[s for d in docs.values() for s in d["steps"]],
                 started={t: d.get("started") for t, d in docs.items()})
    return state


async def load(fleet) -> Loaded:
    """The driver's state; only when it has none, the hosts' checked copies."""
    docs, problems = read_driver(fleet.inventory)
    if docs:
        return Loaded(merge(docs, "driver"), problems)
    copies = await fleet.gather("read mode state", read_host_copy)
    problems += [why for _, why in copies.values() if why]
    return Loaded(merge({h: c for h, (c, _) in copies.items() if c}, "hosts"), problems)


async def current_state(fleet) -> dict | None:
    """The state; PlanError when a state file cannot be read or trusted (only `clean`, which
    sweeps by prefix, goes on without it)."""
    loaded = await load(fleet)
    if loaded.problems:
        raise PlanError("the mode state cannot be used: " + "; ".join(loaded.problems)
                        + ". Run 'invoke clean' to remove every leftover of any mode.")
    return loaded.state


def steps_to_undo(state: dict) -> list[Step]:
    """The steps that were started (all of a target without a journal), in plan order."""
    started = state.get("started") or {}
    groups: dict[str, list[Step]] = {}
    for d in state.get("steps", []):
        s = Step.from_dict(d)
        groups.setdefault(s.host, []).append(s)
    out = []
    for target, steps in groups.items():
        n = started.get(target)
        out += steps if n is None else steps[:n]
    return out


async def read_states(fleet) -> dict[str, dict | None]:
    """Per host: the driver's state document, else the host's checked copy."""
    docs, _ = read_driver(fleet.inventory)
    if any(h.name in docs for h in fleet):
        return {h.name: docs.get(h.name) for h in fleet}
    copies = await fleet.gather("read mode state", read_host_copy)
    return {h: c for h, (c, _) in copies.items()}


def host_copy(doc: dict) -> dict:
    """What a host keeps: its own steps, no journal, and no AWS settings."""
    settings = {k: v for k, v in (doc.get("settings") or {}).items() if k != "aws"}
    return {**{k: v for k, v in doc.items() if k not in ("started", "target")}, "settings": settings}


async def write_host_copies(fleet, docs: dict[str, dict]) -> None:
    async def write(host):
        await write_atomic(host, host_state_path(host.name), json.dumps(host_copy(docs[host.name]), indent=1,
                                                                        sort_keys=True))

    await fleet.gather("write mode state", write)


async def remove_host_copies(fleet) -> None:
    await fleet.gather("remove mode state", lambda h: h.run(["rm", "-f", host_state_path(h.name)]))


async def remove_all(fleet, local=None) -> None:
    """Forget the mode: the hosts' copies and originals, then the driver's state (last)."""
    async def host(h):
        await h.run(["rm", "-f", host_state_path(h.name), originals_path(h.name)])

    await fleet.gather("remove mode state", host)
    if local is not None:
        await remove_originals(local)
    remove_driver(fleet.inventory)


def _modes() -> tuple[str, ...]:
    return MODES.names()


def _setting_defaults() -> dict:
    """Every registered kind's settings with their defaults (a host's copy may hold any)."""
    out: dict = {}
    for m in MODES.all():
        defaults = m.settings_type()
        out.update({f: getattr(defaults, f) for f in settings_fields(m.settings_type)})
    return out
