"""cnib-openloop's histogram file (version 6): layouts against hdrh's own, the file's decoding,
the record from histograms against the record from the log for the same requests, and the
steal mask applied to the 1 ms slot histograms. Files are built here in the generator's format,
with hdrh computing each value's counts index (the generator's C does the same arithmetic; the
integration test compares the two on one real run)."""

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from cnibench.results import HIST_HIGHEST_US
from cnibench.workload import latency as lat
from cnibench.workload.generators import openloop_hist as oh
from cnibench.workload.generators.base import LoadSpec
from cnibench.workload.generators.openloop import RECORD, result_from_histograms, result_from_log

RNG = np.random.default_rng(27)
TIMEOUT_S = 0.01  # a few of the heavy tail's answers come after it: late
LAYOUTS = [(oh.H3, HIST_HIGHEST_US, 3), (oh.H2, HIST_HIGHEST_US, 2), (oh.H1, HIST_HIGHEST_US, 1), (oh.H3, oh.LAG_HIGHEST_NS, 3)]


@pytest.mark.parametrize("half,highest,digits", LAYOUTS)
def test_layouts_are_hdrh_counts_arrays(half, highest, digits):
    h = HdrHistogram(1, highest, digits)
    assert oh.hist_len(half, highest) == h.counts_len
    values = np.unique(np.concatenate([np.arange(1, 5000), RNG.integers(1, highest, 5000)]))
    idx = np.array([h._counts_index_for(int(v)) for v in values])
    assert (oh.index_value(idx, half) == [h.get_lowest_equivalent_value(int(v)) for v in values]).all()
    assert (oh.index_highest(idx, half) == [h.get_highest_equivalent_value(int(v)) for v in values]).all()


def index_of(values, digits=3, highest=HIST_HIGHEST_US):
    h = HdrHistogram(1, highest, digits)
    return np.array([h._counts_index_for(int(min(max(v, 0), highest))) for v in values], dtype=np.int64)


def sparse(idx, n=None):
    counts = np.bincount(idx, minlength=n or 0)
    nz = np.nonzero(counts)[0]
    return nz, counts[nz]


def log_and_file(n=20_000, rate=5000.0, warmup_s=0.5, duration_s=4.0, timeout_s=TIMEOUT_S):
    """A window's requests (Poisson intended times, heavy-tailed latency, some errors) as the
    generator's log, and the histogram file the generator would write for them."""
    r = np.zeros(n, dtype=RECORD)
    start = int(warmup_s * 1e9)
    r["intended"] = np.sort(RNG.integers(start, start + int(duration_s * 1e9), n))
    r["sent"] = r["intended"] + RNG.integers(1_000, 3_000_000, n)
    r["done"] = r["sent"] + (RNG.pareto(1.5, n) * 80_000 + 20_000).astype(np.int64)
    r["status"] = np.where(RNG.random(n) < 0.01, 503, 200)
    good = (r["status"] == 200) & (r["done"] - r["intended"] <= timeout_s * 1e9)
    lat_us = np.maximum(1, np.ceil((r["done"] - r["intended"]) / 1e3).astype(np.int64))
    svc_us = np.maximum(1, np.ceil((r["done"] - r["sent"]) / 1e3).astype(np.int64))
    sec, nms = (r["done"] - start) // 1_000_000_000, int(duration_s * 1000) + 1
    n2, n1 = oh.hist_len(oh.H2, HIST_HIGHEST_US), oh.hist_len(oh.H1, HIST_HIGHEST_US)
    in_sec = good & (sec < duration_s)
    sent_ms = (r["sent"] - start) // 1_000_000
    sections = {1: sparse(index_of(lat_us[good])), 2: sparse(index_of(svc_us[good])),
                3: sparse(index_of(r["sent"] - r["intended"], highest=oh.LAG_HIGHEST_NS)),
                4: sparse(sec[in_sec] * n2 + index_of(lat_us[in_sec], 2)), 5: sparse(sec[in_sec]),
                6: sparse(sec[~good & (sec < duration_s)]), 7: sparse(sent_ms[sent_ms < nms - 1]),
                8: sparse((r["intended"] - start) // 1_000_000),
                9: sparse((r["intended"][good] - start) // 1_000_000 * n1 + index_of(lat_us[good], 1))}
    late = int(((r["status"] == 200) & ~good).sum())
    words = [oh.MAGIC, 1, oh.H3, oh.H2, oh.H1, int(duration_s) + 1, nms, late]
    for sid, (idx, counts) in sections.items():
        words += [sid, len(idx), *np.column_stack([idx, counts]).ravel().tolist()]
    summary = {"generator": "cnib-openloop", "version": "6", "window_requests": n, "ok": int((r["status"] == 200).sum()),
               "http_errors": int((r["status"] != 200).sum()), "conn_errors": 0, "not_sent": 0, "unfinished": 0,
               "histograms": True, "log_every": 1, "stalls": [], "intervals": []}
    return r, np.array(words, dtype="<i8").tobytes(), summary


def spec(**kw):
    base = dict(address="198.18.0.12", port=8080, path="/small", rate=5000.0, connections=10, threads=1, duration_s=4.0,
                warmup_s=0.5, pipeline=32, timeout_s=TIMEOUT_S, log_path="l", hist_path="h")
    return LoadSpec(**{**base, **kw})


def one_bucket(a: int, b: int, digits: int) -> bool:
    """a and b in the same or a neighbouring bucket of a layout with `digits` digits."""
    h = HdrHistogram(1, HIST_HIGHEST_US, digits)
    return abs(a - b) <= h.get_highest_equivalent_value(max(a, b)) - h.get_lowest_equivalent_value(max(a, b)) + 1


def test_the_record_from_histograms_is_the_record_from_the_log():
    rows, data, summary = log_and_file()
    a, b = result_from_log(spec(), rows, summary), result_from_histograms(spec(), oh.parse_histograms(data), summary)
    for f in ("requests", "ok_count", "errors", "timeouts", "unfinished"):
        assert getattr(a, f) == getattr(b, f), f
    assert a.errors > 0 and a.timeouts > 0  # the file carries errors and late answers
    for p in (50, 90, 99, 99.9, 99.99, 100):  # the same buckets: the same values, not just close ones
        assert a.histogram.get_value_at_percentile(p) == b.histogram.get_value_at_percentile(p)
        assert a.histogram_uncorrected.get_value_at_percentile(p) == b.histogram_uncorrected.get_value_at_percentile(p)
    for p, v in a.send_lag["percentiles"].items():
        assert abs(v - b.send_lag["percentiles"][p]) <= max(v, 1) / 1024 + 0.001, p
    assert a.pacing["dispersion_per_ms"] == b.pacing["dispersion_per_ms"]
    assert a.pacing["max_line_ratio"] == b.pacing["max_line_ratio"]
    for x, y in zip(a.timeline, b.timeline, strict=True):
        assert (x["rate"], x["errors"]) == (y["rate"], y["errors"])
        assert one_bucket(x["p50_us"], y["p50_us"], 2) and one_bucket(x["p99_us"], y["p99_us"], 2)


def test_a_file_that_is_not_the_generators_is_refused():
    _, data, _ = log_and_file(n=100)
    with pytest.raises(ValueError, match="format 1"):
        oh.parse_histograms(b"\0" * 64)
    with pytest.raises(ValueError, match="torn"):
        oh.parse_histograms(data[:-16])


def test_the_steal_mask_on_slots_is_the_mask_on_the_log():
    """The same mask (whole 1 ms slots of intended time) applied after the run to the slot
    histograms and to the log gives the same conditional tail within one 1-digit bucket."""
    rows, data, summary = log_and_file(n=40_000)
    h = oh.parse_histograms(data)
    start = int(0.5e9)
    episodes = [(start + 200_000_000 + k * 97_000_000, start + 201_500_000 + k * 97_000_000, 300_000) for k in range(30)]
    mask = oh.slot_mask(episodes, start, h["ms"], lat.MASK_LEAD_NS, lat.MASK_TAIL_MIN_NS)
    assert 0 < mask.sum() < len(mask) / 2
    good = (rows["status"] == 200) & (rows["done"] - rows["intended"] <= TIMEOUT_S * 1e9)
    by_slot = mask[(rows["intended"] - start) // 1_000_000]
    assert by_slot[good].any() and by_slot[lat.steal_mask(rows["intended"], episodes)].all()  # rounded out, never in
    lat_us = np.ceil((rows["done"] - rows["intended"]) / 1e3).astype(np.int64)
    from_log = lat.histogram_of(lat_us[good & ~by_slot])
    from_slots = oh.to_hdrh(*oh.masked_counts(h["slots"], mask), half=oh.H1)
    assert from_log.get_total_count() == from_slots.get_total_count()
    for p in (50, 90, 99, 99.9, 100):
        assert one_bucket(from_log.get_value_at_percentile(p), from_slots.get_value_at_percentile(p), 1), p


def test_percentile_is_hdrhs():
    values = RNG.integers(1, 10**6, 3000)
    h = lat.histogram_of(values)
    idx, counts = sparse(index_of(values))
    for p in (0.1, 50, 99, 99.9, 100):
        assert oh.percentile(idx, counts, oh.H3, p) == h.get_value_at_percentile(p)


def test_the_switch_selects_the_files_and_the_options():
    from cnibench.workload.generators.openloop import GENERATOR

    off = spec(hist_path="", log_every=0)
    assert "--histograms" not in GENERATOR.command(off) and "--log" in GENERATOR.command(off)
    assert set(GENERATOR.files(off)) == {"log", "cpu"}
    none = spec(log_every=0)
    argv = GENERATOR.command(none)
    assert argv[argv.index("--histograms") + 1] == "h" and "--log" not in argv and set(GENERATOR.files(none)) == {"histograms", "cpu"}
    sampled = GENERATOR.command(spec(log_every=10))
    assert sampled[sampled.index("--log-every") + 1] == "10" and "--log" in sampled


def test_a_run_without_its_histogram_file_is_a_broken_run():
    from cnibench.workload.generators.openloop import GENERATOR

    _, data, summary = log_and_file(n=100)
    line = __import__("json").dumps(summary)
    assert GENERATOR.parse(spec(log_every=0), line, "", 0, {"histograms": data}).ok
    torn = GENERATOR.parse(spec(log_every=0), line, "", 0, {"histograms": data[:-8]})
    assert not torn.ok and "torn" in torn.reason
    old = GENERATOR.parse(spec(log_every=0), __import__("json").dumps({**summary, "histograms": False}), "", 0, {})
    assert not old.ok and "wrote no histograms" in old.reason
