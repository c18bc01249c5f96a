"""Apply a plan with an undo stack, tear it down, verify it.

Steps of different hosts run concurrently (no plan orders steps across hosts); the steps of
one host run in plan order. A failure anywhere stops every host at its next step and undoes
everything done, in reverse (the step in flight too when its outcome is unknown: a dropped
connection, a timeout). Teardown runs the stored undo commands in reverse and treats
"already gone" as success, so it is idempotent and also finishes a half-applied plan.

The state (state.py) is written before the first change and each step is journalled on the
driver before it runs, so `down`/`clean` after a crash undo exactly what was started. The state
is forgotten only once an undo succeeded: a failed rollback or teardown keeps it for `clean`.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict
from typing import Iterable

from ...catalog import PREFIX
from ...errors import CommandFailed, FleetError, PlanError, UnsupportedFeature
from ...infra.kernelprobe import probe_link_kinds
from ...infra.local import LocalHost
from ..base import AWS, LOCAL, Endpoint, ModeSettings, NetworkMode, Step, VerifyResult
from ..node import checks as node_checks
from ..node import steps as node
from ..registry import MODES, get_mode
from . import state as store
from .aws import AwsDriver
from .facts import gather_facts
from .state import current_state, steps_to_undo
from .trust import sysctl_assignments
from .verify import verify_mode

# Messages of undo commands whose object is already gone (ip, nft, the AWS API's *.NotFound).
ABSENT = re.compile(r"Cannot find device|\.NotFound\b|No such (file or directory|device|process)|Cannot open network "
                    r"namespace", re.I)
# ...but a command that did not run at all (missing, not executable) is never "already gone".
NOT_RUN = re.compile(r'command not found|failed to run command|exec of "[^"]*" failed|: not found\s*$|Permission '
                     r'denied', re.I | re.M)


def already_gone(exit_status: int, text: str) -> bool:
    """Did an undo fail only because its object no longer exists? (pure)"""
    return exit_status not in (126, 127) and bool(ABSENT.search(text)) and not NOT_RUN.search(text)

# Kernel objects the shared pieces create (for the setup-cost record); kinds add their own.
SHARED_CREATES = (r"ip (-n \S+ )?(link|addr|route|neigh|netns) add\b", r"bridge fdb (add|append)\b",
                  r"nft add (table|chain|rule)\b")


def settings_for(fleet, mode: NetworkMode, settings: ModeSettings | None) -> ModeSettings:
    """The kind's settings (defaults, or the given ones' shared part and its own), with what
    the inventory adds for it (e.g. an `aws` section)."""
    return mode.settings_from_inventory(mode.settings(settings), fleet.inventory.extra)


def setup_cost(steps: Iterable[Step], mode: NetworkMode | None = None) -> dict:
    """Commands and kernel objects of a plan (`mode` None: every registered kind's patterns)."""
    kinds = [mode] if mode is not None else MODES.all()
    creates = re.compile("^(" + "|".join((*SHARED_CREATES, *(p for m in kinds for p in m.creates))) + ")")
    steps = list(steps)
    return {"commands": len(steps), "kernel_objects": sum(1 for s in steps if creates.match(" ".join(s.argv)))}


class Runners:
    """Where each Step.host runs: fleet hosts over SSH, this machine, or the AWS API."""

    def __init__(self, fleet, settings: ModeSettings):
        self.fleet, self.settings = fleet, settings
        self._local = LocalHost()
        self._aws = None

    def __getitem__(self, name: str):
        if name == LOCAL:
            return self._local
        if name == AWS:
            if self._aws is None:
                self._aws = AwsDriver.from_settings(getattr(self.settings, "aws", None))
            return self._aws
        return self.fleet[name]


def by_host(steps: Iterable[Step]) -> dict[str, list[Step]]:
    groups: dict[str, list[Step]] = {}
    for s in steps:
        groups.setdefault(s.host, []).append(s)
    return groups


async def run_plan(runners: Runners, steps: list[Step], on_start=None) -> tuple[float, list[Step],
                                                                                BaseException | None]:
    """Run the plan, stopping every host at its next step after the first failure.
    `on_start(target, n)` is called before a target's n-th step runs (the journal).
    Returns the seconds taken, the steps to undo (done, and in flight with an unknown outcome)
    and the error (None: all done)."""
    done: dict[str, list[Step]] = {}
    failed = asyncio.Event()
    start = time.monotonic()

    async def run_host(name: str, host_steps: list[Step]):
        target = runners[name]
        done[name] = []
        for i, s in enumerate(host_steps):
            if failed.is_set():
                return
            if on_start is not None:
                on_start(name, i + 1)
            try:
                await target.run(s.argv, netns=s.netns, input=s.input)
            except CommandFailed:
                failed.set()  # it ran and failed: it made nothing to undo
                raise
            except BaseException:
                done[name].append(s)  # connection lost, timeout, cancelled: it may have run
                failed.set()
                raise
            done[name].append(s)

    groups = by_host(steps)
    error: BaseException | None = None
    try:
        results = await asyncio.gather(*(run_host(n, g) for n, g in groups.items()), return_exceptions=True)
        errors = {n: r for n, r in zip(groups, results) if isinstance(r, BaseException)}
        if errors:
            error = next(iter(errors.values())) if len(errors) == 1 else FleetError("mode up", errors)
    except BaseException as exc:  # cancelled from outside (Ctrl-C, SIGTERM)
        error = exc
    return time.monotonic() - start, [s for g in done.values() for s in g], error


async def apply_steps(runners: Runners, steps: list[Step], on_start=None) -> float:
    """Run the plan; on any failure undo what was done (reverse order) and re-raise."""
    seconds, todo, error = await run_plan(runners, steps, on_start)
    if error is not None:
        await undo_steps(runners, todo, strict=False)
        raise error
    return seconds


async def undo_steps(runners: Runners, steps: list[Step], strict: bool = True) -> list[str]:
    """Undo `steps` (those with an undo) in reverse, per host; "already gone" is success.
    Returns the unexpected failures; with strict, raises them after trying every undo."""
    problems: list[str] = []

    async def undo_host(name: str, host_steps: list[Step]):
        try:
            target = runners[name]
        except Exception as exc:  # a host no longer in the inventory, AWS without settings
            problems.append(f"{name}: cannot undo {len(host_steps)} step(s): {exc}")
            return
        for s in reversed(host_steps):
            if s.undo is None:
                continue
            try:
                r = await target.run(s.undo, netns=s.netns, check=False, input=s.undo_input)
            except Exception as exc:  # unreachable host: report, keep undoing the others
                problems.append(f"{name}: {' '.join(s.undo)}: {exc}")
                continue
            if r.exit_status != 0 and not already_gone(r.exit_status, r.stderr + r.stdout):
                problems.append(f"{name}: {' '.join(s.undo)}: "
                                f"{(r.stderr or r.stdout).strip() or f'exit {r.exit_status}'}")

    await asyncio.gather(*(undo_host(n, g) for n, g in by_host(steps).items()))
    if strict and problems:
        raise PlanError("teardown left errors:\n  " + "\n  ".join(problems)
                        + "\nThe mode's state is kept: run 'invoke clean' to sweep every leftover by prefix.")
    return problems


async def probe_kernel(fleet, kinds: tuple[str, ...], nft: bool) -> None:
    """Create each link kind once in a throwaway namespace on every host, before any change."""
    if not kinds and not nft:
        return

    async def probe(host):
        ns = f"{PREFIX}-{host.name}-probe"
        missing = []
        await host.run(["ip", "netns", "add", ns])
        try:
            errors = await probe_link_kinds(host, ns, kinds)
            missing += [f"{kind} ({err})" for kind, err in errors.items() if err]
            if nft:
                r = await host.run(["ip", "netns", "exec", ns, "nft", "add", "table", "ip", f"{PREFIX}_probe"],
                                   check=False)
                if r.exit_status != 0:
                    missing.append(f"nftables ({(r.stderr or 'nft missing').strip()})")
        finally:
            await host.run(["ip", "netns", "del", ns], check=False)
        return missing

    found = await fleet.gather("kernel probe", probe)
    lacking = {h: m for h, m in found.items() if m}
    if lacking:
        detail = "; ".join(f"{h}: {', '.join(m)}" for h, m in sorted(lacking.items()))
        raise UnsupportedFeature(f"the kernel cannot do what this mode needs — {detail}. Nothing was changed. "
                                 "Load the module (e.g. 'modprobe ipvlan') or use a kernel built with it, "
                                 "or pick another mode.")


async def prepare(fleet, name: str, settings: ModeSettings | None, implementation: str | None = None):
    """Everything before the first change: settings, facts, plan, endpoint (all validated)."""
    mode = get_mode(name, implementation)
    settings = settings_for(fleet, mode, settings)
    facts = await gather_facts(fleet, with_router=mode.needs_router)
    facts = await mode.extend_facts(fleet, facts, settings)
    steps = mode.plan(facts, settings)
    endpoint = mode.endpoint(facts, settings)
    # `node: kubernetes` (modes/node/): after the mode's own steps (undone first), on its endpoint
    steps += node.plan(facts, settings, endpoint, mode.ip_masq)
    endpoint = node.endpoint(endpoint, settings)
    return mode, settings, facts, steps, endpoint


def _same_plan(state: dict, steps: list[Step]) -> bool:
    return by_host(Step.from_dict(d) for d in state.get("steps", [])) == by_host(steps)


def state_docs(fleet, mode: NetworkMode, endpoint: Endpoint, steps: list[Step], settings: ModeSettings) -> dict[
    str, dict]:
    """One state document per target (every host, even without steps, so status finds the mode)."""
    groups = by_host(steps)
    common = {"mode": mode.name, "implementation": mode.implementation, "status": "applying",
              "endpoint": endpoint.to_dict(), "settings": asdict(settings), **setup_cost(steps, mode)}
    targets = [h.name for h in fleet] + [t for t in groups if t not in {h.name for h in fleet}]
    return {t: {**common, "target": t, "steps": [s.to_dict() for s in groups.get(t, [])],
                "started": 0} for t in targets}


async def begin(fleet, runners: Runners, docs: dict[str, dict]) -> None:
    """Before the first change: the driver's state, the sysctl originals, the hosts' copies."""
    inv = fleet.inventory
    for t, doc in docs.items():
        store.write_driver(inv, t, doc)
    try:
        for t, doc in docs.items():
            originals = sysctl_assignments(Step.from_dict(d) for d in doc["steps"])
            if originals and t != AWS:
                await store.record_originals(runners[t], originals)
        await store.write_host_copies(fleet, docs)
    except BaseException:
        store.remove_driver(inv)  # nothing was changed yet
        raise


async def forget(fleet, runners: Runners, step_dicts: list[dict]) -> None:
    """Remove the state and the sysctl originals (the undo just restored them)."""
    await store.remove_all(fleet, runners[LOCAL] if any(d["host"] == LOCAL for d in step_dicts) else None)


async def up(fleet, name: str, settings: ModeSettings | None = None, implementation: str | None = None) -> Endpoint:
    mode, settings, facts, steps, endpoint = await prepare(fleet, name, settings, implementation)
    existing = await current_state(fleet)
    if existing:
        same = existing.get("mode") == name and existing.get("implementation", "project") == mode.implementation
        if same and existing.get("status") == "up" and _same_plan(existing, steps):
            return Endpoint.from_dict(existing["endpoint"])  # already up, same plan
        raise PlanError(f"mode {existing.get('mode')} is {existing.get('status')} on the hosts. Run 'invoke mode.down' "
                        "(or 'invoke clean') first.")
    await probe_kernel(fleet, mode.link_kinds, mode.needs_nft)
    if settings.node == "kubernetes":
        await node_checks.require(fleet, node_checks.PROGRAMS)
    details = await mode.before_up(fleet, facts, settings)  # refuses before any change
    runners = Runners(fleet, settings)
    docs = state_docs(fleet, mode, endpoint, steps, settings)
    if details:
        for doc in docs.values():
            doc["details"] = details
    await begin(fleet, runners, docs)

    def journal(target: str, n: int) -> None:
        docs[target]["started"] = n
        # Not fsynced: the rename alone survives a killed process, and each fsync would count
        # in the mode's measured setup time.
        store.write_driver(fleet.inventory, target, docs[target], durable=False)

    seconds, todo, error = await run_plan(runners, steps, journal)
    if error is None:
        for t, doc in docs.items():
            doc.update(status="up", setup_seconds=round(seconds, 4), started=len(doc["steps"]))
            store.write_driver(fleet.inventory, t, doc)
        await store.write_host_copies(fleet, docs)
        return endpoint
    problems = await undo_steps(runners, todo, strict=False)
    if not problems:
        await forget(fleet, runners, [s.to_dict() for s in steps])
        raise mode.failure(error)
    # The rollback failed: keep what is needed to finish it (clean, or down).
    for t, doc in docs.items():
        doc["status"] = "rollback-failed"
        store.write_driver(fleet.inventory, t, doc)
    try:
        await store.write_host_copies(fleet, docs)
    except Exception:
        pass  # the driver's copy is the one that counts
    if not isinstance(error, Exception):
        raise error
    raise PlanError(f"mode up failed ({error}), and undoing it left errors:\n  " + "\n  ".join(problems)
                    + "\nThe mode's state is kept: run 'invoke clean' to finish.") from error


async def down(fleet, name: str | None = None, settings: ModeSettings | None = None) -> dict | None:
    """Undo the stored plan. Returns what was torn down (None when nothing was up)."""
    if name is not None:
        get_mode(name)  # unknown name: clear error
    state = await current_state(fleet)
    if state is None:
        return None
    if name is not None and state.get("mode") != name:
        raise PlanError(f"mode {state.get('mode')} is up, not {name}. Run 'invoke mode.down --mode "
                        f"{state.get('mode')}'.")
    steps = steps_to_undo(state)
    mode = state_mode(state)
    runners = Runners(fleet, settings_for(fleet, mode, settings) if settings else settings_from_state(state, fleet))
    start = time.monotonic()
    await undo_steps(runners, steps)  # raises on a real failure: the state is kept
    await forget(fleet, runners, state.get("steps", []))
    return {"mode": state.get("mode"), "teardown_seconds": round(time.monotonic() - start, 4),
            "undo_commands": sum(1 for s in steps if s.undo)}


async def verify(fleet, name: str, settings: ModeSettings | None = None) -> VerifyResult:
    get_mode(name)  # unknown name: clear error
    state = await current_state(fleet)
    if not state or state.get("mode") != name or state.get("status") != "up":
        raise PlanError(f"mode {name} is not up. Run 'invoke mode.up --mode {name}' first.")
    mode = state_mode(state)
    settings = settings_for(fleet, mode, settings) if settings else settings_from_state(state, fleet)
    return await verify_mode(mode, fleet, Endpoint.from_dict(state["endpoint"]), settings)


def state_mode(state: dict) -> NetworkMode:
    """The kind (and implementation) a stored state was applied with; a kind no longer
    registered gets the bare contract (its undo commands need no kind to run)."""
    try:
        return get_mode(state.get("mode"), state.get("implementation") or None)
    except PlanError:
        return NetworkMode()


def settings_from_state(state: dict, fleet) -> ModeSettings:
    """The settings a state was applied with; what only the driver may say (e.g. AWS targets)
    only from the driver's own copy, else from the inventory."""
    mode = state_mode(state)
    s = mode.settings_from_record(dict(state.get("settings") or {}), trusted=state.get("source") == "driver")
    return mode.settings_from_inventory(s, fleet.inventory.extra)


__all__ = ["up", "down", "verify", "apply_steps", "undo_steps", "setup_cost"]
