"""BIRD 2 under the project's control (infra/bird.py): two "hosts" (namespaces) peering over a
veth, each exporting its pod block; learned over BGP, withdrawn when a peer dies, nothing left."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time

import pytest

from cnibench.errors import HostError
from cnibench.infra import bird

from cni_helpers import NetnsHost, netns_add, netns_del, sh

A, B = "cnib-t26ba", "cnib-t26bb"
ADDR = {A: "198.18.99.1", B: "198.18.99.2"}
BLOCK = {A: "10.244.1.0/24", B: "10.244.2.0/24"}
pytestmark = pytest.mark.skipif(not shutil.which("bird", path="/usr/sbin:/usr/bin"), reason=f"needs BIRD 2: {bird.INSTALL}")


@pytest.fixture
def pair(needs_root):
    for ns in (A, B):
        netns_add(ns)
    sh("ip", "link", "add", "cnib-t26va", "netns", A, "type", "veth", "peer", "name", "cnib-t26vb", "netns", B)
    for ns, dev in ((A, "cnib-t26va"), (B, "cnib-t26vb")):
        sh("ip", "-n", ns, "addr", "add", f"{ADDR[ns]}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    base = tempfile.mkdtemp(prefix="cnib-t26-")
    try:
        yield base
    finally:
        for ns in (A, B):  # a failed test's daemons: by their pid files only
            sh("sh", "-c", f'kill -9 $(cat {base}/bird/{ns}/bird.pid) 2>/dev/null', check=False)
        netns_del(A, B)
        shutil.rmtree(base, ignore_errors=True)


def cfg(ns, peer_addr=None):
    other = B if ns == A else A
    return bird.BirdConfig(ADDR[ns], (BLOCK[ns],), (bird.Peer("other", peer_addr or ADDR[other]),))


async def _both_up(base):
    hosts = {ns: NetnsHost(ns, ns) for ns in (A, B)}
    p = {ns: await bird.start(hosts[ns], ns, cfg(ns), base) for ns in (A, B)}
    seen = {}
    for ns in (A, B):
        other = B if ns == A else A
        seen[ns] = await bird.wait_up(hosts[ns], ns, p[ns], cfg(ns).peers, [BLOCK[other]], timeout=20)
    return hosts, p, seen


async def _withdrawn_after(host, net, limit=10.0):
    t0 = time.monotonic()
    while net in await bird.kernel_routes(host):
        if time.monotonic() - t0 > limit:
            return None
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def test_routes_learned_then_withdrawn_when_a_peer_is_killed_and_nothing_left(pair):
    async def body():
        hosts, p, seen = await _both_up(pair)
        assert seen[A]["learned"] == [BLOCK[B]] and seen[B]["learned"] == [BLOCK[A]]
        assert "proto bird" in sh("ip", "-n", A, "route", "show", BLOCK[B])
        pid_b = await bird._pid(hosts[B], p[B])
        sh("ip", "netns", "exec", B, "kill", "-9", str(pid_b))
        gone = await _withdrawn_after(hosts[A], BLOCK[B])
        assert gone is not None and gone < 6, gone
        # the killed BIRD left its kernel route and files; stop removes the journalled route only
        assert BLOCK[A] in await bird.kernel_routes(hosts[B])
        for ns in (A, B):
            other = B if ns == A else A
            await bird.stop(hosts[ns], p[ns], journalled_routes=[BLOCK[other]])
            assert await bird.leftovers(hosts[ns], p[ns], [BLOCK[other]]) == []
            assert "proto bird" not in sh("ip", "-n", ns, "route")
        assert not await bird.running(hosts[A], await bird._pid(hosts[A], p[A]))
    asyncio.run(body())


@pytest.mark.long  # a SIGSTOPped BIRD (hold timer, ~4 s); the killed one is in test_calico_bgp.py
def test_a_silent_peer_is_dropped_by_the_hold_timer(pair):
    """SIGSTOP: no FIN, only the 3 s hold time tells the other side; withdrawn within 6 s."""
    async def body():
        hosts, p, _ = await _both_up(pair)
        pid_b = await bird._pid(hosts[B], p[B])
        sh("ip", "netns", "exec", B, "kill", "-STOP", str(pid_b))
        try:
            gone = await _withdrawn_after(hosts[A], BLOCK[B])
        finally:
            sh("ip", "netns", "exec", B, "kill", "-CONT", str(pid_b))
        assert gone is not None and 1.5 < gone < 6, gone  # the hold time, not an instant close
        for ns in (A, B):
            other = B if ns == A else A
            await bird.stop(hosts[ns], p[ns], journalled_routes=[BLOCK[other]])
            assert await bird.leftovers(hosts[ns], p[ns], [BLOCK[other]]) == []
    asyncio.run(body())


def test_a_bird_that_does_not_come_up_says_so_and_stop_leaves_nothing(pair):
    async def body():
        host = NetnsHost(A, A)
        p = await bird.start(host, A, cfg(A, peer_addr="198.18.99.9"), pair)  # nobody there
        with pytest.raises(HostError) as exc:
            await bird.wait_up(host, A, p, cfg(A).peers, [BLOCK[B]], timeout=3)
        assert str(exc.value).startswith(f"{A}: BIRD: BGP not up within 3 s (sessions: cnib_peer_other: start")
        await bird.stop(host, p)
        assert await bird.leftovers(host, p) == []
    asyncio.run(body())


def test_a_config_bird_refuses_is_one_message_in_birds_words_and_leaves_nothing(pair):
    async def body():
        host = NetnsHost(A, A)
        bad = bird.BirdConfig(ADDR[A], (BLOCK[A],), (bird.Peer("other", ADDR[B]),), as_number=0)
        with pytest.raises(HostError) as exc:
            await bird.start(host, A, bad, pair)
        assert str(exc.value).startswith(f"{A}: BIRD did not start: bird: ") and "Local AS number must be set" in str(exc.value)
        p = bird.paths(A, pair)
        assert await bird.leftovers(host, p) == [] and not (await host.run(["test", "-e", p["dir"]], check=False)).ok
    asyncio.run(body())

