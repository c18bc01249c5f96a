"""Network modes: the study's competitors and modern alternatives, as plans over SSH.

    from cnibench.modes import MODES, get_mode, mode_up, mode_down, mode_verify, Endpoint
    endpoint = await mode_up(fleet, name)      # precheck, plan, apply with undo stack
    await mode_down(fleet, name)               # reverse of up; idempotent

A mode that is up is discoverable by a later process: mode_status(fleet) / current_endpoint(fleet)
read what was applied from the driver's state (data/state/modes/), or else from the hosts'
checked copies in /run/cnibench/modes/ (see state.py).

Stage 2. Here: the API, the contract (base.py: NetworkMode and its settings), the registry
(registry.py: MODES, the only place outside kinds/ that names a mode), the CLI formatting and
`clean`; engine/ applies, verifies and keeps state; kinds/ holds one module per mode kind, and
kinds never import each other (what they share lives in the engine).

Adding a mode: a module in kinds/ with a NetworkMode subclass (its name, plan, endpoint, and
what it owns: settings_type, link_kinds, owned_links, undo_shapes, leftovers, needs_router),
registered in registry.py; nothing else changes. Another implementation of an existing mode:
the same `name` with its own `implementation`, chosen by `mode_up(..., implementation=...)`.

May import: catalog, parsing, errors, infra
"""

from __future__ import annotations

from .base import (  # noqa: F401  (re-exported contract)
    Check,
    Endpoint,
    HostFact,
    HostFacts,
    ModeSettings,
    NetworkMode,
    Step,
    VerifyResult,
)
from .engine.apply import down, up, verify
from .engine.state import current_state, read_states
from .registry import MODES, get_mode, mode_names  # noqa: F401  (re-exported)

REFERENCE = MODES.reference()  # the mode every other is compared with


def mode_settings(name: str, raw=None, implementation: str | None = None) -> ModeSettings:
    """Mode `name`'s settings from a mapping (a study's mode_settings); SettingError names a
    wrong or unknown key."""
    return get_mode(name, implementation).settings(raw)


def setting_keys() -> tuple[str, ...]:
    """Every setting some mode has (a study may set them per mode), in first-seen order."""
    keys: dict[str, None] = {}
    for m in MODES.all():
        keys.update(dict.fromkeys(f for f in m.settings_type.__dataclass_fields__ if f != "aws"))
    return tuple(keys)


async def mode_up(fleet, name: str, settings: ModeSettings | None = None,
                  implementation: str | None = None) -> Endpoint:
    """Precheck, plan and apply mode `name` on the fleet (undoing everything on failure)."""
    return await up(fleet, name, settings, implementation)


async def mode_down(fleet, name: str | None = None, settings: ModeSettings | None = None) -> None:
    """Undo mode `name` (None: whatever is up) from the stored state; idempotent."""
    await down(fleet, name, settings)


async def mode_verify(fleet, name: str, settings: ModeSettings | None = None) -> VerifyResult:
    """Reachability (one HTTP request client container -> server endpoint) and data-path checks."""
    return await verify(fleet, name, settings)


async def mode_status(fleet) -> dict:
    """What is up on each host (host name -> state or None; see state.read_states)."""
    return await read_states(fleet)


async def current_endpoint(fleet) -> Endpoint | None:
    """The endpoint of the mode that is up, or None."""
    state = await current_state(fleet)
    return Endpoint.from_dict(state["endpoint"]) if state and state.get("status") == "up" else None
