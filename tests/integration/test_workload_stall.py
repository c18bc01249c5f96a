"""The stall test (runs on every change): no coordinated omission.

The nginx worker is SIGSTOPped for 200 ms in the middle of a constant-rate run. An open-loop
client at rate R sees R*0.2 requests due during the stall, half of them waiting more than
100 ms: the fraction of requests slower than 100 ms must be R*0.2*0.5/total within +-30 %.
The rate is low against the server's capacity so the backlog drains fast (a slow drain would
add to the tail: that is the server's, not a measurement error, but it blurs the check).
"""

import asyncio

import pytest

from cnibench.workload.bench import BenchSpec, run_bench
from cnibench.results import decode_histogram
from cnibench.workload.generators import available

from workload_helpers import host_endpoint

pytestmark = pytest.mark.root
RATE, STALL_S, WARMUP_S, DURATION_S = 2000, 0.2, 1.0, 4.0


def slow_fraction(h, us=100_000):
    n = h.get_total_count()
    return sum(it.count_at_value_iterated_to for it in h.get_recorded_iterator() if it.value_iterated_to > us) / n


async def stall_worker(ctx):
    await asyncio.sleep(WARMUP_S + 1.5)  # well inside the measurement window
    pid = str(ctx.nginx.worker_pids[0])
    await ctx.fleet.server.run(["sh", "-c", 'kill -STOP "$1"; sleep "$2"; kill -CONT "$1"', "cnib", pid, f"{STALL_S:g}"])


def run_stalled(with_fleet, testbed, generator, pipeline):
    ep = host_endpoint(testbed, port=8094)
    spec = BenchSpec(mode="host", size="small", rate=RATE, duration_s=DURATION_S, warmup_s=WARMUP_S,
                     connections=8, generator=generator, pipeline=pipeline, metrics=False)

    async def body(fleet):
        if not (await available(fleet.client))[generator]:
            return None
        return await run_bench(fleet, ep, spec, run_id=f"test/host/small/{RATE}/rep1", during=stall_worker)

    rec = with_fleet(body)
    if rec is None:
        pytest.skip(f"{generator} is not installed on the client host (apt/source install needed)")
    assert rec["status"] in ("ok", "invalid"), rec["reason"]
    h = decode_histogram(rec["latency"]["histogram"])
    expected = RATE * STALL_S * 0.5 / h.get_total_count()
    return rec, h, expected


@pytest.mark.parametrize("generator", ["h2load", "tcpkali"])
def test_stall_seen_as_by_an_open_loop_client(with_fleet, testbed, generator):
    rec, h, expected = run_stalled(with_fleet, testbed, generator, pipeline=0)
    assert slow_fraction(h) == pytest.approx(expected, rel=0.3)


def test_closed_loop_h2load_is_corrected_from_its_schedule(with_fleet, testbed):
    """One request in flight per connection hides the stall (coordinated omission); the
    schedule rebuilt from the log puts it back."""
    rec, h, expected = run_stalled(with_fleet, testbed, "h2load", pipeline=1)
    uncorrected = decode_histogram(rec["latency"]["histogram_uncorrected"])
    assert slow_fraction(uncorrected) < 0.3 * expected
    assert slow_fraction(h) == pytest.approx(expected, rel=0.3)
