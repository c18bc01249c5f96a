"""Text and JSON for the mode.* tasks (kept out of tasks.py, which only calls lib/)."""

from __future__ import annotations

import json

from ..infra.hosts import quote
from .base import Step
from .engine.apply import down as _down
from .engine.apply import prepare, setup_cost
from .engine.apply import up as _up
from .engine.apply import verify as _verify
from .engine.state import current_state, read_states, steps_to_undo
from .registry import MODES, get_mode


def mode_help() -> str:
    """The --mode help text: every registered mode, in order."""
    return f"network mode ({', '.join(MODES.names())})"


def settings_from_options(mode: str, **given):
    """The mode's settings from CLI options, each kept only where the mode has that setting."""
    kind = get_mode(mode)
    known = kind.settings_type.__dataclass_fields__
    return kind.settings({k: v for k, v in given.items() if k in known})


def format_plan(steps: list[Step], undo: bool = False) -> str:
    """The exact commands, grouped per host in the order they run there."""
    lines, groups = [], {}
    for s in (reversed(steps) if undo else steps):
        argv = s.undo if undo else s.argv
        if argv is None:
            continue
        text = quote(["ip", "netns", "exec", s.netns, *argv] if s.netns else argv)
        stdin = s.undo_input if undo else s.input
        groups.setdefault(s.host, []).append(text if stdin is None else f"{text} <<'EOF'\n{stdin}\nEOF")
    for host, cmds in groups.items():
        lines.append(f"# {host}")
        lines += cmds
    return "\n".join(lines)


async def up(fleet, mode: str, settings, dry_run: bool, as_json: bool, implementation: str | None = None) -> str:
    if dry_run:
        kind, settings, facts, steps, endpoint = await prepare(fleet, mode, settings, implementation)
        if as_json:
            plan = {"mode": mode, "implementation": kind.implementation, "endpoint": endpoint.to_dict(),
                    "steps": [s.to_dict() for s in steps], **setup_cost(steps, kind)}
            return json.dumps(plan, indent=1)
        notes = "\n".join(kind.explain(facts, settings))
        return "\n".join(x for x in (notes, format_plan(steps) or f"# {mode}: nothing to create") if x)
    endpoint = await _up(fleet, mode, settings, implementation)
    return json.dumps(endpoint.to_dict(), indent=1) if as_json else f"{mode} is up; endpoint: {endpoint}"


async def down(fleet, mode, dry_run: bool, as_json: bool) -> str:
    if mode is not None:
        get_mode(mode)
    if dry_run:
        state = await current_state(fleet)
        if not state:
            return "nothing is up"
        steps = steps_to_undo(state)
        return json.dumps([s.to_dict() for s in reversed(steps) if s.undo],
                          indent=1) if as_json else format_plan(steps, undo=True)
    done = await _down(fleet, mode)
    if as_json:
        return json.dumps(done)
    if done is None:
        return "nothing was up"
    return f"{done['mode']} is down ({done['undo_commands']} undo commands, {done['teardown_seconds']:.2f} s)"


async def verify(fleet, mode: str, as_json: bool):
    result = await _verify(fleet, mode)
    return (json.dumps(result.to_dict(), indent=1) if as_json else str(result)), result.ok


async def status(fleet, as_json: bool) -> str:
    states = await read_states(fleet)
    keys = ("mode", "status", "endpoint", "commands", "kernel_objects", "setup_seconds")
    summary = {h: (None if s is None else {k: s.get(k) for k in keys}) for h, s in states.items()}
    if as_json:
        return json.dumps(summary, indent=1)

    def line(s) -> str:
        if s is None:
            return "no mode"
        return (f"{s['mode']} ({s['status']}), endpoint {s['endpoint']}, "
                f"{s['commands']} commands, {s['kernel_objects']} kernel objects")

    return "\n".join(f"{h}: {line(s)}" for h, s in summary.items())
