"""cnib-openloop 6 on the testbed (host mode): one run, both paths. The generator writes its
histograms (--histograms) and the full per-request log (--log, N = 1) of the same requests;
the record from the histograms must equal the record from the log: every reported percentile
within one histogram bucket, the counts and pacing figures exactly, and the conditional latency
histogram from the 1 ms slot histograms equal to the one from the log for the same masks (the
generator's own steal episodes, and placebo masks at random places) within one bucket of the
slots' resolution. Deterministic per run (both paths see the same requests), so no quiet check.
"""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from cnibench.results import HIST_HIGHEST_US
from cnibench.workload import latency as lat
from cnibench.workload import nginx as nginx_mod
from cnibench.workload.generators import openloop_hist as oh
from cnibench.workload.generators.base import LoadSpec
from cnibench.workload.generators.openloop import parse_log, parse_summary, result_from_histograms, result_from_log
from cnibench.workload.loadgen import ensure_built

from workload_helpers import host_endpoint

pytestmark = [pytest.mark.timeout(300)]
PORT = 8097
DURATION, WARMUP, TIMEOUT = 3.0, 0.5, 10.0
PERCENTILES = (50, 90, 99, 99.9, 99.99, 100)


def both_paths(with_fleet, testbed, rate):
    """(stdout, log bytes, histogram bytes, LoadSpec) of one run writing both."""
    ep = host_endpoint(testbed, port=PORT)
    conns = max(10, rate // 500)
    log, hist = "/run/cnibench/test-hist.log", "/run/cnibench/test-hist.bin"
    spec = LoadSpec(address=ep.connect_address, port=PORT, path="/small", rate=float(rate), connections=conns, threads=1,
                    duration_s=DURATION, warmup_s=WARMUP, pipeline=max(32, rate // conns), timeout_s=TIMEOUT,
                    log_path=log, hist_path=hist, cpus=(0,))

    async def body(fleet):
        client, server = fleet.client, fleet.server
        built = await ensure_built(client, "openloop")
        ng = await nginx_mod.start(server, None, nginx_mod.NginxSpec(bind=ep.server_bind, port=PORT, max_connections=4096))
        try:
            r = await client.run([built.path, "--host", ep.connect_address, "--port", str(PORT), "--path", "/small",
                                  "--rate", str(rate), "--connections", str(conns), "--pipeline", str(spec.pipeline),
                                  "--duration", f"{DURATION:g}", "--warmup", f"{WARMUP:g}", "--timeout", f"{TIMEOUT:g}",
                                  "--cpus", "0", "--log", log, "--histograms", hist], timeout=60)
            return r.stdout, await client.read_file(log), await client.read_file(hist), spec
        finally:
            await ng.stop()
            await client.run(["rm", "-f", log, hist], check=False)

    return with_fleet(body)


def within_one_bucket(a, b, digits: int) -> bool:
    """a and b in the same or neighbouring buckets of a `digits`-digit layout."""
    if a is None or b is None:
        return a is b
    h = HdrHistogram(1, HIST_HIGHEST_US, digits)
    top = max(a, b)
    return abs(a - b) <= h.get_highest_equivalent_value(top) - h.get_lowest_equivalent_value(top) + 1


def placebo_episodes(rng, start: int, n: int) -> list[tuple[int, int, int]]:
    """n placebo 'episodes' of 0.1-2 ms at random places of the window."""
    at = np.sort(rng.integers(start, start + int(DURATION * 1e9) - 5_000_000, n))
    return [(int(t), int(t + rng.integers(100_000, 2_000_000)), int(rng.integers(20_000, 500_000))) for t in at]


@pytest.mark.parametrize("rate", [5000, 25000])
def test_histograms_equal_the_log_on_one_run(with_fleet, testbed, rate):
    stdout, logdata, histdata, spec = both_paths(with_fleet, testbed, rate)
    summary = parse_summary(stdout)
    assert summary and int(summary["version"]) >= 6 and summary["histograms"], stdout[-500:]
    rows, h = parse_log(logdata), oh.parse_histograms(histdata)
    assert len(rows) == summary["window_requests"] > 0.9 * rate * DURATION
    a, b = result_from_log(spec, rows, summary), result_from_histograms(spec, h, summary)
    print(f"rate {rate}: ok {a.ok_count}, p99 {a.histogram.get_value_at_percentile(99)} us, send lag p99 "
          f"{a.send_lag['percentiles']['99']} / {b.send_lag['percentiles']['99']} us, peak RSS {summary['peak_rss_kb']} kB")
    for f in ("requests", "ok_count", "errors", "timeouts", "unfinished"):
        assert getattr(a, f) == getattr(b, f), f
    for p in PERCENTILES:
        for x, y in ((a.histogram, b.histogram), (a.histogram_uncorrected, b.histogram_uncorrected)):
            assert within_one_bucket(x.get_value_at_percentile(p), y.get_value_at_percentile(p), 3), p
    for p, v in a.send_lag["percentiles"].items():  # exact from the log vs the ns histogram's bucket
        assert abs(v - b.send_lag["percentiles"][p]) <= v / 1024 + 0.002, (p, v, b.send_lag["percentiles"][p])
    assert {k: a.pacing[k] for k in ("dispersion_per_ms", "max_line_ratio")} == \
        {k: b.pacing[k] for k in ("dispersion_per_ms", "max_line_ratio")}
    for k in ("dispersion_per_ms", "max_line_ratio", "excluded_ms"):
        assert a.pacing["outside_stalls"][k] == b.pacing["outside_stalls"][k], k
    for x, y in zip(a.timeline, b.timeline, strict=True):
        assert (x["rate"], x["errors"]) == (y["rate"], y["errors"]), x["t"]
        assert within_one_bucket(x["p50_us"], y["p50_us"], 2) and within_one_bucket(x["p99_us"], y["p99_us"], 2), (x, y)
    check_slot_masks(rows, h, summary, spec)


def check_slot_masks(rows, h, summary, spec):
    """The conditional histogram for a mask of whole 1 ms slots, from the slots and from the log."""
    start = int(spec.warmup_s * 1e9)
    rng = np.random.default_rng(len(rows))
    real = lat.steal_episodes(summary.get("stalls"), summary["intervals"], summary.get("short_ns", 20000))
    good = (rows["status"] >= 200) & (rows["status"] < 300) & (rows["done"] - rows["intended"] <= spec.timeout_s * 1e9)
    lat_us = np.ceil((rows["done"] - rows["intended"]) / 1e3).astype(np.int64)
    slot = (rows["intended"] - start) // 1_000_000
    for episodes in (real, placebo_episodes(rng, start, 40), placebo_episodes(rng, start, 200)):
        mask = oh.slot_mask(episodes, start, h["ms"], lat.MASK_LEAD_NS, lat.MASK_TAIL_MIN_NS)
        from_log = lat.histogram_of(lat_us[good & ~mask[slot]])
        from_slots = oh.to_hdrh(*oh.masked_counts(h["slots"], mask), half=oh.H1)
        assert from_log.get_total_count() == from_slots.get_total_count()
        for p in PERCENTILES:
            x, y = from_log.get_value_at_percentile(p), from_slots.get_value_at_percentile(p)
            assert within_one_bucket(x, y, 1), (len(episodes), p, x, y)
