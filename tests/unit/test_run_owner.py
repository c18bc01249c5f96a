"""One owner for a run (issue 22): per `run-all`, the study file and the inventory are loaded
once, the lease is taken once per host, each host gets at most two SSH connections (the study's
fleet, and the lease's own for its heartbeat thread), and each planned run's spec is validated
once. The hosts' side is faked at the edge (asyncssh.connect, mode up/down, the workload session);
the pipeline, the study runner, the planner, the store and the lease's bookkeeping are real."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import yaml

from cnibench import pipeline, results
from cnibench.infra import config, hosts, lease
from cnibench.study import precheck, spec, study_run


class Counts(Counter):
    def wrap(self, key, fn):
        def counted(*a, **k):
            self[key] += 1
            return fn(*a, **k)
        return counted


def _ok_record(spec_, **kw):
    h = results.new_histogram()
    h.record_value(120)
    return results.new_record(
        run_id=kw["run_id"], study=kw["study"], mode=spec_.mode, size=spec_.size, target_rate=float(spec_.rate),
        load_fraction=kw.get("load_fraction"), repetition=kw["repetition"], generator="openloop",
        settings={"duration_s": spec_.duration_s, "warmup_s": spec_.warmup_s}, status="ok", achieved_rate=float(spec_.rate),
        latency={**results.empty_latency(), "histogram": results.encode_histogram(h), "percentiles": results.percentile_table(h)})


class FakeBench:
    def __init__(self, fleet, endpoint, limits):
        pass

    async def run(self, spec_, **kw):
        return _ok_record(spec_, **kw)

    async def close(self):
        pass


def _fake_hosts(monkeypatch, counts):
    import cnibench.modes as modes
    import cnibench.modes.clean as clean
    import cnibench.workload.bench as bench
    import cnibench.workload.quiet as quiet
    import cnibench.workload.session as session

    class Conn:  # an SSH connection that is never used: everything that would use it is faked
        def close(self):
            pass

        async def wait_closed(self):
            pass

    async def connect(**options):
        counts[f"ssh:{options['host']}"] += 1
        return Conn()

    async def nothing(*a, **k):
        return None

    async def no_leftovers(host):
        return []

    async def endpoint(*a, **k):
        return object()

    async def op(self, host, op, seen=""):
        return ("RELEASED", None, "")

    async def acquire_all(self, fleet):
        for h in fleet:
            counts[f"lease:{h.name}"] += 1

    async def no_reports(fleet, require=None):
        return []

    monkeypatch.setattr(hosts.asyncssh, "connect", connect)
    monkeypatch.setattr(lease.Lease, "_op", op)
    monkeypatch.setattr(lease.Lease, "_acquire_all", acquire_all)
    monkeypatch.setattr(precheck, "check_fleet", no_reports)
    monkeypatch.setattr(precheck, "read_study_fit", recorded_fit)
    monkeypatch.setattr(clean, "sweep_workload", no_leftovers)
    monkeypatch.setattr(modes, "mode_down", nothing)
    monkeypatch.setattr(modes, "mode_up", endpoint)
    monkeypatch.setattr(quiet, "wait_quiet", nothing)
    monkeypatch.setattr(bench, "probe_limits", nothing)
    monkeypatch.setattr(session, "BenchSession", FakeBench)
    monkeypatch.setattr(study_run, "calibrated_max_rates", nothing)
    monkeypatch.setattr(study_run, "gather_host_facts", lambda fleet: _facts())
    monkeypatch.setattr(study_run, "git_state", lambda: {})
    monkeypatch.setattr(pipeline, "analyse", lambda *a, **k: Path("report.html"))


async def _facts():
    return {}


async def recorded_fit(fleet, study, testbed, rates=None):
    """The study fitted to the testbed's recorded facts (tests/fixtures/limits/)."""
    from cnibench.infra.limits import HostFacts, parse_limits, study_fit
    from cnibench.infra.topology import parse_topology

    fix = Path(__file__).resolve().parents[1] / "fixtures" / "limits"
    hosts = [HostFacts(h.name, h.spec.role, "eth0", parse_topology((fix / f"testbed-{h.spec.role}.topology").read_text()),
                       parse_limits((fix / f"testbed-{h.spec.role}.limits").read_text())) for h in fleet]
    needs = precheck.study_needs(study, testbed, {}, rates)
    return precheck.StudyFit(needs, hosts, study_fit(needs, hosts))


def _count_loads(monkeypatch, counts):
    import cnibench.workload.bench as bench

    monkeypatch.setattr(pipeline, "load_study", counts.wrap("study", spec.load_study))
    monkeypatch.setattr(study_run, "load_study", counts.wrap("study", spec.load_study))
    monkeypatch.setattr(spec, "load_study", counts.wrap("study", spec.load_study))
    inv = counts.wrap("inventory", config.load_inventory)
    for mod in (config, study_run):
        monkeypatch.setattr(mod, "load_inventory", inv)
    import cnibench.study.status as status

    monkeypatch.setattr(status, "load_inventory", inv)
    monkeypatch.setattr(bench, "validate_spec", counts.wrap("validate", bench.validate_spec))


def test_one_run_all_loads_once_leases_once_and_validates_each_run_once(tmp_path, monkeypatch):
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"name": "fake", "hosts": [
        {"name": "client", "role": "client", "address": "127.0.0.1", "user": "root", "agent": True, "data_interface": "lo"},
        {"name": "server", "role": "server", "address": "127.0.0.2", "user": "root", "agent": True, "data_interface": "lo"}]}))
    study_file = tmp_path / "s.yml"
    study_file.write_text(yaml.safe_dump({
        "name": "s", "inventory": str(inv), "modes": ["host", "macvlan"], "sizes": ["small"], "twin": True,
        "load": {"rates": [1000, 2000]}, "repetitions": 2, "notebooks": "none", "quiet": {"max_wait_s": 0},
        "workload": {"duration_s": 1, "warmup_s": 0.5}}))
    counts = Counts()
    _fake_hosts(monkeypatch, counts)
    _count_loads(monkeypatch, counts)
    summary = pipeline.run_all(str(study_file), str(inv), raw_dir=tmp_path / "raw", runs_dir=tmp_path / "runs",
                               reports_dir=tmp_path / "reports", out=lambda *_: None, progress=False)
    planned = 3 * 2 * 2  # (host, macvlan, host's A/A twin) x 2 rates x 2 repetitions
    assert summary["planned"] == planned and summary["ok"] == planned
    assert counts["study"] == 1 and counts["inventory"] == 1
    assert counts["lease:client"] == 1 and counts["lease:server"] == 1
    # two per host: the study's fleet, and the lease's own (its heartbeat thread has its own loop)
    assert counts["ssh:127.0.0.1"] <= 2 and counts["ssh:127.0.0.2"] <= 2, counts
    # once per planned run (runner.check_runs), plus the study file's own check when it is
    # loaded (spec._check_workload: once per distinct rate, before any host is contacted)
    assert counts["validate"] == planned + 2
    recs = list(results.iter_records(tmp_path / "raw", "s"))
    assert len(recs) == planned
    twins = [r for r in recs if r["arm"] == "host·A/A"]
    assert len(twins) == 4 and {r["mode"] for r in twins} == {"host"}
    assert all("/host-A-A/" in r["run_id"] for r in twins)


def test_study_has_one_caller_of_the_record_writer():
    """Only store.py writes run records in study/ (results.write_record or write_once_text)."""
    pkg = Path(study_run.__file__).parent
    callers = []
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name == "write_record":
                    callers.append(f"{path.name}:{node.lineno}")
    assert len(callers) == 1 and callers[0].startswith("store.py:"), callers
