"""The tcpkali adapter's parser on real tcpkali 1.2 output (tests/fixtures/tcpkali/)."""

from pathlib import Path

import pytest

from cnibench.workload.generators.base import LoadSpec
from cnibench.workload.generators.tcpkali import GENERATOR, parse_output, request_length

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tcpkali"
REQ = request_length("/small")  # 'GET /small HTTP/1.1\r\nHost: server\r\n\r\n'
EXIT = {"rate20k-small": 0, "rate20k-large": 0, "default-percentiles": 0, "overload": 0, "refused": 1}
# The fixtures' nginx sent these response sizes (received bytes / requests, see their README).
RESP_SMALL, RESP_LARGE = 338, 4341


def load(case):
    return (FIX / f"tcpkali-{case}.stdout").read_text(), (FIX / f"tcpkali-{case}.stderr").read_text()


def test_request_is_37_bytes_like_the_fixtures():
    assert REQ == 37


@pytest.mark.parametrize("case,resp", [("rate20k-small", RESP_SMALL), ("rate20k-large", RESP_LARGE)])
def test_rate20k_cases(case, resp):
    out, err = load(case)
    r = parse_output(out, err, EXIT[case], REQ, resp, rate=20000)
    assert r.ok
    assert r.requests == {"rate20k-small": 3702146, "rate20k-large": 3705661}[case] // 37
    assert 99_000 < r.requests < 101_000  # 16 connections x 1250/s x 5 s
    assert r.window_s == pytest.approx({"rate20k-small": 5.00008, "rate20k-large": 5.0034}[case])
    assert set(r.percentiles) == {"50", "90", "95", "99", "99.5", "99.9", "99.99", "99.999", "100"}
    if case == "rate20k-small":
        assert r.percentiles["50"] == 100 and r.percentiles["99.9"] == 1000 and r.percentiles["100"] == 3300
    else:
        assert r.percentiles["50"] == 200 and r.percentiles["99.99"] == 2200 and r.percentiles["100"] == 2300
    assert 19_000 < r.achieved_rate < 20_500
    # The rebuilt histogram agrees with the printed table where it can (0.1 ms resolution).
    h = r.histogram
    assert h.get_total_count() == r.ok_count
    assert abs(h.get_value_at_percentile(50) - r.percentiles["50"]) <= 100
    assert abs(h.get_value_at_percentile(99) - r.percentiles["99"]) <= 100
    assert "rebuilt" in r.source


def test_default_percentiles_are_95_99_995():
    out, err = load("default-percentiles")
    r = parse_output(out, err, 0, REQ, RESP_SMALL)
    assert r.ok and r.percentiles == {"95": 300, "99": 400, "99.5": 400}


def test_overload_parses_and_shows_the_shortfall():
    out, err = load("overload")
    r = parse_output(out, err, 0, REQ, RESP_SMALL, rate=16 * 20000)
    assert r.ok
    assert r.requests == 37708106 // 37
    assert r.percentiles == {"50": 1182300, "99": 2401500, "99.9": 2420700, "100": 2428700}
    assert r.achieved_rate < 0.5 * 320_000  # the guard will mark it invalid
    assert r.unfinished > 0


def test_refused_is_a_failure_with_tcpkalis_reason():
    out, err = load("refused")
    r = parse_output(out, err, EXIT["refused"], REQ, RESP_SMALL)
    assert not r.ok
    assert "status 1" in r.reason and "Could not create 4 connections" in r.reason


def test_truncated_output_is_a_failure():
    out, err = load("rate20k-small")
    r = parse_output(out.split("Message latency")[0], err, 0, REQ, RESP_SMALL)
    assert not r.ok and "no byte counts" in r.reason


def test_command_rate_is_per_connection_and_pipelined_request():
    spec = LoadSpec(address="198.18.0.12", port=8080, path="/small", rate=20000, connections=16, threads=1,
                    duration_s=5, warmup_s=1, pipeline=1, timeout_s=10)
    argv = GENERATOR.command(spec)
    assert argv[argv.index("-r") + 1] == "1250"
    assert argv[argv.index("-T") + 1] == "6"
    assert argv[argv.index("-em") + 1] == "GET /small HTTP/1.1\\r\\nHost: server\\r\\n\\r\\n"
    assert argv[-1] == "198.18.0.12:8080"
    assert "100" in argv[argv.index("--latency-percentiles") + 1].split(",")
