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


def sends(per_ms: list[int], start_ns: int = 0, mask=None, lags_us=(), phase_ns: int = 0):
    """A client's Sends with a full log: per_ms[i] requests due and sent in ms i of the window,
    evenly inside it, each sent lags_us[k % len] late (0 without lags)."""
    import numpy as np

    from cnibench.workload.generators.base import Sends

    intended = np.array([start_ns + phase_ns + i * 1_000_000 + round(j * 1e6 / n) for i, n in enumerate(per_ms)
                         for j in range(n)], dtype=np.int64)
    lag = np.array([round(1000 * lags_us[k % len(lags_us)]) if lags_us else 0 for k in range(len(intended))],
                   dtype=np.int64)
    counts = np.array(per_ms)
    return Sends(counts, counts, None if mask is None else np.array(mask, dtype=bool), start_ns, intended,
                 intended + lag, lag_ns=lag)


def test_merged_pacing_sums_the_clients_per_ms_and_pools_their_send_lag():
    from cnibench.workload.fanout import merged_pacing

    # each client alone is bursty (5 in one ms, 0 in the next), together they are even: the
    # merged schedule is what the server sees, so its dispersion is 0 where each alone has 2.5
    a, b = sends([5, 0] * 50, lags_us=[10]), sends([0, 5] * 50, lags_us=[30], phase_ns=100_000)
    pacing, lag = merged_pacing([a, b])
    assert pacing["dispersion_per_ms"] == 0.0 and "outside_stalls" not in pacing
    alone, _ = merged_pacing([a])
    assert alone["dispersion_per_ms"] == pytest.approx(2.5)  # variance 6.25 over mean 2.5
    assert lag["n"] == 500 and lag["percentiles"]["90"] == 30.0 and lag["over_1ms"] == 0  # half at 10, half at 30


def test_merged_pacing_outside_the_union_of_the_clients_stalls():
    from cnibench.workload.fanout import merged_pacing

    mask_a = [False] * 100
    mask_a[10:13] = [True] * 3  # client a stalled in ms 10-12: b's late sends there are excluded too
    a = sends([5] * 100, mask=mask_a)
    b = sends([5] * 100, mask=[False] * 100, lags_us=[5] * 50 + [900] * 15 + [5] * 435)  # 900 us late in ms 10-12
    pacing, lag = merged_pacing([a, b])
    o = pacing["outside_stalls"]
    assert o["excluded_ms"] == 3 and o["of_ms"] == 100
    assert o["send_lag_p999_us"] == pytest.approx(5.0)  # the late ones were all due inside the union
    assert lag["percentiles"]["99.9"] == pytest.approx(900.0)  # the raw lag keeps them
    # one client without a stall list: no figures outside stalls (they could not be told apart)
    assert "outside_stalls" not in merged_pacing([a, sends([5] * 100)])[0]


def test_the_generator_command_carries_the_common_instant():
    from cnibench.workload.generators.base import LoadSpec
    from cnibench.workload.generators.openloop import Openloop

    spec = LoadSpec(address="10.0.0.2", port=80, path="/small", rate=5000.0, connections=4, threads=1,
                    duration_s=2, warmup_s=0.5, pipeline=32, timeout_s=10)
    assert "--start-at" not in Openloop().command(spec)
    argv = Openloop().command(LoadSpec(**{**spec.__dict__, "start_at_ns": 1_764_763_200_123_456_789}))
    assert argv[argv.index("--start-at") + 1] == "1764763200123456789"  # whole ns, not a rounded float


def _stat(t: int, busy0: int, busy1: int) -> str:
    return (f"cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 {busy0 * t} 0 0 {(100 - busy0) * t} 0 0 0 0 0 0\n"
            f"cpu1 {busy1 * t} 0 0 {(100 - busy1) * t} 0 0 0 0 0 0\nintr 1\nctxt 1\n")


def _sampler(seconds: int, busy0: int, busy1: int, pids: dict) -> str:
    out = ["@@boot b00t\n"]
    for t in range(seconds + 1):
        lines = "".join(f"{role} {pid} {per_s * t}\n" for pid, (role, per_s) in pids.items())
        out.append(f"@@sample {100 + t}.00\n@@stat\n{_stat(t, busy0, busy1)}@@netdev\n@@snmp\n@@pids\n{lines}@@end\n")
    return "".join(out)


def test_a_second_client_beside_nginx_does_not_count_nginx_as_foreign_cpu():
    """The second client's generator is pinned to nginx's core (the 2-core testbed): nginx is
    ours there. A client whose core nginx does not share still counts nothing of nginx."""
    from cnibench.workload import hygiene, metrics

    # cpu1: the second client's generator 50 %, nginx 40 %, something foreign 10 %
    text = {"client2": _sampler(4, 10, 100, {}), "server": _sampler(4, 10, 100, {20: ("nginx", 40)})}
    parsed = {h: {"boot_id": metrics.boot_id(t), "samples": metrics.parse_samples(t, "eth0")} for h, t in text.items()}
    f = hygiene.figures(parsed, {"client2": [1], "server": [1]}, {"client2": {"generator": 2.0}}, None, {}, 1000,
                        generator_host="client2")["figures"]
    assert f["foreign_cpu"] == pytest.approx(0.10, abs=0.005)  # not 0.50: nginx's 40 % is known
    # the first client on cpu0 (10 % busy: its generator's 5 %, 5 % foreign) with nginx on cpu1
    text = {"client": _sampler(4, 10, 40, {}), "server": _sampler(4, 10, 40, {20: ("nginx", 40)})}
    parsed = {h: {"boot_id": metrics.boot_id(t), "samples": metrics.parse_samples(t, "eth0")} for h, t in text.items()}
    f = hygiene.figures(parsed, {"client": [0], "server": [1]}, {"client": {"generator": 0.2}}, None, {}, 1000,
                        generator_host="client")["figures"]
    assert f["foreign_cpu"] == pytest.approx(0.05, abs=0.005) and f["server_foreign_cpu"] == pytest.approx(0.0, abs=0.005)


def test_a_fleet_view_names_another_client_and_shares_the_connections():
    from pathlib import Path

    from cnibench.infra.config import HostSpec, Inventory
    from cnibench.infra.hosts import Fleet

    hosts = tuple(HostSpec(name=n, address="10.0.0.1", role=r, data_interface="eth0")
                  for n, r in (("client", "client"), ("client2", "client"), ("server", "server")))
    fleet = Fleet(Inventory(path=Path("i.yml"), name="i", hosts=hosts))
    view = fleet.with_client("client2")
    assert fleet.clients() == ["client", "client2"] and fleet.client.name == "client"
    assert view.client is fleet["client2"] and view.server is fleet.server and view["client"] is fleet["client"]
    with pytest.raises(KeyError):
        fleet.with_client("server")


@pytest.mark.parametrize("kw,netns,says", [
    ({"generator": "h2load"}, None, "needs cnib-openloop (its --start-at), not h2load"),
    ({"closed_loop": True, "generator": "openloop"}, None, "needs an open-loop rate"),
    ({}, "cnib-c-flannel", "needs mode host: a mode puts its container on the first client only"),
])
def test_a_run_from_several_clients_is_refused_before_anything_starts(kw, netns, says):
    """Refused in one message before any host is touched: the session below has no fleet."""
    import asyncio
    from types import SimpleNamespace

    from cnibench.workload.bench import BenchSpec
    from cnibench.workload.multiclient import run_clients

    session = SimpleNamespace(endpoint=SimpleNamespace(client_netns=netns))
    spec = BenchSpec(**{"mode": "host", "size": "small", "rate": 10000, "duration_s": 2, "warmup_s": 0.5, **kw})
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        asyncio.run(run_clients(session, spec, ["client", "client2"], run_id="t/host/small/10000/rep1"))
