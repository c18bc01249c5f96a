"""Several clients (workload/fanout.py, limits.offset_from_exchanges): each client's share of
the schedule, the start instants, the clock offset from timestamp exchanges, and one record
from the clients' records (histograms added, every client named)."""

from __future__ import annotations

import pytest

from cnibench.errors import ConfigError
from cnibench.infra.limits import check_clocks, offset_from_exchanges, parse_remote_time
from cnibench.results import decode_histogram, encode_histogram, new_histogram
from cnibench.workload.fanout import merge_records, shares, start_times


def test_two_clients_share_the_rate_and_interleave():
    a, b = shares(10000.0, 101, 1, ["c1", "c2"])
    assert (a.rate, b.rate) == (5000.0, 5000.0)
    assert (a.phase_ns, b.phase_ns) == (0, 100_000)  # client c starts c/R later: 0.1 ms at 10,000 req/s
    assert (a.connections, b.connections) == (51, 50)
    # merged: client c's k-th request at phase_c + k / (R/N) is request j = k*N + c of the one schedule j/R
    due = sorted([a.phase_ns + round(k * 1e9 / a.rate) for k in range(50)] +
                 [b.phase_ns + round(k * 1e9 / b.rate) for k in range(50)])
    assert due == [round(j * 1e9 / 10000.0) for j in range(100)]


def test_shares_refuse_what_cannot_be_split():
    with pytest.raises(ConfigError, match="3 connections cannot give 2 clients 2 thread"):
        shares(1000.0, 3, 2, ["c1", "c2"])
    with pytest.raises(ConfigError, match="named twice"):
        shares(1000.0, 10, 1, ["c1", "c1"])


def test_start_times_add_each_clients_offset_and_phase():
    parts = shares(10000.0, 20, 1, ["c1", "c2"])
    got = start_times(1_000_000_000_000, parts, {"c1": 0.0002, "c2": -0.0001})
    assert got == {"c1": 1_000_000_200_000, "c2": 1_000_000_000_000 - 100_000 + 100_000}


def test_clock_offset_from_the_shortest_exchange():
    samples = [(100.0, 100.0060, 100.010),   # rtt 10 ms: offset +1 ms, error 5 ms
               (101.0, 101.00075, 101.0005),  # rtt 0.5 ms: offset +0.5 ms, error 0.25 ms
               (102.0, float("nan"), 102.001), (103.0, 103.0, 102.9)]  # unusable
    offset, err = offset_from_exchanges(samples)
    assert offset == pytest.approx(0.0005) and err == pytest.approx(0.00025)
    assert check_clocks({"c1": offset}).problems == ()
    assert check_clocks({"c1": 0.003}).problems[0].startswith("c1: its clock is +3.000 ms off")
    with pytest.raises(ValueError):
        offset_from_exchanges([(1.0, float("inf"), 2.0)])
    assert parse_remote_time("1764763200.123456789\n") == pytest.approx(1764763200.1234568)
    with pytest.raises(ValueError):
        parse_remote_time("Thu Dec  3")


def hist(*values_us) -> str:
    h = new_histogram()
    for v in values_us:
        h.record_value(v)
    return encode_histogram(h)


def part(rate, values, status="ok", reason=""):
    return {"run_id": "r", "status": status, "reason": reason, "target_rate": rate, "achieved_rate": rate * 0.99,
            "counts": {"requests": len(values), "ok": len(values), "errors": 0, "timeouts": 0},
            "latency": {"histogram": hist(*values), "histogram_uncorrected": hist(*values), "pacing": {"x": rate}}}


def test_merge_adds_histograms_and_names_every_client():
    rec = merge_records({"c2": part(5000.0, [300, 400]), "c1": part(5000.0, [100, 200, 900])})
    assert rec["status"] == "ok" and rec["target_rate"] == 10000.0 and rec["achieved_rate"] == 9900.0
    assert [c["host"] for c in rec["clients"]] == ["c1", "c2"] and rec["clients"][0]["pacing"] == {"x": 5000.0}
    assert rec["counts"] == {"errors": 0, "ok": 5, "requests": 5, "timeouts": 0}
    h = decode_histogram(rec["latency"]["histogram"])
    assert h.get_total_count() == 5 and h.get_max_value() >= 900 and "pacing" not in rec["latency"]
    assert rec["latency"]["percentiles"]["100"] >= 900


def test_a_failed_client_fails_the_merge_with_its_reason():
    rec = merge_records({"c1": part(5000.0, [100]), "c2": part(5000.0, [], status="failed", reason="failed: no route")})
    assert rec["status"] == "failed" and rec["reason"] == "client c2: failed: no route"
    rec = merge_records({"c1": part(5000.0, [100]), "c2": part(5000.0, [200], status="invalid", reason="send lag")})
    assert rec["status"] == "invalid" and rec["reason"] == "client c2: send lag"
