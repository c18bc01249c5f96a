"""dataset.py: raw records -> tidy runs table + histograms, defensive against missing metrics."""

import json

import numpy as np
import pytest

from cnibench.analysis import dataset, synthetic
from cnibench import results
from cnibench.analysis.synthetic import Truth


def test_histogram_arrays_match_hdrh():
    h = results.new_histogram()
    for v in (1, 5, 999, 1000, 1001, 2047, 2048, 123_456, 99_999_999):
        h.record_value(v)
    lo, hi, c = dataset.histogram_arrays(results.encode_histogram(h))
    assert c.sum() == 9
    for v in (1, 5, 999, 2048, 123_456, 99_999_999):
        k = np.nonzero((lo <= v) & (v < hi))[0]
        assert len(k) == 1
        assert lo[k[0]] == h.get_lowest_equivalent_value(v)
        assert hi[k[0]] - 1 == h.get_highest_equivalent_value(v)


def test_cpu_per_request_known_answer_and_bad_metrics():
    m = {"server": {"period_s": 1.0, "samples": [
        {"t": 0, "cpu": {"cpu0": {"user": 0.1, "system": 0.2, "softirq": 0.05, "idle": 0.65},
                         "cpu1": {"user": 0.1, "system": 0.0, "softirq": 0.05, "idle": 0.85}}},
        {"t": 1, "cpu": {"cpu0": {"user": 0.2, "system": 0.2, "softirq": 0.1, "idle": 0.5}}}]}}
    out = dataset.cpu_per_request(m, 1000.0, {})
    # user: 0.4 CPU-s over 2 s at 1000 req/s = 200 us per request
    assert out["cpu_server_user_us"] == pytest.approx(200.0)
    assert out["cpu_server_softirq_us"] == pytest.approx(100.0)
    # the sampler's shape: percent of "dt" seconds
    pct = {"a": {"samples": [{"t": 0, "dt": 2.0, "cpu": {"cpu0": {"user": 50.0, "softirq": 10.0}}}]}}
    out = dataset.cpu_per_request(pct, 100.0, {"a": "client"})
    assert out["cpu_client_user_us"] == pytest.approx(5000.0)  # 1 CPU-s / 2 s / 100 req/s
    assert out["cpu_client_softirq_us"] == pytest.approx(1000.0)
    assert dataset.cpu_per_request(None, 1000.0, {}) == {}
    assert dataset.cpu_per_request({"x": {"samples": "garbage"}}, 1000.0, {}) == {}
    assert dataset.cpu_per_request(m, 0.0, {}) == {}


def test_build_save_load_roundtrip(tmp_path):
    raw = tmp_path / "raw"
    paths = synthetic.write_study(raw, modes=("host", "ipvlan"), sizes=("small",), loads=(0.3, 0.5),
                                  reps=2, seed=2, duration_s=5, failed_fraction=0.3)
    # a torn file and a record without metrics are both handled
    (paths[0].parent / "rep9.json").write_text('{"schema": 1, "run_')
    rec = json.loads(paths[-1].read_text())
    rec.pop("metrics"), rec.update(run_id=rec["run_id"].replace("rep2", "rep7"), repetition=7)
    results.write_record(raw, rec)
    ds = dataset.build("synthetic", raw)
    assert len(ds.runs) == len(paths) + 1 and len(ds.unreadable) == 1
    assert set(ds.runs["mode"]) == {"host", "ipvlan"}
    assert ds.runs.loc[ds.runs["status"] == "failed", "valid"].eq(False).all()
    no_metrics = ds.runs[ds.runs["repetition"] == 7].iloc[0]
    assert no_metrics["valid"] and np.isnan(no_metrics["cpu_server_user_us"])
    ok = ds.runs[ds.runs["valid"]]
    assert ok["cpu_server_system_us"].dropna().between(2.9, 3.1 * 1.1).all()
    assert ds.calibration["host"]["small"]["max_rate"] == Truth().host_max_rate["small"]
    dataset.save(ds, tmp_path / "proc")
    back = dataset.load("synthetic", tmp_path / "proc")
    assert back.runs.shape == ds.runs.shape and back.unreadable == ds.unreadable
    for rid, (lo, hi, c) in ds.hist.items():
        assert np.array_equal(back.hist[rid][2], c) and np.array_equal(back.hist[rid][0], lo)


def test_load_fraction_from_calibration_when_missing(tmp_path):
    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    rec = synthetic.make_record("s", "host", "small", 0.4, 1, Truth(), rng, duration_s=2)
    rec["load_fraction"] = None
    results.write_record(raw, rec)
    cal = tmp_path / "calibration" / "inv" / "host"
    cal.mkdir(parents=True)
    (cal / "small.json").write_text(json.dumps({"max_rate": 80_000.0, "saturation_rate": 90_000.0}))
    ds = dataset.build("s", raw)
    assert ds.runs["load_fraction"].iloc[0] == pytest.approx(40_000 / 80_000)


def test_calibration_from_the_manifest(tmp_path):
    man = {"inventory": {"name": "tb"}, "calibration": {"reference": "host", "max_rates": {"small": 5000.0}}}
    assert dataset.read_calibration(tmp_path, man) == {"host": {"small": {"max_rate": 5000.0}}}
    assert dataset.read_calibration(tmp_path, {}) == {}


def test_order_modes_is_fixed():
    assert dataset.order_modes(["zeta", "ipvlan", "host", "alpha"]) == ["host", "ipvlan", "alpha", "zeta"]
    assert dataset.pcol("99.9") == "p99_9" and dataset.pcol(100) == "pmax" and dataset.pcol(50.0) == "p50"


def test_a_run_that_did_not_keep_up_is_not_sustained(tmp_path):
    """A run whose p50 from the intended send time passed the study's bound (its queue did not
    drain for most of the window) is 'not sustained' in the analysis, whatever the guards said of
    the measurement; a heavy tail alone (p90 over the bound) is not."""
    from cnibench.analysis import stats

    raw = tmp_path / "raw"
    rng = np.random.default_rng(0)
    keeps_up = synthetic.make_record("s", "host", "small", 0.5, 1, Truth(), rng, duration_s=2)
    behind = synthetic.make_record("s", "docker-bridge", "small", 0.5, 1, Truth(), rng, duration_s=2)
    behind["latency"]["percentiles"].update({"50": 28_000, "90": 60_000})
    edge = synthetic.make_record("s", "macvlan", "small", 0.5, 1, Truth(), rng, duration_s=2)
    edge["latency"]["percentiles"].update({"50": 90, "90": 24_000})  # a tail, not a queue that never drained
    for rec in (keeps_up, behind, edge):
        results.write_record(raw, rec)
    ds = dataset.build("s", raw)
    row = ds.runs.set_index("mode").loc["docker-bridge"]
    assert row["status"] == "invalid" and not row["valid"] and not row["sustained"]
    assert row["reason"] == "not sustained: p50 28.0 ms > 10 ms"
    assert bool(ds.runs.set_index("mode").loc["host", "valid"]) and bool(ds.runs.set_index("mode").loc["macvlan", "valid"])
    state = stats.attempts(ds.runs).set_index("mode")["state"]
    assert state["docker-bridge"] == stats.NOT_SUSTAINED and state["host"] == "ok"
    # a study calibrated with another criterion is judged by it (its manifest says which)
    loose = {"calibration": {"details": {"small": {"bound_ms": 100.0, "percentile": 90}}}}
    assert dataset.sustain_criterion(loose) == (100.0, 50.0) and dataset.sustain_criterion({}) == (10.0, 50.0)
