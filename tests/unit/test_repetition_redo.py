"""Redo without selection bias (issue 25): a disturbed repetition is redone whole at the end of
the study (never a single run), within budget_s; a session killed in a redo is finished by the
next without losing or repeating a run; the analysis gets one complete attempt per repetition.
The real run_all with the hosts faked at the edge (test_run_owner.py's fakes); the guard
defaults are one set for bench, calibrate and the studies; "disturbed" reads the generator's
core only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnibench import pipeline, results
from cnibench.study import attempts, matrix, redo
from cnibench.study.spec import load_study, parse_study
from cnibench.study.store import RecordStore
from cnibench.workload import guards, hygiene, metrics
from cnibench.workload.guards import GuardLimits

from test_run_owner import Counts, _fake_hosts, _ok_record
import cnibench.workload.session as session

ROOT = Path(__file__).resolve().parents[2]


class Killed(BaseException):
    """A SIGKILL stand-in: nothing after it runs in the session."""


def _disturbed(rec: dict) -> dict:
    return {**rec, "status": "invalid", "reason": "invalid: steal time on the generator's core 4.0% (limit 2.0%)",
            "hygiene": {"disturbed": True, "flags": [], "checks": []}}


def _bench(log: list, disturb: set, kill_at: int | None = None):
    """A BenchSession whose runs are ok except the (run_id, first call) in `disturb`; it records
    every run it measures in `log` and raises Killed on measuring run number `kill_at`."""
    class Bench:
        def __init__(self, *a):
            pass

        async def run(self, spec_, **kw):
            if kill_at is not None and len(log) + 1 == kill_at:
                raise Killed()
            rid = kw["run_id"]
            first = rid not in {r for r, _ in log}
            log.append((rid, kw["repetition"]))
            rec = _ok_record(spec_, **kw)
            return _disturbed(rec) if first and rid in disturb else rec

        async def close(self):
            pass
    return Bench


def _files(tmp_path, **study_keys):
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"name": "fake", "hosts": [
        {"name": "client", "role": "client", "address": "127.0.0.1", "user": "root", "agent": True, "data_interface": "lo"},
        {"name": "server", "role": "server", "address": "127.0.0.2", "user": "root", "agent": True, "data_interface": "lo"}]}))
    study_file = tmp_path / "s.yml"
    study_file.write_text(yaml.safe_dump({
        "name": "s", "inventory": str(inv), "modes": ["host", "macvlan"], "sizes": ["small", "large"], "twin": True,
        "load": {"rates": [1000]}, "repetitions": 3, "notebooks": "none", "quiet": {"max_wait_s": 0}, "seed": 7,
        "workload": {"duration_s": 1, "warmup_s": 0.5}, "redo": {"max_attempts": 2}, **study_keys}))
    return study_file, inv


def _run_all(tmp_path, monkeypatch, bench, study_file, inv):
    _fake_hosts(monkeypatch, Counts())
    monkeypatch.setattr(session, "BenchSession", bench)
    return pipeline.run_all(str(study_file), str(inv), raw_dir=tmp_path / "raw", runs_dir=tmp_path / "runs",
                            reports_dir=tmp_path / "reports", out=lambda *_: None, progress=False)


def _plan(study_file):
    study = load_study(study_file)
    return study, matrix.plan(study)


def test_a_disturbed_run_redoes_its_whole_repetition_at_the_end_never_the_run_alone(tmp_path, monkeypatch):
    study_file, inv = _files(tmp_path)
    study, runs = _plan(study_file)
    victim = next(r for r in runs if r.repetition == 2 and r.arm == "macvlan")
    log: list = []
    summary = _run_all(tmp_path, monkeypatch, _bench(log, {victim.run_id}), study_file, inv)
    rep2 = [r.run_id for r in runs if r.repetition == 2]
    first, again = log[:len(runs)], log[len(runs):]
    assert [rid for rid, _ in first] == [r.run_id for r in runs]  # the plan first, nothing redone in place
    assert sorted(rid for rid, _ in again) == sorted(rep2)  # then every arm of repetition 2, once
    assert {k for _, k in again} == {2} and summary["redone"] == len(rep2)
    assert summary["redone_repetitions"] == [[2, 2]]
    assert [rid for rid, _ in again] == [r.run_id for r in attempts.redo_runs(study, runs, 2, 2)]  # its seeded order
    store = RecordStore(tmp_path / "raw", "s")
    assert results.read_record(store.path(victim.run_id))["status"] == "invalid"  # attempt 1 stays as it was
    redo_files = sorted((tmp_path / "raw" / "s").rglob("attempts/redo2-rep2.json"))
    assert len(redo_files) == len(rep2)
    assert len(list(store.records())) == len(runs)  # a reader of rep*.json sees first attempts only
    # the analysis's hook: repetition 2 from attempt 2, the others from attempt 1, one record per run
    assert attempts.chosen_attempts(store.all_attempts()) == {1: 1, 2: 2, 3: 1}
    paths = store.analysis_paths()
    assert len(paths) == len(runs) and sum(p.name == "redo2-rep2.json" for p in paths) == len(rep2)
    assert all(results.read_record(p)["status"] == "ok" for p in paths)
    # `invoke status`: the redo counts by arm (every arm of the repetition once, none disturbed in use)
    from cnibench.study.status import format_status, study_status

    rows = study_status(study_file, tmp_path / "raw")
    assert {(r["mode"], r["size"]): (r["redone"], r["redo_runs"], r["disturbed"]) for r in rows} == {
        (arm, size): (1, 1, 0) for arm in ("host", "macvlan", "host·A/A") for size in ("small", "large")}
    assert "redo_runs" in format_status(rows).splitlines()[0]


def test_budget_stops_the_redo_and_says_why(tmp_path, monkeypatch):
    study_file, inv = _files(tmp_path, budget_s=5)
    study, runs = _plan(study_file)
    victim = next(r for r in runs if r.repetition == 1)
    log: list = []
    summary = _run_all(tmp_path, monkeypatch, _bench(log, {victim.run_id}), study_file, inv)
    assert len(log) == len(runs) and summary["redone"] == 0  # the plan, no redo
    assert "not redone: it would exceed budget_s 5 s" in summary["budget_stop"]
    assert attempts.chosen_attempts(RecordStore(tmp_path / "raw", "s").all_attempts())[1] == 1


def test_redo_allowed_is_the_budget_less_elapsed_and_what_follows():
    study = parse_study({"modes": ["host"], "load": {"rates": [1000]}, "workload": {"duration_s": 4, "warmup_s": 1},
                         "notebooks": "none", "budget_s": 100}, "st.yml")
    runs = matrix.plan(study)
    costs = matrix.Costs(per_run_s=0.0, per_block_s=0.0, quiet_check_s=0.0)
    assert redo.redo_allowed(study, runs, 80.0, 5.0, costs) == (True, 5.0, 15.0)
    assert redo.redo_allowed(study, runs, 91.0, 5.0, costs)[0] is False
    free = parse_study({"modes": ["host"], "load": {"rates": [1000]}}, "st.yml")
    assert redo.redo_allowed(free, runs, 1e9, 0.0)[0] is True  # no budget_s: no cap


def test_quiet_waits_get_only_the_room_the_budget_leaves_after_the_runs_still_to_do():
    study = parse_study({"modes": ["host"], "load": {"rates": [1000]}, "budget_s": 1200}, "st.yml")
    assert redo.quiet_wait_cap(study, 100.0, 900.0, 35.0) == 165.0  # a lab study's room at its start
    assert redo.quiet_wait_cap(study, 400.0, 790.0, 35.0) == 0.0  # used up by waits: look once, measure
    free = parse_study({"modes": ["host"], "load": {"rates": [1000]}}, "st.yml")
    assert redo.quiet_wait_cap(free, 1e9, 1e9, 0.0) is None  # no budget_s: the study's own max_wait_s


def test_resume_after_a_kill_in_a_redo_block_neither_loses_nor_repeats_a_run(tmp_path, monkeypatch):
    study_file, inv = _files(tmp_path)
    study, runs = _plan(study_file)
    victim = next(r for r in runs if r.repetition == 3 and r.arm == "host")
    rep3 = [r.run_id for r in runs if r.repetition == 3]
    log: list = []
    kill_at = len(runs) + 4  # the redo's fourth run: its first block done, the second half done
    with pytest.raises(Killed):
        _run_all(tmp_path, monkeypatch, _bench(log, {victim.run_id}, kill_at), study_file, inv)
    store = RecordStore(tmp_path / "raw", "s")
    before = {p: p.read_bytes() for p in (tmp_path / "raw" / "s").rglob("redo2-rep3.json")}
    assert len(before) == 3
    log2: list = []
    summary = _run_all(tmp_path, monkeypatch, _bench(log2, set()), study_file, inv)
    assert summary["executed"] == len(rep3) - 3 and len(log2) == len(rep3) - 3  # only what the redo lacked
    assert {rid for rid, _ in log2} == set(rep3) - {rid for rid, _ in log[len(runs):]}
    assert all(p.read_bytes() == b for p, b in before.items())  # written once, never again
    redo_recs = [r for r in store.all_attempts() if attempts.attempt_of(r) == 2]
    assert sorted(r["run_id"] for r in redo_recs) == sorted(rep3)  # each run once: none lost, none repeated
    assert len(list(store.records())) == len(runs)
    assert attempts.chosen_attempts(store.all_attempts()) == {1: 1, 2: 1, 3: 2}


def test_next_redo_pure_rules():
    study = parse_study({"modes": ["host", "macvlan"], "load": {"rates": [1000]}, "repetitions": 2, "seed": 3},
                        "st.yml")
    runs = matrix.plan(study)

    def rec(r, attempt=1, bad=False):
        out = {"run_id": r.run_id, "repetition": r.repetition, "arm": r.arm, "status": "invalid" if bad else "ok",
               "hygiene": {"disturbed": bad}}
        return {**out, attempts.REDO_KEY: attempt} if attempt > 1 else out

    quiet = [rec(r) for r in runs]
    assert attempts.next_redo(study, runs, quiet, 2) is None
    noisy = [rec(r, bad=r.repetition == 2 and r.arm == "host") for r in runs]
    k, a, todo = attempts.next_redo(study, runs, noisy, 2)
    assert (k, a) == (2, 2) and sorted(t.run_id for t in todo) == sorted(r.run_id for r in runs if r.repetition == 2)
    assert all(t.attempt == 2 for t in todo)
    assert attempts.next_redo(study, runs, noisy, 1) is None  # max_attempts 1: never redone
    # an incomplete attempt is finished first, and never chosen
    part = noisy + [rec(todo[0], 2)]
    assert attempts.next_redo(study, runs, part, 2) == (2, 2, todo[1:])
    assert attempts.chosen_attempts(part)[2] == 1
    # the redo disturbed too: out of attempts, attempt 1 stays the one used
    both = noisy + [rec(t, 2, bad=True) for t in todo]
    assert attempts.next_redo(study, runs, both, 2) is None and attempts.chosen_attempts(both)[2] == 1
    assert attempts.next_redo(study, runs, both, 3)[:2] == (2, 3)
    counts = attempts.redo_counts(both)
    assert counts["host"] == {"redone": 1, "redo_runs": 1, "disturbed": 2}


def test_guard_defaults_are_one_set_for_bench_calibrate_and_the_studies():
    from cnibench.study.runner import spec_fields
    from cnibench.workload import calibrate, cli
    from cnibench.workload.specfields import bench_spec

    bench = cli.bench_spec("host", "small", 20000, 6, 1, None, "openloop", 1, 0, False, False)
    cal = cli.bench_spec("host", "small", 1000, 3, 1, None, "openloop", 1, 0, False, True)  # `invoke calibrate`'s
    lab = load_study(ROOT / "studies" / "lab.yml")
    study = bench_spec(spec_fields(lab, matrix.plan(lab, {"small": 1e4, "large": 1e4})[0])).guard
    assert bench.guard == cal.guard == study == GuardLimits()
    assert calibrate.probe_spec(cal, 3.0, 1.0).guard == GuardLimits()  # the probes too (send lag already off)
    assert GuardLimits().max_hiccup_total_us is None and GuardLimits().max_send_lag_p99_us is None
    # a study may still override them
    strict = parse_study({"modes": ["host"], "load": {"rates": [1000]}, "workload": {"guard": {"max_steal": 0.01}}}, "s.yml")
    assert bench_spec(spec_fields(strict, matrix.plan(strict)[0])).guard.max_steal == 0.01


def _stat(t: int, steal0: int, steal1: int) -> str:
    return (f"cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 {50 * t} 0 0 {(50 - steal0) * t} 0 0 0 {steal0 * t} 0 0\n"
            f"cpu1 {40 * t} 0 0 {(60 - steal1) * t} 0 0 0 {steal1 * t} 0 0\nintr 1\nctxt 1\n")


def _sampler(seconds: int, steal0: int, steal1: int, pids: dict) -> str:
    out = ["@@boot b00t\n"]
    for t in range(seconds + 1):
        lines = "".join(f"{role} {pid} {per_s * t}\n" for pid, (role, per_s) in pids.items())
        out.append(f"@@sample {100 + t}.00\n@@stat\n{_stat(t, steal0, steal1)}@@netdev\n@@snmp\n@@pids\n{lines}@@end\n")
    return "".join(out)


def test_disturbed_ignores_the_server_cores_steal_and_the_send_lag():
    # one machine (the testbed): generator on cpu0 (50 % busy, its own), nginx on cpu1 (40 %) with 8 % steal
    text = {"client": _sampler(4, 0, 8, {}), "server": _sampler(4, 0, 8, {20: ("nginx", 40)})}
    parsed = {h: {"boot_id": metrics.boot_id(t), "samples": metrics.parse_samples(t, "eth0")} for h, t in text.items()}
    pinned = {"client": [0], "server": [1]}
    fig = hygiene.figures(parsed, pinned, {"client": {"generator": 2.0}}, None, {}, 1000, generator_host="client")
    f = fig["figures"]
    assert f["steal"] == 0.0 and f["server_steal"] == pytest.approx(0.08) and f["pinned_steal"] == pytest.approx(0.04)
    assert f["foreign_cpu"] == pytest.approx(0.0, abs=0.005) and f["server_foreign_cpu"] == pytest.approx(0.0, abs=0.005)
    rec = {"target_rate": 1000, "achieved_rate": 1000, "counts": {"requests": 5000},
           "latency": {"percentiles": {"50": 100.0}, "send_lag": {"percentiles": {"99": 5000, "99.9": 9000}}},
           "hygiene": {"figures": f}}
    checks = guards.judge(rec, GuardLimits())
    assert not guards.disturbed(checks) and guards.verdict_of(checks)[0] == "ok"
    assert {c["guard"]: c["verdict"] for c in checks}["send_lag"] == "flag"  # shown, not judged
    # the same steal on the generator's core is disturbed
    gen = {"client": _sampler(4, 8, 0, {}), "server": _sampler(4, 8, 0, {20: ("nginx", 40)})}
    parsed = {h: {"boot_id": metrics.boot_id(t), "samples": metrics.parse_samples(t, "eth0")} for h, t in gen.items()}
    f2 = hygiene.figures(parsed, pinned, {"client": {"generator": 2.0}}, None, {}, 1000, generator_host="client")["figures"]
    assert f2["steal"] == pytest.approx(0.08) and guards.disturbed(guards.judge({**rec, "hygiene": {"figures": f2}}, GuardLimits()))


def test_report_notebooks_renders_the_missing_run_notebooks_once(tmp_path):
    """`invoke report --notebooks`: lab.yml leaves the run notebooks out of run-all's wall time;
    this renders those its records lack (a real kernel), and nothing the second time."""
    import numpy as np

    from cnibench.analysis import synthetic
    from cnibench.study.run_notebooks import render_study_notebooks
    from cnibench.study.runbook import notebook_path

    rng = np.random.default_rng(5)
    ok = synthetic.make_record("nb", "host", "small", 0.3, 1, synthetic.Truth(), rng, duration_s=1)
    failed = {**synthetic.make_record("nb", "host", "small", 0.3, 2, synthetic.Truth(), rng, duration_s=1),
              "status": "failed", "reason": "failed: no mode"}
    raw, runs = tmp_path / "raw", tmp_path / "runs"
    for rec in (ok, failed):
        results.write_record(raw, rec)
    lines: list = []
    assert render_study_notebooks("nb", raw, runs, out=lines.append) == 1  # a failed run has nothing to plot
    assert notebook_path(runs, ok["run_id"]).exists() and not notebook_path(runs, failed["run_id"]).exists()
    assert render_study_notebooks("nb", raw, runs, out=lines.append) == 0
    assert lines[-1].startswith("run notebooks: 0 rendered")
