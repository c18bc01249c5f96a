"""What a dead session left on the hosts, swept by the next command that takes its lease.

A session that was SIGKILLed cannot clean up: its daemonized nginx keeps the port and its mode
stays up (its journal says which, modes/engine/state.py). Its lease stays too, naming a process
that is gone, so the next command takes the lease over (lease.py: certain only for a holder on
this driver whose process is gone) and then calls `sweep_dead_session`. A leftover whose lease
belongs to a live session, or to another driver whose heartbeat is younger than 60 s, is never
touched: the lease is not taken then, and nothing runs.
"""

from __future__ import annotations


async def sweep_dead_session(fleet, out=print) -> list[str]:
    """Kill the dead session's nginx and remove its scratch files, then undo its mode from the
    journal; returns what was done. Call only while holding a lease taken over from a dead
    holder (a live session's mode is never ours to undo)."""
    from ..modes import mode_down
    from ..modes.clean import sweep_workload

    from .ports import restore_all

    done = sum((await fleet.gather("sweep", sweep_workload)).values(), [])
    done += await restore_all(fleet.client)  # before mode_down: its namespace is still there
    for line in done:
        out(f"cleaned a leftover of a dead session: {line}")
    await mode_down(fleet)
    return done
