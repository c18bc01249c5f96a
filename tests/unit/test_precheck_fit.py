"""The study fitted to its hosts in the precheck (study/precheck.py): the `cpus` key, the needs
read off a study, the plan placed into the runs' client_cpus/server_cpus, the refit with the
calibrated rates, and an incomplete record's reason. Host facts are the testbed's recorded
output (tests/fixtures/limits/)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cnibench.errors import ConfigError, PlanError
from cnibench.infra.limits import HostFacts, parse_limits, study_fit
from cnibench.infra.topology import parse_topology
from cnibench.study import precheck
from cnibench.study.runner import incomplete_why, spec_fields
from cnibench.study.spec import load_study
from cnibench.workload.specfields import bench_spec

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "limits"
TOPO = Path(__file__).resolve().parents[1] / "fixtures" / "topology"
ROOT = Path(__file__).resolve().parents[2]
INVENTORY = SimpleNamespace(client=SimpleNamespace(name="client"), server=SimpleNamespace(name="server"))


def recorded(role: str, **lim) -> HostFacts:
    topo = parse_topology((FIX / f"testbed-{role}.topology").read_text())
    return HostFacts(role, role, "eth0", topo, replace(parse_limits((FIX / f"testbed-{role}.limits").read_text()), **lim))


def study_file(tmp_path: Path, **workload) -> Path:
    p = tmp_path / "s.yml"
    p.write_text(yaml.safe_dump({"name": "s", "inventory": "../inventories/testbed.yml", "modes": ["host"],
                                 "sizes": ["small"], "load": {"rates": [1000, 30000]}, "workload": workload}))
    return p


def fit(study, hosts, testbed=True, rates=None) -> precheck.StudyFit:
    needs = precheck.study_needs(study, testbed, {}, rates)
    return precheck.StudyFit(needs, hosts, study_fit(needs, hosts))


def test_cpus_setting_defaults_and_precedence():
    assert precheck.cpus_setting({}, testbed=True) == {"client": (0,), "server": (1,)}
    assert precheck.cpus_setting({}, testbed=False) == "auto"
    assert precheck.cpus_setting({"cpus": "auto"}, testbed=True) == "auto"
    assert precheck.cpus_setting({"cpus": "2-3"}, testbed=False) == (2, 3)
    assert precheck.cpus_setting({"cpus": "auto", "client_cpus": [1]}, testbed=False) == {"client": (1,), "server": (1,)}
    assert precheck.cpus_setting({"pin": False, "cpus": "auto"}, testbed=False) is None


def test_an_unknown_cpus_value_is_one_clear_message(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_study(study_file(tmp_path, cpus="automatic"))
    assert "workload.cpus" in str(e.value) and "'automatic' is not a CPU setting" in str(e.value)
    load_study(study_file(tmp_path, cpus={"client": [0], "server": "1"}))  # accepted


def test_the_study_key_never_reaches_the_bench_spec(tmp_path):
    st = load_study(study_file(tmp_path, cpus="auto"))
    assert bench_spec({**st.workload, "mode": "host", "size": "small", "rate": 10}).client_cpus == (0,)


def test_paper_needs_and_its_refusal_on_the_testbed():
    st = load_study(ROOT / "studies" / "paper.yml")
    assert st.workload["cpus"] == "auto"
    sf = fit(st, [recorded("client"), recorded("server")])
    assert sf.needs.cpus == "auto" and sf.needs.threads == 18 and sf.needs.connections == 4500
    with pytest.raises(PlanError) as e:
        precheck.refuse_unfit(sf)
    assert str(e.value).count("\n  - ") == 1 and "need 36 physical cores" in str(e.value)


def test_the_plan_is_placed_into_every_run(tmp_path):
    """Real hosts (the recorded 2-socket 36-thread tree): each host's plan, then the testbed's."""
    import subprocess

    from cnibench.infra.topology import topology_argv

    out = subprocess.run(topology_argv("ens1f0", str(TOPO / "two-socket-36")), capture_output=True, text=True, check=True)
    big = [replace(recorded(r), topology=parse_topology(out.stdout), nic="ens1f0") for r in ("client", "server")]
    sf = fit(load_study(study_file(tmp_path, cpus="auto", threads=4, nginx_workers=3)), big, testbed=False)
    assert sf.placement(INVENTORY) == {"client_cpus": [13, 14, 15, 16], "server_cpus": [13, 14, 15]}
    st = load_study(study_file(tmp_path, cpus="auto"))
    sf = fit(st, [recorded("client"), recorded("server")], testbed=True)
    placed = precheck.placed(st, sf, INVENTORY)
    assert "cpus" not in placed.workload
    assert placed.workload["client_cpus"] == [0] and placed.workload["server_cpus"] == [1]
    run = SimpleNamespace(mode="host", size="small", target_rate=1000.0)
    spec = bench_spec(spec_fields(placed, run))
    assert spec.client_cpus == (0,) and spec.server_cpus == (1,)
    d = sf.to_dict()
    assert d["plans"]["client"]["threads"] == [0] and d["irqbalance"] == {"client": False, "server": False}


def test_two_server_side_hosts_get_their_own_plan_on_real_hosts(tmp_path):
    st = load_study(study_file(tmp_path))
    sf = fit(st, [recorded("client"), recorded("server")], testbed=False)
    assert sf.placement(INVENTORY) == {"client_cpus": [0], "server_cpus": [0]}  # separate machines


def test_the_calibrated_rates_are_checked_again(tmp_path):
    p = tmp_path / "f.yml"
    p.write_text(yaml.safe_dump({"name": "f", "inventory": "../inventories/testbed.yml", "modes": ["host"],
                                 "sizes": ["small"], "load": {"fractions": [0.5, 0.9]}}))
    st = load_study(p)
    first = fit(st, [recorded("client", nofile_soft=256, nofile_hard=256), recorded("server")])
    assert first.fit.problems == [] and first.needs.connections == 10  # fractions: rates not known yet
    again = precheck.refit(first, st, [20000.0, 36000.0])
    assert again.needs.rates == (20000.0, 36000.0) and again.needs.connections == 360
    with pytest.raises(PlanError, match="360 connections need 424 open files; the hard limit is 256"):
        precheck.refuse_unfit(again)


def test_an_incomplete_record_says_why_in_the_users_terms():
    rec = {"target_rate": 450000, "reason": "", "counts": {"requests": 120, "ok": 0, "errors": 120, "timeouts": 0}}
    why = incomplete_why(rec, ["no latency histogram in a run that did not fail"])
    assert why.startswith("failed: no latency was measured at 450,000 req/s: 0 of 120 requests answered (120 errors")
    assert "invoke hosts.check --study" in why
    assert incomplete_why({}, ["missing 'counts'"]) == "failed: the workload returned an incomplete record (missing 'counts')"


def test_the_testbed_options_a_second_client_and_an_sshd_limit(tmp_path):
    from cnibench.infra import config, testbed

    hosts = testbed.testbed_hosts(["client", "client2", "server"], clients=2)
    assert [h.role for h in hosts] == ["client", "client", "server"]
    assert [h.data_address for h in hosts] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    assert [h.role for h in testbed.testbed_hosts()] == ["client", "server"]
    for bad in (0, 2, True):
        with pytest.raises(testbed.TestbedError, match="can be clients"):
            testbed.testbed_hosts(["client", "server"], clients=bad)
    marker = tmp_path / "m.yml"
    marker.write_text(yaml.safe_dump({"testbed": {"hosts": ["client", "client2", "server"], "clients": 2,
                                                  "sshd_nofile": 256}}))
    assert config.testbed_options(marker) == {"sshd_nofile": 256, "clients": 2}
    assert config.testbed_hosts(marker) == ["client", "client2", "server"]


def _two_client_fleet():
    hosts = [SimpleNamespace(name="client", role="client"), SimpleNamespace(name="client2", role="client"),
             SimpleNamespace(name="server", role="server")]
    return SimpleNamespace(clients=lambda: ["client", "client2"]), SimpleNamespace(hosts=hosts, testbed=True)


@pytest.mark.parametrize("data,says", [
    ({"modes": ["host", "macvlan"]}, "its modes macvlan put their container on the first client only"),
    ({"modes": ["host"], "load": {"fractions": [0.3]}}, "its loads are fractions of a maximum"),
    ({"modes": ["host"], "workload": {"generator": "h2load"}}, "its generator is h2load"),
])
def test_several_clients_run_only_a_host_study_at_absolute_rates(tmp_path, data, says):
    from cnibench.study.spec import parse_study

    fleet, _ = _two_client_fleet()
    base = {"name": "s", "sizes": ["small"], "load": {"rates": [1000]}}
    study = parse_study({**base, **data}, str(tmp_path / "s.yml"))
    with pytest.raises(PlanError, match="the inventory names 2 client hosts \\(client, client2\\)") as e:
        precheck._check_clients(fleet, study)
    assert says in str(e.value)
    precheck._check_clients(fleet, parse_study({**base, "modes": ["host"]}, str(tmp_path / "s.yml")))  # runs
    precheck._check_clients(SimpleNamespace(clients=lambda: ["client"]), study)  # one client: nothing to refuse


def test_each_testbed_client_gets_the_next_cpu_and_a_real_client_its_own_plan():
    _, inventory = _two_client_fleet()
    hosts = [recorded("client"), recorded("server")]
    sf = precheck.StudyFit(None, hosts, SimpleNamespace(plans={}))
    assert sf.client_cpus(inventory) == {"client": (0,), "client2": (1,)}  # the 2-core testbed: 0, then nginx's 1
    plans = {"client": SimpleNamespace(threads=(2, 4)), "client2": SimpleNamespace(threads=(6,))}
    real = SimpleNamespace(hosts=inventory.hosts, testbed=False)
    assert precheck.StudyFit(None, hosts, SimpleNamespace(plans=plans)).client_cpus(real) == {"client": (2, 4),
                                                                                              "client2": (6,)}
    one = SimpleNamespace(hosts=inventory.hosts[::2], testbed=True)
    assert sf.client_cpus(one) is None
