"""h2load adapter (the cross-check generator): command builder, summary and log parsers.

The fixtures are real h2load 1.52 output against nginx on loopback with the nginx worker
SIGSTOPped for 200 ms one second into a 3 s window at 2000 req/s (8 connections x 250/s):
stall-m1 (one request in flight per connection: closed loop) and stall-m125 (pipelined).
"""

import gzip
from pathlib import Path

import numpy as np
import pytest

from cnibench.workload.generators.base import LoadSpec
from cnibench.workload.generators.h2load import GENERATOR, parse_log, parse_summary, result_from_log

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "h2load"
RATE, STALL_S = 2000.0, 0.2


def spec(pipeline=1, rate=RATE, **kw):
    base = dict(address="198.18.0.12", port=8080, path="/small", rate=rate, connections=8, threads=1,
                duration_s=3.0, warmup_s=1.0, pipeline=pipeline, timeout_s=10.0, log_path="/run/cnibench/workload/x/requests.log")
    base.update(kw)
    return LoadSpec(**base)


def fixture(m):
    rows = parse_log(gzip.open(FIX / f"stall-m{m}.log.gz").read())
    return rows, parse_summary((FIX / f"stall-m{m}.stdout").read_text())


def slow_fraction(h, us=100_000):
    n = h.get_total_count()
    return sum(it.count_at_value_iterated_to for it in h.get_recorded_iterator() if it.value_iterated_to > us) / n


def test_command_is_http1_constant_rate_per_connection():
    argv = GENERATOR.command(spec(pipeline=125))
    assert argv[:2] == ["h2load", "--h1"]
    assert argv[argv.index("--rps") + 1] == "250"
    assert argv[argv.index("-m") + 1] == "125"
    assert argv[argv.index("-D") + 1] == "3000ms"
    assert argv[argv.index("--warm-up-time") + 1] == "1000ms"
    assert argv[argv.index("--log-file") + 1].endswith("requests.log")
    assert argv[-1] == "http://198.18.0.12:8080/small"


def test_closed_loop_has_no_rps_and_ipv6_is_bracketed():
    argv = GENERATOR.command(spec(rate=None, address="fd00::2"))
    assert "--rps" not in argv and argv[-1] == "http://[fd00::2]:8080/small"


def test_summary_parser():
    _, s = fixture(125)
    assert s["total"] == 6000 and s["started"] == 6016 and s["succeeded"] == 6000 and s["2xx"] == 6000
    assert parse_summary("no summary here") is None


def test_log_parser_drops_a_torn_line_and_keeps_failed_streams():
    rows = parse_log(b"1000\t200\t50\n1010\t-1\t0\n1020\t20")
    assert rows.tolist() == [[1000, 200, 50], [1010, -1, 0]]
    assert parse_log(b"").shape == (0, 3)


def test_pipelined_run_sees_the_stall_like_an_open_loop_client():
    rows, summary = fixture(125)
    r = result_from_log(spec(pipeline=125), rows, summary)
    expected = RATE * STALL_S * 0.5 / r.histogram.get_total_count()
    assert r.ok and r.ok_count == 6000 and r.errors == 0
    assert slow_fraction(r.histogram) == pytest.approx(expected, rel=0.3)


def test_closed_loop_log_is_reported_as_measured_and_hides_the_stall():
    """One request in flight per connection: h2load's own numbers miss most of the stall
    (coordinated omission). They are reported uncorrected and labelled, never adjusted."""
    rows, summary = fixture(1)
    r = result_from_log(spec(pipeline=1), rows, summary)
    expected = RATE * STALL_S * 0.5 / r.histogram.get_total_count()
    assert slow_fraction(r.histogram) < 0.2 * expected
    assert "actual send" in r.source and r.correction["method"].startswith("none")


def test_timeline_covers_the_window_and_shows_the_stall_second():
    rows, summary = fixture(125)
    r = result_from_log(spec(pipeline=125), rows, summary)
    assert [t["t"] for t in r.timeline] == [0, 1, 2]
    assert sum(t["rate"] for t in r.timeline) == pytest.approx(6000, abs=40)
    worst = max(r.timeline, key=lambda t: t["p99_us"])
    assert worst["t"] == 1 and worst["p99_us"] > 100_000


def test_errors_and_timeouts_are_counted():
    rows = np.array([[1_000_000 + i * 500, 200, 100] for i in range(1000)], dtype=np.int64)
    rows[10, 1] = -1
    rows[20, 1] = 503
    rows[30, 2] = 11_000_000  # later than the 10 s timeout
    r = result_from_log(spec(rate=2000.0, duration_s=0.5), rows, {"started": 1000, "done": 1000})
    assert (r.errors, r.timeouts, r.ok_count) == (2, 1, 997)


def test_parse_reports_a_nonzero_exit_with_stderr():
    r = GENERATOR.parse(spec(), "", "connect: Connection refused\n", 1, {})
    assert not r.ok and "status 1" in r.reason and "refused" in r.reason


def test_parse_with_no_success_is_a_failure():
    out = "requests: 100 total, 100 started, 100 done, 0 succeeded, 100 failed, 100 errored, 0 timeout\n"
    r = GENERATOR.parse(spec(), out, "", 0, {"log": b""})
    assert not r.ok and "no request succeeded" in r.reason
