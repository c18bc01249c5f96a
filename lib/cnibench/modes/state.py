"""What a mode applied, stored as JSON on each host under /run/cnibench/modes/<host>.json so a
later process (mode.down, mode.status, the workload) can find it. Hosts may share a file
system (the testbed), hence one file per host name."""

from __future__ import annotations

import json

from ..config import RUN_DIR
from ..errors import HostError

STATE_DIR = RUN_DIR / "modes"


def state_path(host_name: str) -> str:
    return str(STATE_DIR / f"{host_name}.json")


async def write_states(fleet, state: dict) -> None:
    text = json.dumps(state, indent=1, sort_keys=True)
    await fleet.gather("write mode state", lambda h: h.write_file(state_path(h.name), text, 0o644))


async def read_state(host) -> dict | None:
    r = await host.run(["cat", state_path(host.name)], check=False)
    if r.exit_status != 0:
        return None
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        raise HostError(host.name, f"{state_path(host.name)} is not valid JSON. Run 'invoke clean' to remove every leftover of any mode.") from None


async def read_states(fleet) -> dict[str, dict | None]:
    return await fleet.gather("read mode state", read_state)


async def current_state(fleet) -> dict | None:
    """The stored state (all hosts hold the same; the first one found wins)."""
    states = await read_states(fleet)
    return next((s for s in states.values() if s), None)


async def remove_states(fleet) -> None:
    await fleet.gather("remove mode state", lambda h: h.run(["rm", "-f", state_path(h.name)]))
