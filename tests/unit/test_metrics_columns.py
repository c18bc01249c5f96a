"""The record's metrics as columns (issue 27): every reader gets the samples back, a 60 s window
of the testbed's two hosts fits its share of the 64 KB record, a many-CPU host keeps a coarser
period with the same CPU cost per request."""

import json

import pytest

from cnibench import results
from cnibench.analysis import dataset
from cnibench.workload import metrics

from test_workload_session_parts import sampler_text


def _host(ncpu: int, seconds: int) -> tuple[list[dict], dict]:
    rows = metrics.intervals(sampler_text(ncpu, seconds), "eth0")
    return rows, {"period_s": 1.0, "interface": "eth0", **metrics.compact(rows)}


def test_columns_read_back_as_the_samples():
    rows, host = _host(2, 5)  # few samples: kept as they were
    back = results.metrics_rows(host)
    assert len(back) == len(rows) == 5
    for a, b in zip(rows, back):
        assert b["t"] == pytest.approx(a["t"], abs=1e-6) and b["dt"] == a["dt"]
        assert b["tcp_retrans"] == a["tcp_retrans"] and b["tcp_retrans_container"] == a["tcp_retrans_container"]
        assert b["ctxt_per_s"] == round(a["ctxt_per_s"]) and b["intr_per_s"] == round(a["intr_per_s"])
        assert b["net"] == {k: round(v) for k, v in a["net"].items()}
        cpu = metrics.expand_cpu(host, b)
        for name, kinds in a["cpu"].items():
            for k, v in kinds.items():
                assert cpu[name][k] == pytest.approx(v, abs=0.05)


def test_the_old_per_sample_shape_still_reads():
    rows, _ = _host(2, 3)
    assert results.metrics_rows({"period_s": 1.0, "samples": rows}) == rows
    assert results.metrics_rows({"period_s": 1.0, "samples": [], "error": "lost"}) == []


def test_a_60_s_window_of_two_2_cpu_hosts_takes_under_9_kb():
    """The testbed's shape (client and server, 2 CPUs each; warm-up 2 s + window 60 s + the stop's
    last sample): the part the record spent ~44 KB on. A 10 s run keeps its 1 s samples."""
    rows, host = _host(2, 63)
    assert len(host["dt"]) == 32 and host["dt"][0] == 2.0  # 2 s: at most 40 samples a host
    size = len(json.dumps({"client": host, "server": host}).encode())
    assert size < 9 * 1024, size
    assert len(_host(2, 12)[1]["dt"]) == 12
    roles = {"client": "client"}
    old = dataset.cpu_per_request({"client": {"period_s": 1.0, "samples": rows}}, 1000.0, roles)
    new = dataset.cpu_per_request({"client": host}, 1000.0, roles)
    assert old and all(new[k] == pytest.approx(old[k], abs=0.05 / 100 * 2 / 1000.0 * 1e6) for k in old)


def test_a_many_cpu_host_keeps_a_coarser_period_and_the_same_cpu_cost():
    rows, host = _host(36, 62)
    assert len(host["dt"]) < len(rows) and sum(host["dt"]) == pytest.approx(sum(r["dt"] for r in rows))
    assert len(host["dt"]) * 36 * len(metrics.CPU_KINDS) <= metrics.CPU_CELLS_PER_HOST
    assert len(json.dumps(host).encode()) < 20 * 1024
    roles = {"server": "server"}
    old = dataset.cpu_per_request({"server": {"period_s": 1.0, "samples": rows}}, 1000.0, roles)
    new = dataset.cpu_per_request({"server": host}, 1000.0, roles)
    assert old and set(old) == set(new)
    for k in old:
        assert new[k] == pytest.approx(old[k], abs=0.05 / 100 * 36 / 1000.0 * 1e6)
    back = results.metrics_rows(host)
    assert sum(r["tcp_retrans"] for r in back) == sum(r["tcp_retrans"] for r in rows)


def test_merge_weights_by_length_and_sums_counts():
    a = {"t": 1.0, "dt": 1.0, "cpu": {"cpu0": dict.fromkeys(metrics.CPU_KINDS, 10.0)}, "ctxt_per_s": 100.0,
         "intr_per_s": 10.0, "net": dict.fromkeys(metrics.NET_KEYS, 4), "tcp_retrans": 1, "tcp_retrans_container": None}
    b = {**a, "t": 4.0, "dt": 3.0, "cpu": {"cpu0": dict.fromkeys(metrics.CPU_KINDS, 30.0)}, "ctxt_per_s": 200.0}
    m = metrics.merge([a, b])
    assert m["dt"] == 4.0 and m["t"] == 4.0 and m["cpu"]["cpu0"]["user"] == pytest.approx(25.0)
    assert m["ctxt_per_s"] == pytest.approx(175.0) and m["tcp_retrans"] == 2 and m["tcp_retrans_container"] is None
    assert m["net"]["rx_dropped"] == 8 and m["net"]["rx_packets_per_s"] == pytest.approx(4.0)
