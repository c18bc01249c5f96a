"""The noise guards, figures and redo policy (pure parts)."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from cnibench.study import policy
from cnibench.analysis import synthetic
from cnibench.errors import ConfigError
from cnibench.workload import guards, hiccup, hygiene, metrics, quiet
from cnibench.workload.guards import GuardLimits

L = GuardLimits()


def verdicts(checks):
    return {c["guard"]: c["verdict"] for c in checks}


# --- each guard: quiet passes, disturbed is flagged or invalid ------------------------------

def test_foreign_cpu_guard():
    assert guards.foreign_cpu(0.01, L)["verdict"] == "ok"
    c = guards.foreign_cpu(0.31, L)
    assert c["verdict"] == "invalid" and c["noise"] and "foreign CPU on the generator's core 31.0% (limit 5.0%)" == c["reason"]
    assert guards.foreign_cpu(None, L)["verdict"] == "skipped"


def test_steal_guard_flags_then_invalidates():
    assert guards.steal(0.0, L)["verdict"] == "ok"
    assert guards.steal(0.01, L)["verdict"] == "flag"
    assert guards.steal(0.05, L)["verdict"] == "invalid"


def test_hiccup_guard_flags_one_then_invalidates_on_the_sum_when_a_study_sets_it():
    assert guards.hiccup(400, 0, L)["verdict"] == "ok"
    assert guards.hiccup(5000, 5000, L)["verdict"] == "flag"
    assert guards.hiccup(12000, 31000, L)["verdict"] == "flag"  # the default: the sum is reported, not judged
    c = guards.hiccup(12000, 31000, GuardLimits(max_hiccup_total_us=20000))
    assert c["verdict"] == "invalid" and "31.0 ms" in c["reason"] and "largest 12.0 ms" in c["reason"]


def test_send_lag_guard_only_where_recorded():
    assert guards.send_lag(None, L)["verdict"] == "skipped"  # h2load, tcpkali
    assert guards.send_lag({"99": 40, "99.9": 200}, L)["verdict"] == "ok"
    assert guards.send_lag({"99": 40, "99.9": 4000}, L)["verdict"] == "flag"
    assert guards.send_lag({"99": 5000, "99.9": 9000}, L)["verdict"] == "flag"  # part of the latency: never invalid by default
    c = guards.send_lag({"99": 900, "99.9": 4000}, GuardLimits(max_send_lag_p99_us=200))
    assert c["verdict"] == "invalid" and not c["noise"]  # a study's limit: invalid, never disturbed (not redone)


def test_generator_cpu_guard_is_not_for_busy_polling_generators():
    assert guards.generator_cpu(0.97, 1, "h2load", L)["verdict"] == "invalid"
    assert guards.generator_cpu(0.99, 1, "openloop", L)["verdict"] == "report"  # recorded, not judged
    assert guards.generator_cpu(1.7, 2, "h2load", L)["verdict"] == "ok"


def test_network_guards_flag():
    assert guards.retransmits(0, 10_000, L)["verdict"] == "ok"
    assert guards.retransmits(50, 10_000, L)["verdict"] == "flag"
    assert guards.nic_drops(0, L)["verdict"] == "ok" and guards.nic_drops(3, L)["verdict"] == "flag"
    assert guards.irq_share(0.1, 0.2)["verdict"] == "report"


def test_stability_guard():
    steady = [{"t": t, "rate": 3000, "p99_us": 300 + t} for t in range(5)]
    assert guards.stability(steady, L)["verdict"] == "ok"
    bumpy = steady[:2] + [{"t": 2, "rate": 3000, "p99_us": 250_000}] + steady[3:]
    c = guards.stability(bumpy, L)
    assert c["verdict"] == "flag" and c["value"] > 100
    thin = [{**s, "rate": 200} for s in bumpy]  # too few requests per second to compare p99s
    assert guards.stability(thin, L)["verdict"] == "skipped"


def _record(**hyg_figures):
    rng = np.random.default_rng(1)
    rec = synthetic.make_record("s", "host", "small", 0.3, 1, synthetic.Truth(), rng, duration_s=4, warmup_s=1)
    rec["hygiene"] = {"figures": hyg_figures}
    return rec


def test_judge_and_verdict_on_a_record():
    quiet_rec = _record(foreign_cpu=0.01, steal=0.0, hiccup_max_us=300, hiccup_total_us=0, irq=0.01, softirq=0.1,
                        tcp_retransmits=0, nic_drops=0)
    checks = guards.judge(quiet_rec, L)
    status, reason, flags = guards.verdict_of(checks)
    assert (status, reason, flags) == ("ok", "", []) and not guards.disturbed(checks)
    noisy = _record(foreign_cpu=0.4, steal=0.0, hiccup_max_us=3000, hiccup_total_us=3000)
    checks = guards.judge(noisy, L)
    status, reason, flags = guards.verdict_of(checks)
    assert status == "invalid" and reason.startswith("invalid: foreign CPU") and flags == ["hiccup"]
    assert guards.disturbed(checks)
    assert guards.verdict_of(guards.judge(noisy, guards.noise_reported_only()))[0] == "ok"


def test_old_check_interface_still_answers():
    assert guards.check(1000, 995, 10000, 0, 0, 0.5) == []
    assert "CPU" in guards.check(1000, 1000, 10000, 0, 0, 0.95)[0]
    assert guards.check(1000, 1000, 10000, 0, 0, 0.99, generator="openloop") == []


# --- figures from sampler text ---------------------------------------------------------------

def _stat(t: int, busy0: int, busy1: int, steal1: int = 0) -> str:
    """Two CPUs at tick t: cpu0 `busy0` and cpu1 `busy1` user ticks per second so far."""
    return (f"cpu  0 0 0 0 0 0 0 0 0 0\n"
            f"cpu0 {busy0 * t} 0 0 {(100 - busy0) * t} 0 0 0 0 0 0\n"
            f"cpu1 {busy1 * t} 0 0 {(100 - busy1 - steal1 - 5) * t} 0 0 {5 * t} {steal1 * t} 0 0\nintr 1\nctxt 1\n")


def sampler_text(seconds: int, busy0: int, busy1: int, pids: dict[int, tuple[str, int]], steal1: int = 0) -> str:
    out = ["@@boot b00t\n"]
    for t in range(seconds + 1):
        lines = "".join(f"{role} {pid} {per_s * t}\n" for pid, (role, per_s) in pids.items())
        out.append(f"@@sample {100 + t}.00\n@@stat\n{_stat(t, busy0, busy1, steal1)}@@netdev\n@@snmp\n@@pids\n{lines}@@end\n")
    return "".join(out)


def test_foreign_cpu_is_pinned_busy_minus_our_processes_per_machine():
    # client and server on one machine (same boot id); nginx 40 %, sampler 1 %, generator 60 % of 4 s
    client = sampler_text(4, 62, 41, {11: ("sampler", 1)})  # one machine: both read the same /proc/stat
    server = sampler_text(4, 62, 41, {20: ("nginx", 40), 12: ("sampler", 0)})
    parsed = {h: {"boot_id": metrics.boot_id(t), "samples": metrics.parse_samples(t, "eth0")} for h, t in (("client", client), ("server", server))}
    fig = hygiene.figures(parsed, {"client": [0], "server": [1]}, {"client": {"generator": 2.4}}, None, {}, 1000)
    (m,) = fig["machines"]
    assert m["pinned"] == ["cpu0", "cpu1"] and m["hosts"] == ["client", "server"]
    assert fig["figures"]["foreign_cpu"] == pytest.approx(0.01 * 4 / 8 + 0.01 * 4 / 8, abs=0.003)  # 2 % of a core, 2 cores
    assert fig["cpu_s"]["nginx"] == pytest.approx(1.6) and fig["cpu_s"]["generator"] == pytest.approx(2.4)
    # a hog taking half of the server core shows as foreign
    for host, pids in (("client", {11: ("sampler", 1)}), ("server", {20: ("nginx", 40)})):
        parsed[host] = {"boot_id": "b00t", "samples": metrics.parse_samples(sampler_text(4, 62, 91, pids), "eth0")}
    fig = hygiene.figures(parsed, {"client": [0], "server": [1]}, {"client": {"generator": 2.4}}, None, {}, 1000)
    assert fig["figures"]["foreign_cpu"] > 0.25


def test_steal_and_driver_on_the_same_machine():
    t = sampler_text(2, 0, 10, {}, steal1=4)
    parsed = {"server": {"boot_id": "b00t", "samples": metrics.parse_samples(t, "eth0")}}
    fig = hygiene.figures(parsed, {"server": [1]}, {}, {"boot_id": "b00t", "cpu_s": 0.2}, {}, 1000)
    assert fig["figures"]["steal"] == pytest.approx(0.04) and fig["figures"]["softirq"] == pytest.approx(0.05)
    assert fig["figures"]["foreign_cpu"] == pytest.approx(0.0)  # 10 % busy, 0.2 s of 2 s is the driver's
    other = hygiene.figures(parsed, {"server": [1]}, {}, {"boot_id": "elsewhere", "cpu_s": 0.2}, {}, 1000)
    assert other["figures"]["foreign_cpu"] == pytest.approx(0.1)


def test_quiet_check_counts_other_processes_in_cores():
    t = sampler_text(1, 50, 30, {7: ("sampler", 2)})
    parsed = {"client": {"boot_id": "b00t", "samples": metrics.parse_samples(t, "eth0")}}
    assert quiet.other_cpu(parsed, None) == {"client": pytest.approx(0.78)}
    assert policy.quiet_verdict(0.05, 0.1) and not policy.quiet_verdict(0.78, 0.1)


# --- the sampler and the meter, run here ----------------------------------------------------

def test_sampler_starts_no_process_per_sample_and_reports_its_own_cpu():
    p = subprocess.Popen(metrics.sampler_argv(0.05, {"x": [1]}), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.6)
        children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        p.terminate()
        out, _ = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert children == []  # the process substitution behind the sleep pipe has exited; nothing per sample
    samples = metrics.parse_samples(out, "lo")
    assert len(samples) >= 5 and metrics.boot_id(out)
    roles = {role for role, _ in samples[-1]["pids"].values()}
    assert {"x", "sampler"} <= roles


def test_hiccup_meter_builds_runs_and_sees_a_stop(tmp_path):
    binary = tmp_path / "hiccup"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(hiccup.SOURCE_PATH)], check=True)
    p = subprocess.Popen([str(binary), "1000", "500"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        p.send_signal(19)  # SIGSTOP: the meter cannot run, as in a stall of the machine
        time.sleep(0.03)
        p.send_signal(18)  # SIGCONT
        time.sleep(0.2)
        p.terminate()
        out, _ = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    s = hiccup.parse(out)
    assert s is not None and s["samples"] > 100 and s["max_us"] >= 25_000
    assert any(e[1] >= 25_000 for e in s["events"])
    assert hiccup.stall_total_us(s, 1000) >= 25_000
    assert hiccup.parse("hiccup 1\nsamples 3\n") is None  # torn: no end


# --- redo policy ----------------------------------------------------------------------------

def test_study_policy_keys_are_validated():
    assert policy.parse_redo({"max_attempts": 3}, "s") == {"max_attempts": 3}
    with pytest.raises(ConfigError, match="redo.max_attempts"):
        policy.parse_redo({"max_attempts": 0}, "s")
    with pytest.raises(ConfigError, match="quiet"):
        policy.parse_quiet({"wait": 3}, "s")
    with pytest.raises(ConfigError, match="require"):
        policy.parse_require({"turbo": "off"}, "s")
    assert policy.parse_quiet(None, "s")["max_cpu"] == 0.10


def _disturbed(rid):
    return {"run_id": rid, "status": "invalid", "hygiene": {"disturbed": True, "flags": ["hiccup"]}}


def test_redo_counts():
    recs = [_disturbed("a"), _disturbed("b"), {"run_id": "c", "status": "ok", "hygiene": {"flags": []}},
            {"run_id": "d", "status": "invalid", "hygiene": {"disturbed": False}}]
    c = policy.redo_counts(recs)
    assert (c["runs"], c["disturbed"]) == (4, 2)
    assert c["flagged"] == {"hiccup": 2} and c["flagged_runs"] == 2


def test_not_sustained_is_a_guard_and_not_noise():
    """A median above the bound: invalid, reason "not sustained", decided with the other guards;
    a result of the mode, not noise: never redone (issue 25)."""
    from cnibench.workload import guards as g

    limits = g.GuardLimits()
    slow = {"latency": {"percentiles": {"50": 15_000.0, "90": 40_000.0}}, "target_rate": 1000, "achieved_rate": 1000,
            "counts": {"requests": 5000}}
    checks = g.judge(slow, limits)
    status, reason, _ = g.verdict_of(checks)
    assert status == "invalid" and reason.startswith("not sustained: p50 15.0 ms")
    assert not g.disturbed(checks)  # a mode past its capacity is a result, not noise
    fast = {**slow, "latency": {"percentiles": {"50": 150.0}}}
    assert g.verdict_of(g.judge(fast, limits))[0] == "ok"
    rec = {"status": status, "reason": reason, "hygiene": {"checks": checks, "disturbed": False}}
    assert policy.is_not_sustained(rec) and not policy.is_disturbed(rec)
    # the bound is a guard limit: off, the run stands
    off = g.verdict_of(g.judge(slow, g.GuardLimits(max_run_median_ms=None)))
    assert off[0] == "ok"
