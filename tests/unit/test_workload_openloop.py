"""cnib-openloop adapter: command, summary and log parsing, latency from the intended time,
pacing figures. Pure: logs are built here with the generator's record layout."""

import json

import numpy as np
import pytest

from cnibench.results import decode_histogram, encode_histogram
from cnibench.workload import latency as lat
from cnibench.workload.generators.base import LoadSpec
from cnibench.workload.generators.openloop import (
    GENERATOR, RECORD, ST_CONNERR, ST_NONE, ST_NOTSENT, default_pipeline, parse_log, parse_summary,
    result_from_log,
)
from cnibench.infra.cbuild import build_script
from cnibench.workload.loadgen import SOURCES, binary_path, build_argv, source_hash

RATE = 1000.0


def spec(**kw):
    base = dict(address="198.18.0.12", port=8080, path="/small", rate=RATE, connections=10, threads=1, duration_s=2.0,
                warmup_s=1.0, pipeline=32, timeout_s=1.0, log_path="/run/cnibench/workload/x/requests.log", cpus=(0,))
    base.update(kw)
    return LoadSpec(**base)


def log_rows(n=2000, rate=RATE, warmup_s=1.0, lag_ns=500, latency_ns=50_000):
    """A window's requests, on schedule: intended k/R after the warm-up."""
    r = np.zeros(n, dtype=RECORD)
    r["intended"] = (warmup_s * 1e9 + np.arange(n) * 1e9 / rate).astype(np.int64)
    r["sent"] = r["intended"] + lag_ns
    r["done"] = r["intended"] + latency_ns
    r["status"] = 200
    r["conn"] = np.arange(n) % 10
    return r


def summary(n=2000, **kw):
    return {"generator": "cnib-openloop", "version": "1", "window_requests": n, "arrival": "uniform", "pipeline": 32,
            "reconnects": 0, "t0_realtime_ns": 1, **kw}


def test_command_is_the_built_binary_with_the_whole_schedule():
    argv = GENERATOR.command(spec(arrival="poisson", seed=7, cpus=(0, 1), threads=2))
    assert argv[0] == binary_path("openloop") and source_hash("openloop")[:12] in argv[0]
    opts = dict(zip(argv[1::2], argv[2::2]))
    assert opts["--rate"] == "1000.000000" and opts["--connections"] == "10" and opts["--threads"] == "2"
    assert opts["--arrival"] == "poisson" and opts["--seed"] == "7" and opts["--cpus"] == "0,1"
    assert opts["--duration"] == "2" and opts["--warmup"] == "1" and opts["--log"].endswith("requests.log")


def test_closed_loop_is_refused():
    with pytest.raises(ValueError, match="open-loop only"):
        GENERATOR.command(spec(rate=None))


def test_defaults_a_second_in_flight():
    assert default_pipeline(100.0) == 100 and default_pipeline(5.0) == 32 and default_pipeline(None) == 1


def test_build_command_puts_libraries_after_the_source():
    argv = build_argv("openloop", "/x/s.c", "/x/out")
    assert argv[0] == "cc" and argv.index("/x/s.c") < argv.index("-lm") and "-pthread" in argv
    assert "-lm" in build_script(*SOURCES["openloop"]).split("\"$s\"")[1]  # what the host runs


def test_summary_is_the_json_line():
    line = json.dumps(summary())
    assert parse_summary("noise\n" + line + "\n")["window_requests"] == 2000
    assert parse_summary("no json here") is None


def test_log_parser_drops_a_torn_record():
    rows = log_rows(3)
    assert len(parse_log(rows.tobytes() + b"\x01\x02")) == 3
    assert RECORD.itemsize == 32


def test_latency_counts_from_the_intended_time():
    rows = log_rows(lag_ns=2_000_000, latency_ns=3_000_000)  # sent 2 ms late, done 3 ms after due
    r = result_from_log(spec(), rows, summary())
    assert r.ok and r.ok_count == 2000 and r.errors == 0 and r.timeouts == 0
    assert r.histogram.get_value_at_percentile(50) == pytest.approx(3000, rel=0.01)
    assert r.histogram_uncorrected.get_value_at_percentile(50) == pytest.approx(1000, rel=0.01)  # from the send
    assert r.send_lag["percentiles"]["99"] == pytest.approx(2000.0) and r.send_lag["over_1ms"] == 2000


def test_errors_timeouts_and_unanswered_are_counted():
    rows = log_rows()
    rows["status"][10] = ST_CONNERR
    rows["status"][11] = 503
    rows["status"][12] = ST_NOTSENT
    rows["sent"][12] = -1
    rows["done"][12] = -1
    rows["done"][13] = rows["intended"][13] + 1_500_000_000  # later than the 1 s timeout
    rows["status"][14] = ST_NONE
    rows["done"][14] = -1
    r = result_from_log(spec(), rows, summary())
    assert (r.errors, r.timeouts, r.unfinished, r.ok_count) == (3, 2, 1, 1995)
    assert r.send_lag["n"] == 1999  # the request never sent has no lag


def test_parse_checks_exit_status_and_log_length():
    bad = GENERATOR.parse(spec(), "", "cnib-openloop: cannot connect to 198.18.0.12:8080: Connection refused\n", 1, {})
    assert not bad.ok and "status 1" in bad.reason and "refused" in bad.reason
    short = GENERATOR.parse(spec(), json.dumps(summary()), "", 0, {"log": log_rows(5).tobytes()})
    assert not short.ok and "logged 5" in short.reason
    good = GENERATOR.parse(spec(), json.dumps(summary()), "", 0, {"log": log_rows().tobytes()})
    assert good.ok and good.generator_info["arrival"] == "uniform"


def test_timeline_is_per_second_of_the_window():
    r = result_from_log(spec(), log_rows(), summary())
    assert [t["t"] for t in r.timeline] == [0, 1] and [t["rate"] for t in r.timeline] == [1000, 1000]


def test_histograms_survive_the_record_codec():
    r = result_from_log(spec(), log_rows(), summary())
    assert decode_histogram(encode_histogram(r.histogram)).get_total_count() == 2000


def test_pacing_even_bursty_and_poisson():
    rng = np.random.default_rng(1)
    n, rate = 25_000, 25_000.0
    intended = (np.arange(n) * 1e9 / rate).astype(np.int64)
    even = lat.pacing(intended, intended + rng.integers(0, 5_000, n), 0, 10**9)
    assert even["dispersion_per_ms"] <= 0.2 and even["max_line_ratio"] < 20
    # h2load-like: each 10 ms of requests sent in the first 5 ms of the tick
    burst_sent = (intended // 10_000_000) * 10_000_000 + (intended % 10_000_000) // 2
    bursty = lat.pacing(intended, burst_sent, 0, 10**9)
    assert bursty["dispersion_per_ms"] > 10 and bursty["max_line_ratio"] > 1000
    poisson = np.cumsum(rng.exponential(1e9 / rate, n)).astype(np.int64)
    assert lat.dispersion(lat.per_ms_counts(poisson, 0, int(poisson[-1]))) == pytest.approx(1.0, abs=0.1)


def _stalled_sends(intended: np.ndarray, stall_from_ns: int, stall_ns: int) -> np.ndarray:
    """An on-schedule sender frozen for `stall_ns`: what fell due meanwhile goes out at its end."""
    sent = intended.copy()
    inside = (intended >= stall_from_ns) & (intended < stall_from_ns + stall_ns)
    sent[inside] = stall_from_ns + stall_ns
    return sent


def test_a_stall_the_generator_listed_is_taken_out_of_the_pacing_figures():
    n, rate = 25_000, 25_000.0
    intended = (np.arange(n) * 1e9 / rate).astype(np.int64)
    sent = _stalled_sends(intended, 400_000_000, 8_000_000)  # off its CPU for 8 ms at 400 ms
    raw = lat.pacing(intended, sent, 0, 10**9)
    assert raw["dispersion_per_ms"] > 0.2  # one 8 ms stall spoils a second's dispersion at 25k req/s
    mask = lat.stall_mask([(400_000_000, 408_000_000)], 0, 1000)
    assert mask[400:409 + lat.CATCH_UP_MS].all() and not mask[:400].any() and not mask[409 + lat.CATCH_UP_MS:].any()
    out = lat.pacing_outside_stalls(intended, sent, 0, 10**9, mask)
    assert out["dispersion_per_ms"] <= 0.2 and out["max_line_ratio"] < 20
    assert out["send_lag_p999_us"] == 0  # the stalled requests are the ones taken out
    assert out["excluded_ms"] == int(mask.sum()) and out["of_ms"] == 1000


def test_a_stall_elsewhere_takes_nothing_out_and_the_miss_stays():
    n, rate = 25_000, 25_000.0
    intended = (np.arange(n) * 1e9 / rate).astype(np.int64)
    sent = _stalled_sends(intended, 400_000_000, 8_000_000)
    mask = lat.stall_mask([(700_000_000, 703_000_000)], 0, 1000)
    assert not mask[395:415].any() and mask[700:706].all()
    out = lat.pacing_outside_stalls(intended, sent, 0, 10**9, mask)
    assert out["dispersion_per_ms"] > 0.2 and out["send_lag_p999_us"] > 1000


def test_the_generators_stalls_reach_the_record():
    rows = log_rows(n=2000, rate=1000.0)
    stalled = (rows["intended"] >= 1_500_000_000) & (rows["intended"] < 1_520_000_000)
    rows["sent"][stalled] = 1_520_000_000  # 20 ms off its CPU, from 1.5 s after t0
    stalls = [[0, 1_500_000_000, 1_520_000_000, 19_900_000], [0, 2_100_000_000, 2_100_300_000, 250_000]]
    r = result_from_log(spec(), rows, summary(version="2", offcpu_s=0.0202, stalls=stalls, stalls_dropped=0))
    assert r.generator_info["stalls"] == 2 and r.generator_info["stall_max_us"] == 19_900.0
    assert r.generator_info["stalls_largest"][0][1] == 1_500_000_000 and r.generator_info["offcpu_s"] == 0.0202
    assert r.send_lag["percentiles"]["100"] > 19_000  # the raw figures keep the stall
    out = r.pacing["outside_stalls"]
    assert out["send_lag_p999_us"] < 1 and out["excluded_ms"] == 20 + lat.CATCH_UP_MS + 1 + 1 + lat.CATCH_UP_MS
    # A version-1 summary (no stall list) gives the raw figures only.
    assert "outside_stalls" not in result_from_log(spec(), log_rows(), summary()).pacing


def test_only_the_machines_stalls_are_taken_out():
    """Version 5 gives each stall a cause; the generator's own ("own": it blocked by itself) stay
    in the figures outside the stalls, so a generator that sleeps is not excused."""
    rows = log_rows(n=2000, rate=1000.0)
    for at in (1_500_000_000, 2_200_000_000):
        stalled = (rows["intended"] >= at) & (rows["intended"] < at + 5_000_000)
        rows["sent"][stalled] = at + 5_000_000
    stalls = [[0, 1_500_000_000, 1_505_000_000, 5_000_000, 0, 0],  # steal: no switch
              [0, 2_200_000_000, 2_205_000_000, 5_000_000, 2, 0]]  # its own
    r = result_from_log(spec(), rows, summary(version="5", offcpu_s=0.01, stalls=stalls, stalls_dropped=0))
    out = r.pacing["outside_stalls"]
    assert out["excluded_ms"] == 5 + lat.CATCH_UP_MS + 1 and out["own_stalls"] == 1
    assert out["send_lag_p999_us"] > 1000  # the own stall's late sends stay
    assert r.generator_info["stall_ms_by_cause"] == {"own": 5.0, "steal": 5.0}


def test_late_sends_are_attributed_to_what_the_generator_saw():
    intended = np.arange(0, 10_000_000, 100_000, dtype=np.int64)  # 100 sends over 10 ms
    sent = intended + 1_000
    sent[[10, 11]] += 80_000  # late after a short gap in ms 1
    sent[[55]] += 70_000  # late inside a slow pass in ms 5
    sent[[90]] += 60_000  # late with nothing seen
    intervals = [[0, 1_000_000, 1_050_000, 40_000, 10_000, 1],  # 40 us off (preempted), ends in ms 1
                 [0, 5_000_000, 6_000_000, 5_000, 90_000, 0]]  # a 90 us pass, no gap
    out = lat.late_sends_by_cause(intended, sent, 0, np.zeros(10, dtype=bool), intervals, 50, 20_000)
    assert out == {"late": 4, "short_gap_steal": 0, "short_gap_preempted": 2, "short_gap_own": 0, "short_gap_stopped": 0,
                   "slow_pass": 1, "unexplained": 1}
    masked = np.zeros(10, dtype=bool)
    masked[1] = True  # sends due in a masked bin are not counted at all
    assert lat.late_sends_by_cause(intended, sent, 0, masked, intervals, 50, 20_000)["late"] == 2


def test_the_broken_build_is_its_own_source(monkeypatch):
    from cnibench.workload import loadgen

    honest, honest_path = loadgen.source("openloop"), loadgen.binary_path("openloop")
    monkeypatch.setenv(loadgen.BREAK_PACING_ENV, "1")
    broken, broken_path = loadgen.source("openloop"), loadgen.binary_path("openloop")
    assert broken.startswith(b"#define CNIB_BREAK_PACING 1\n") and broken.endswith(honest)
    assert broken_path != honest_path  # its own binary: a study never runs the broken build by accident
    monkeypatch.delenv(loadgen.BREAK_PACING_ENV)
    assert loadgen.binary_path("openloop") == honest_path and b"CNIB_BREAK_PACING" in honest  # the switch exists, off


def test_python_admits_exactly_what_the_generator_accepts():
    """One set of bounds: what validate_spec lets through, cnib-openloop must accept (its
    parse_args bounds, read from the source), so no spec passes validation and then fails there."""
    import re

    from cnibench.workload import defaults, loadgen

    text = loadgen.source("openloop").decode()
    bounds = {m[0]: (float(m[1]), float(m[2])) for m in re.findall(r'"(\w[\w-]*)"\)\) g_\w+ = \(int\)num\(a, v, ([\d.e]+), ([\d.e]+)\)', text)}
    assert bounds["threads"] == (1, defaults.MAX_THREADS)
    assert bounds["pipeline"] == (1, defaults.MAX_PIPELINE)
    assert bounds["connections"][1] >= defaults.MAX_CONNECTIONS


def test_the_steal_mask_leaves_out_exactly_the_requests_due_in_a_widened_episode():
    """Requests every 0.5 ms; one 3 ms steal episode at 10-13 ms and one 0.2 ms one at 30 ms:
    left out are those due in [9, 16] ms (D = S = 3 ms) and [29, 32.2] ms (D = 2 ms)."""
    intended = np.arange(0, 50_000_000, 500_000, dtype=np.int64)
    episodes = [(10_000_000, 13_000_000, 3_000_000), (30_000_000, 30_200_000, 200_000)]
    mask = lat.steal_mask(intended, episodes)
    want = ((intended >= 9_000_000) & (intended <= 16_000_000)) | ((intended >= 29_000_000) & (intended <= 32_200_000))
    assert (mask == want).all() and mask.sum() == 15 + 7
    shuffled = np.random.default_rng(1).permutation(intended)  # order does not matter
    assert (lat.steal_mask(shuffled, episodes) == ((shuffled >= 9_000_000) & (shuffled <= 16_000_000)
                                                  | (shuffled >= 29_000_000) & (shuffled <= 32_200_000))).all()


def test_steal_episodes_are_the_steal_stalls_and_gaps_only():
    """Preempted stalls count by their part beyond the in-guest wait (run_delay), when above short_ns."""
    stalls = [[0, 1, 2, 150_000, 0, 0], [0, 5, 6, 150_000, 1, 140_000], [0, 7, 8, 150_000, 2, 0], [0, 9, 10, 9],
              [0, 11, 12, 150_000, 1, 90_000], [0, 13, 14, 150_000, 1, -1]]
    intervals = [[0, 20, 30, 25_000, 0, 0], [0, 40, 50, 25_000, 60_000, 1], [0, 60, 70, 5_000, 80_000, 0]]
    assert lat.steal_episodes(stalls, intervals, 20_000) == [(1, 2, 150_000), (11, 12, 60_000), (20, 30, 25_000)]


def test_the_record_has_a_histogram_outside_steal_beside_the_raw_one():
    rows = log_rows(n=2000, rate=1000.0)
    rows["done"][500:510] += 5_000_000  # slow requests due in a steal episode at 1.5 s
    stalls = [[0, 1_500_000_000, 1_505_000_000, 5_000_000, 0, 0]]
    r = result_from_log(spec(), rows, summary(version="5", stalls=stalls, intervals=[], short_ns=20000))
    o = r.outside_steal
    assert o["left_out"] == 1 + 5 + 5 + 1 and o["of"] == 2000 and o["cores"] == ["client"]
    assert o["histogram"].get_total_count() == 2000 - o["left_out"]
    assert o["histogram"].get_max_value() < 1000 < r.histogram.get_max_value()  # raw keeps the slow ones
    assert result_from_log(spec(), log_rows(), summary()).outside_steal is None
