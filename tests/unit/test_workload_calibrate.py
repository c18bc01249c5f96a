"""Calibration's search (pure) and storage."""


from dataclasses import replace

import pytest

from cnibench.workload import calibrate as cal
from cnibench.workload.bench import BenchSpec


def search(capacity, **kw):
    """Drive next_rate against a server that passes below `capacity`."""
    probes = []
    while (r := cal.next_rate(probes, **kw)) is not None:
        probes.append((r, r <= capacity))
    return probes


def test_ramp_then_bisect_brackets_the_capacity_within_tolerance():
    probes = search(23_000, start=2000, tolerance=0.05)
    rates = list(dict.fromkeys(r for r, _ in probes))  # a failure is probed twice (its vote)
    assert rates[:5] == [2000, 4000, 8000, 16000, 32000]  # ramp x2 until a failure
    best = max(r for r, ok in probes if ok)
    worst = min(r for r, ok in probes if not ok and r > best)
    assert best <= 23_000 < worst and (worst - best) / best <= 0.05
    assert len(probes) <= 18


def test_first_rate_too_high_ramps_down():
    probes = search(700, start=2000)
    assert probes[:5] == [(2000, False), (2000, False), (1000, False), (1000, False), (500, True)]
    assert max(r for r, ok in probes if ok) <= 700


def test_stops_at_max_rate_and_min_rate_and_probe_budget():
    assert max(r for r, _ in search(10**9, start=2000, max_rate=50_000)) == 50_000
    assert all(not ok for _, ok in search(10, start=2000, min_rate=100))
    assert len(search(23_000, start=2000, max_probes=6)) == 6


def test_probe_ok_needs_a_valid_run_under_the_bound_at_the_chosen_percentile():
    rec = {"status": "ok", "latency": {"percentiles": {"90": 4000, "99": 9000}}}
    assert cal.probe_ok(rec, 10.0, 99) and not cal.probe_ok(rec, 5.0, 99)
    assert cal.probe_ok(rec, 5.0) and not cal.probe_ok(rec, 3.0)  # the default is p90
    assert not cal.probe_ok({**rec, "status": "invalid"}, 10.0)
    assert not cal.probe_ok({"status": "failed", "latency": {"percentiles": None}}, 10.0)


def test_probes_judge_machine_noise_but_not_the_generators_own_lag():
    template = BenchSpec(mode="host", size="small", rate=1, duration_s=5, warmup_s=1)
    probe = cal.probe_spec(replace(template, guard=replace(template.guard, max_send_lag_p99_us=500.0)), 3.0, 0.5)
    assert probe.guard.max_send_lag_p99_us is None  # off in probes even when a study sets it
    assert probe.guard.max_steal == template.guard.max_steal and probe.guard.max_foreign_cpu == template.guard.max_foreign_cpu
    assert (probe.duration_s, probe.warmup_s, probe.metrics, probe.closed_loop) == (3.0, 0.5, False, False)


def test_save_and_load(tmp_path, monkeypatch):
    monkeypatch.setattr(cal, "CALIBRATION", tmp_path)
    assert cal.load_calibration("testbed", "host", "small") is None
    path = cal.save_calibration("testbed", "host", "small", {"max_rate": 12000.0, "saturation_rate": 30000.0})
    assert path == tmp_path / "testbed" / "host" / "small.json"
    assert cal.load_calibration("testbed", "host", "small") == {"max_rate": 12000.0, "saturation_rate": 30000.0, "inventory": "testbed"}


def test_a_rate_disturbed_every_time_stops_the_calibration_with_the_reason():
    """No evidence about the rate is not a failure of it: counting it as one walked a calibration
    down to ~2,000 req/s on a stalling VM. Four disturbed probes in a row, with growing pauses
    between them, stop it, clearly."""
    import asyncio

    calls, pauses = [], []

    async def run(session, spec, run_id):
        calls.append(run_id)
        return {"status": "invalid", "reason": "invalid: hiccups (sum of stalls) 49.0 ms (limit 20.0 ms)",
                "achieved_rate": spec.rate, "generator_cpu": 1.0, "latency": {"percentiles": {"90": 100}},
                "hygiene": {"disturbed": True, "flags": ["hiccup"]}}, 0.0

    async def sleep(s):
        pauses.append(s)

    base = BenchSpec(mode="host", size="small", rate=1, duration_s=3, warmup_s=0.5)
    log: list[dict] = []
    with pytest.raises(cal.CalibrationFailed, match="4 probes in a row at 4000 req/s were disturbed .*hiccups"):
        asyncio.run(cal._probe(None, base, 4000.0, (10.0, 90), log, None, run=run, sleep=sleep))
    assert len(calls) == cal.MAX_DISTURBED == len(log) == 4 and all(e["disturbed"] for e in log)
    assert pauses == [2.0, 4.0, 8.0]


def test_a_failed_probe_with_steal_is_run_again_and_the_next_quiet_one_votes():
    import asyncio

    runs = [(30_000, 0.06), (800, 0.001)]  # (p90 us, steal): a failure under steal, then a quiet pass

    async def run(session, spec, run_id):
        p90, steal = runs.pop(0)
        return {"status": "ok", "reason": "", "achieved_rate": spec.rate, "generator_cpu": 1.0,
                "latency": {"percentiles": {"90": p90, "99": 2 * p90}}, "hygiene": {"disturbed": False}}, steal

    async def sleep(s):
        pass

    base = BenchSpec(mode="host", size="small", rate=1, duration_s=3, warmup_s=0.5)
    log: list[dict] = []
    ok, _ = asyncio.run(cal._probe(None, base, 4000.0, (10.0, 90), log, None, cal.PROBE_MAX_STEAL, run=run, sleep=sleep))
    assert cal.PROBE_MAX_STEAL < 0.06
    assert ok and [e["disturbed"] for e in log] == [True, False] and [e["steal"] for e in log] == [0.06, 0.001]
    assert "steal 6.0 %" in log[0]["disturbed_by"]


def _sample(uptime, steal0, steal1):
    """A parsed sampler sample with two CPUs' steal jiffies."""
    def cpu(st):
        return {"user": 0, "nice": 0, "system": 0, "idle": 0, "iowait": 0, "irq": 0, "softirq": 0, "steal": st}

    return {"uptime": uptime, "stat": {"cpus": {"cpu0": cpu(steal0), "cpu1": cpu(steal1)}}}


def test_steal_around_a_probe_is_the_largest_share_over_the_hosts_pinned_cores():
    from cnibench.workload.quiet import probe_steal, steal_between

    a, b = _sample(100.0, 0, 0), _sample(104.0, 4, 12)  # 4 s; cpu0 lost 0.04 s, cpu1 0.12 s
    assert steal_between(a, b, [0]) == 0.01
    assert steal_between(a, b, [1]) == 0.03
    assert steal_between(a, b, [0, 1]) == 0.02
    assert steal_between(a, b, [2]) is None and steal_between(None, b, [0]) is None
    assert steal_between(b, a, [0]) is None  # time went backwards: no figure, not a negative one
    assert probe_steal({"client": a, "server": a}, {"client": b, "server": b}, {"client": (0,), "server": (1,)}) == 0.03
    assert probe_steal({"client": a}, {"client": None}, {"client": (0,)}) is None


def test_a_probe_is_no_vote_when_the_guards_or_the_steal_around_a_failure_say_disturbed():
    from cnibench.workload.calibrate import probe_disturbed

    quiet = {"reason": "", "hygiene": {"disturbed": False}}
    assert probe_disturbed(quiet, False, 0.005, 0.02) is None
    assert probe_disturbed(quiet, False, None, 0.02) is None  # no figure: judged by the guards alone
    assert probe_disturbed(quiet, False, 0.05, None) is None  # the study turned the steal limit off
    assert "steal 5.0 %" in probe_disturbed(quiet, False, 0.05, 0.02)
    # steal only takes capacity away: a pass despite it is a pass
    assert probe_disturbed(quiet, True, 0.11, 0.02) is None
    hit = {"reason": "invalid: foreign CPU 9 %", "hygiene": {"disturbed": True}}
    assert probe_disturbed(hit, False, 0.0, 0.02) == "invalid: foreign CPU 9 %"
    assert probe_disturbed(hit, True, 0.0, 0.02) == "invalid: foreign CPU 9 %"
