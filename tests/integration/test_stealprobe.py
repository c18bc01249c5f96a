"""The server-core steal probe on the testbed (issue 25, item 2): pinned to nginx's core it
finds an episode we cause and names its cause right (a SIGSTOP is "stopped", a busy SCHED_FIFO
thread of higher priority on its core is "preempted", neither is steal), leaves no process
behind, and a pinned run's record carries both cores' masks. Hypervisor steal cannot be caused
from inside a guest: the steal classification itself is covered by the unit tests and measured
by benchmarks/stealprobe_bench.py."""

import asyncio

import pytest

from cnibench.workload import stealprobe as sp
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import run_bench

from workload_helpers import host_endpoint, processes

pytestmark = [pytest.mark.timeout(240)]
CPU = 1  # nginx's core on the testbed (BenchSpec.server_cpus)
# A busy loop that ends by itself (nothing else has to get the core to stop it): 150 ms.
SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.15:\n    pass\n"
BUSY = ["taskset", "-c", str(CPU), "chrt", "-f", "50", "/usr/bin/python3", "-c", SPIN]


def test_the_probe_tells_a_stop_and_a_preemption_from_steal_and_leaves_nothing(with_fleet):
    async def body(fleet):
        host = fleet.server
        probes = sp.Probes()
        pids = await probes.start(host, [CPU], interval_us=1000)
        assert pids, probes.notes
        await asyncio.sleep(0.3)
        await host.run(["kill", "-STOP", str(pids[0])])
        await asyncio.sleep(0.08)
        await host.run(["kill", "-CONT", str(pids[0])])
        await asyncio.sleep(0.2)
        await host.run(BUSY, check=False, timeout=10)
        await asyncio.sleep(0.2)
        out = await probes.stop()
        return out, probes.notes, await processes(host, "stealprobe-")

    out, notes, left = with_fleet(body)
    assert len(out) == 1 and out[0]["cpu"] == CPU and out[0]["sched"] == "fifo", notes
    eps = out[0]["episodes"]
    stopped = [e for e in eps if e[4] == sp.CAUSES.index("stopped")]
    preempted = [e for e in eps if e[4] == sp.CAUSES.index("preempted")]
    assert any(e[2] >= 60_000_000 and e[3] == 0 for e in stopped), eps
    assert any(e[2] >= 100_000_000 and e[3] < 0.3 * e[2] for e in preempted), eps  # the wait is in-guest, not steal
    assert left == []


def test_a_pinned_run_records_both_cores_masks_and_the_window_cpu(with_fleet, testbed):
    spec = BenchSpec(mode="host", size="small", rate=2000, duration_s=1.5, warmup_s=0.5, connections=4,
                     generator="openloop")
    ep = host_endpoint(testbed, port=8099)

    async def body(fleet):
        rec = await run_bench(fleet, ep, spec, run_id="test/host/small/2000/rep1")
        return rec, await processes(fleet.server, "stealprobe-")

    rec, left = with_fleet(body)
    assert rec["status"] != "failed", rec["reason"]
    probe = rec["hygiene"]["server_probe"]
    assert probe["cpus"] == [1] and probe["resolution_us"] == sp.INTERVAL_US and probe["probe_cpu_s"] > 0
    o = rec["latency"]["outside_steal"]
    assert o["cores"] == ["client", "server"] and set(o["episodes"]) == {"client", "server"}
    assert o["withheld"] is None and o["lead_ms"] == 1.0 and o["tail_rule"] == "max(2 ms, S)"
    assert rec["latency"]["outside_steal_wide"]["lead_ms"] == 2.0 and "outside_steal_placebo" in rec["latency"]
    w = rec["metrics"]["window_cpu"]
    assert w["client"]["cpus"] == [0] and w["server"]["cpus"] == [1] and w["client"]["user_s"] > 0
    assert rec["metrics"]["instructions"]["supported"] is not None
    assert left == []
