"""Network modes: the study's competitors and modern alternatives, as plans over SSH.

    from cnibench.modes import MODES, get_mode, mode_up, mode_down, mode_verify, Endpoint
    endpoint = await mode_up(fleet, "flannel-vxlan")     # precheck, plan, apply with undo stack
    await mode_down(fleet, "flannel-vxlan")              # reverse of up; idempotent

A mode that is up is discoverable by a later process: mode_status(fleet) / current_endpoint(fleet)
read what was applied from the driver's state (data/state/modes/), or else from the hosts'
checked copies in /run/cnibench/modes/ (see state.py).

Stage 2. Here: the API, the contract (base.py), the registry, the CLI formatting and `clean`;
engine/ applies, verifies and keeps state; kinds/ holds one module per mode kind, and kinds
never import each other (what they share lives in the engine).

May import: catalog, parsing, errors, infra
"""

from __future__ import annotations

from ..catalog import MODES  # noqa: F401  (re-exported)
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
from .registry import get_mode  # noqa: F401  (re-exported)


async def mode_up(fleet, name: str, settings: ModeSettings | None = None) -> Endpoint:
    """Precheck, plan and apply mode `name` on the fleet (undoing everything on failure)."""
    from .engine.apply import up

    return await up(fleet, name, settings)


async def mode_down(fleet, name: str | None = None, settings: ModeSettings | None = None) -> None:
    """Undo mode `name` (None: whatever is up) from the stored state; idempotent."""
    from .engine.apply import down

    await down(fleet, name, settings)


async def mode_verify(fleet, name: str, settings: ModeSettings | None = None) -> VerifyResult:
    """Reachability (one HTTP request client container -> server endpoint) and data-path checks."""
    from .engine.apply import verify

    return await verify(fleet, name, settings)


async def mode_status(fleet) -> dict:
    """What is up on each host (host name -> state or None; see state.read_states)."""
    from .engine.state import read_states

    return await read_states(fleet)


async def current_endpoint(fleet) -> Endpoint | None:
    """The endpoint of the mode that is up, or None."""
    from .engine.state import current_state

    state = await current_state(fleet)
    return Endpoint.from_dict(state["endpoint"]) if state and state.get("status") == "up" else None
