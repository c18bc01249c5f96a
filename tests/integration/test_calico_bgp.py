"""calico-routed with `routing: bgp` on the testbed: the peers' pod blocks are learned over BGP
(proto bird, sessions Established) before verify passes; killing one host's BIRD withdraws its
block on the other within 6 s; down leaves no BIRD process, socket, file or route."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from cnibench.infra import bird
from cnibench.modes import get_mode, mode_down, mode_up, mode_verify
from cnibench.modes.addressing import pod_subnets
from cnibench.modes.engine.facts import gather_facts

from test_modes import snapshot, state_diff

MODE = "calico-routed"
pytestmark = pytest.mark.skipif(not shutil.which("bird", path="/usr/sbin:/usr/bin"),
                                reason=f"needs BIRD 2: {bird.INSTALL}")


async def _pid(host) -> int | None:
    r = await host.run(["cat", "--", bird.paths(host.name)["pid"]], check=False)
    return int(r.stdout) if r.exit_status == 0 and r.stdout.strip().isdigit() else None


async def _withdrawn_within(host, net: str, limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if net not in await bird.kernel_routes(host):
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None


def test_bgp_routes_learned_withdrawn_and_gone(with_fleet):
    settings = get_mode(MODE).settings({"routing": "bgp"})

    async def body(fleet):
        before = await snapshot(fleet)
        facts = await gather_facts(fleet)
        blocks = {n: str(b) for n, b in pod_subnets(facts, settings).items()}
        pids = {}
        await mode_up(fleet, MODE, settings)
        try:
            for h in fleet:  # learned over BGP by the time up returns, before verify
                others = [blocks[p.name] for p in facts.peers(h.name)]
                assert set(others) <= set(await bird.kernel_routes(h)), h.name
                pids[h.name] = await _pid(h)
            result = await mode_verify(fleet, MODE, settings)
            assert result.ok, str(result)
            assert any("Established" in c.name and c.ok for c in result.checks)
            # kill -9 the client's BIRD: its block leaves the server's kernel within 6 s
            await fleet.client.run(["kill", "-KILL", str(pids[fleet.client.name])])
            took = await _withdrawn_within(fleet.server, blocks[fleet.client.name], 6.0)
            assert took is not None, "the killed peer's block was still routed on the server after 6 s"
        finally:
            await mode_down(fleet, MODE)
        for h in fleet:
            p = bird.paths(h.name)
            assert not await bird.running(h, pids.get(h.name)), f"{h.name}: BIRD still running"
            assert await bird.leftovers(h, p, list(blocks.values())) == [], h.name
            assert (await h.run(["test", "-e", p["dir"]], check=False)).exit_status != 0
            assert await bird.kernel_routes(h) == [], h.name
        return state_diff(before, await snapshot(fleet))

    d = with_fleet(body)
    assert d == {}, "\n".join(f"{h}:\n" + "\n".join(v.values()) for h, v in d.items())


@pytest.mark.parametrize("journal", [pytest.param(True, marks=pytest.mark.long), False])  # with: down does it too
def test_clean_stops_bird_with_or_without_the_journal(with_fleet, journal):
    """After up, `clean` (the journal's undo; or, the journal lost, the kind's leftovers by BIRD's
    run directory) leaves no BIRD; without the journal its routes go with it (no persist)."""
    from cnibench.modes.clean import clean
    from cnibench.modes.engine import state as store

    settings = get_mode(MODE).settings({"routing": "bgp"})

    async def body(fleet):
        before = await snapshot(fleet)
        await mode_up(fleet, MODE, settings)
        pids = {h.name: await _pid(h) for h in fleet}
        if not journal:  # the state lost, the sysctl originals kept (clean restores them)
            store.remove_driver(fleet.inventory)
            for h in fleet:
                await h.run(["rm", "-f", store.host_state_path(h.name)])
        done = await clean(fleet)
        for h in fleet:
            assert not await bird.running(h, pids[h.name]), f"{h.name}: BIRD still running: {done}"
            assert (await h.run(["test", "-e", bird.paths(h.name)["dir"]], check=False)).exit_status != 0
            assert await bird.kernel_routes(h) == [], h.name
        return state_diff(before, await snapshot(fleet))

    d = with_fleet(body)
    assert d == {}, "\n".join(f"{h}:\n" + "\n".join(v.values()) for h, v in d.items())
