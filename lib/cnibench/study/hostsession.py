"""A command's time on the hosts, for the CLI (tasks.py): a connected fleet over an inventory,
optionally while holding the hosts' session lease (infra/lease.py). A lease taken over from a
dead session first sweeps what that session left (workload/leftovers.py)."""

from __future__ import annotations

import asyncio

from ..infra import config
from ..infra.hosts import Fleet
from ..infra.lease import session_lease
from ..workload.leftovers import sweep_dead_session


def run(coro):
    """Run a coroutine to its end (its errors reach the caller)."""
    return asyncio.run(coro)


async def _sweep_dead_session(inv) -> None:
    async with Fleet(inv) as fleet:
        await sweep_dead_session(fleet)


def leased(inventory, command: str, call, clean: bool = False):
    """call() while this session holds the hosts' lease: another session on them is refused
    with one message naming it; `clean` also takes over a stale lease."""
    inv = config.load_inventory(inventory)
    with session_lease(inv, command, clean=clean) as lease:
        if lease.notes and not clean:  # took over a dead session's lease: sweep what it left first
            run(_sweep_dead_session(inv))
        return call()


def with_fleet(inventory, fn, lease: str | None = None, clean: bool = False):
    """Run `async fn(fleet)` with a connected fleet over the inventory; with `lease` (the
    command's name) while holding the hosts' session lease."""
    async def main():
        async with Fleet(config.load_inventory(inventory)) as fleet:
            return await fn(fleet)

    if lease is None:
        return run(main())
    return leased(inventory, lease, lambda: run(main()), clean=clean)


def check_hosts(inventory, require=None) -> list:
    """`invoke hosts.check`: every host's precheck report (read-only)."""
    from .precheck import check_fleet

    async def main():
        fleet = Fleet(config.load_inventory(inventory))
        try:
            return await check_fleet(fleet, require)
        finally:
            await fleet.close()

    return run(main())


def fit_report(study, inventory=None, as_json: bool = False) -> tuple[str, bool]:
    """The study fitted to the inventory's hosts (read-only): its text (or JSON) and whether it fits."""
    import json

    from ..infra import limits
    from .precheck import read_study_fit
    from .spec import load_study

    st = load_study(study)
    inv = config.load_inventory(inventory or st.inventory)
    sf = with_fleet(inv.path, lambda fleet: read_study_fit(fleet, st, inv.testbed))
    return (json.dumps(sf.to_dict(), indent=2) if as_json else limits.format_fit(sf.fit, sf.hosts)), not sf.fit.problems
