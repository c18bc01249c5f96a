"""Issue 12, items 5, 8 and 9 without hosts: bounded, typed inputs refused with one message
before anything starts; a first study file runs with documented defaults; a bug is never a
run's recorded reason; a session where every run failed is reported."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cnibench.study import matrix
from cnibench.errors import ConfigError, HostError, PlanError
from cnibench.modes import MODES, get_mode
from cnibench.modes.base import SettingError
from cnibench.modes.kinds.docker_bridge import check_published_port
from cnibench.modes.engine.facts import check_ssh_path
from cnibench.pipeline import all_failed
from cnibench.study.runner import check_runs, measure, spec_fields
from cnibench.study.spec import parse_study, study_name_arg
from cnibench.workload import defaults, nginx
from cnibench.workload.bench import BenchSpec, validate_spec

ROOT = Path(__file__).resolve().parents[2]
FIRST = {"name": "first", "modes": ["host"], "sizes": ["small"], "load": {"rates": [1000]}}


def study(**over):
    return parse_study({**FIRST, **over}, Path("/x/first.yml"))


def refused(**over) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        study(**over)
    return err.value


# --- item 8: the four-line study ----------------------------------------------------------------

def test_four_line_study_runs_with_documented_defaults():
    s = study()
    run = matrix.plan(s)[0]
    fields = spec_fields(s, run)
    assert fields["duration_s"] == defaults.DURATION_S == 10 and fields["warmup_s"] == defaults.WARMUP_S == 2
    assert fields["connections"] == 10  # max(10, ceil(1000/100))
    validate_spec(BenchSpec(**fields))  # a complete, valid spec: no TypeError at run time
    check_runs(s, matrix.plan(s))


@pytest.mark.parametrize("rate,conns", [(1, 10), (999, 10), (1000, 10), (1001, 11), (50_000, 500), (1e9, defaults.MAX_CONNECTIONS)])
def test_default_connections_follow_the_rate(rate, conns):
    assert defaults.default_connections(rate) == conns


def test_an_internal_error_is_not_a_recorded_reason_but_a_host_failure_is():
    s = study()
    run = matrix.plan(s)[0]

    class Session:
        def __init__(self, exc):
            self.exc = exc

        async def run(self, spec, **kw):
            raise self.exc

    from cnibench.study.runner import RunContext
    from cnibench.study.store import RecordStore

    ctx = lambda exc: RunContext(s, RecordStore("unused", s.name), bench=Session(exc))  # noqa: E731
    go = lambda exc: asyncio.run(measure(ctx(exc), run, spec_fields(s, run)))  # noqa: E731
    with pytest.raises(TypeError):
        go(TypeError("BenchSpec.__init__() missing 3 required positional arguments"))
    rec = go(HostError("client", "connection lost"))
    assert rec["status"] == "failed" and "connection lost" in rec["reason"]


def test_a_session_where_every_run_failed_is_reported():
    assert all_failed({"executed": 0, "failed": 0}) is None
    assert all_failed({"executed": 3, "failed": 2, "ok": 1}) is None
    msg = all_failed({"executed": 3, "failed": 3, "first_failure": "r1: failed: nginx died", "raw_dir": "/d"})
    assert "every run of this session failed (3 of 3)" in msg and "nginx died" in msg


# --- item 9: bounds and types -------------------------------------------------------------------

SPEC = BenchSpec(mode="host", size="small", rate=1000.0, duration_s=4.0, warmup_s=1.0, connections=8)


@pytest.mark.parametrize("change,key,words", [
    ({"rate": float("inf")}, "rate", "not a finite number"),
    ({"rate": float("nan")}, "rate", "not a finite number"),
    ({"rate": 1e12}, "rate", "more than"),
    ({"rate": "1000"}, "rate", "not a finite number"),
    ({"duration_s": 1e6}, "duration_s", "more than 3600s"),
    ({"warmup_s": 1e4, "duration_s": 3600.0}, "warmup_s", "more than 600s"),
    ({"connections": 70_000, "rate": 1e6}, "connections", "ip_local_port_range"),
    ({"connections": 8.5}, "connections", "not a whole number"),
    ({"connections": True}, "connections", "not a whole number"),
    ({"threads": 300, "connections": 6000, "rate": 1e5}, "threads", "more than 256"),
    ({"pin": "yes"}, "pin", "not true or false"),
    ({"server_cpus": (-1,)}, "server_cpus", "not a list of CPU numbers"),
])
def test_bench_spec_bounds(change, key, words):
    with pytest.raises(ConfigError) as err:
        validate_spec(replace(SPEC, **change))
    assert err.value.key == key and words in str(err.value), str(err.value)


@pytest.mark.parametrize("over,key,words", [
    ({"load": {"rates": [float("inf")]}}, "load.rates[0]", "not a positive number"),
    ({"load": {"rates": [1e12]}}, "load.rates[0]", "more than"),
    ({"load": {"fractions": [float("nan")]}}, "load.fractions[0]", "not a positive number"),
    ({"workload": {"connections": 70000}}, "workload.connections", "ip_local_port_range"),
    ({"workload": {"duration_s": 86400}}, "workload.duration_s", "more than"),
    ({"workload": {"timeout_s": "10"}}, "workload.timeout_s", "not a finite number"),
    ({"mode_settings": {"host": {"service_port": "8080; include /etc/shadow"}}}, "mode_settings.host.service_port", "not a whole number"),
    ({"mode_settings": {"host": {"service_port": 70000}}}, "mode_settings.host.service_port", "from 1 to 65535"),
    ({"modes": ["docker-bridge"], "reference": "docker-bridge", "mode_settings": {"docker-bridge": {"published_port": 22}}},
     "mode_settings.docker-bridge.published_port", "SSH"),
    ({"mode_settings": {"host": {"cluster_cidr": 10}}}, "mode_settings.host.cluster_cidr", "not an IPv4 network"),
    ({"name": "../../x"}, "name", "not a usable study name"),
    ({"name": "lab✓"}, "name", "not a usable study name"),
])
def test_bad_study_values_give_one_message_naming_the_key(over, key, words):
    err = refused(**over)
    assert err.key == key and words in str(err), str(err)
    assert str(err).count("\n") == 0  # one message


def test_fraction_study_bounds_are_checked_again_with_the_calibrated_rates():
    s = study(load={"fractions": [0.5]}, workload={"connections": 4, "duration_s": 1, "warmup_s": 0})
    runs = matrix.plan(s, {"small": 2.0})  # 1 req/s over 4 connections in 1 s: < 1 request per connection
    with pytest.raises(ConfigError, match="less than one request per connection"):
        check_runs(s, runs)


@pytest.mark.parametrize("kw,key", [
    ({"service_port": "8080"}, "service_port"), ({"service_port": 0}, "service_port"), ({"service_port": True}, "service_port"),
    ({"published_port": 22}, "published_port"), ({"published_port": 65536}, "published_port"),
    ({"vxlan_vni": 2**24}, "vxlan_vni"), ({"mtu": 100}, "mtu"), ({"ipvlan_mode": "l3s"}, "ipvlan_mode"),
    ({"subnet_prefix": 24.0}, "subnet_prefix"), ({"docker_cidr": "172.17.0.1/16"}, "docker_cidr"),
])
def test_mode_settings_types_and_ranges(kw, key):
    with pytest.raises(SettingError) as err:
        next(m for m in MODES.all() if set(kw) <= set(m.settings_type.__dataclass_fields__)).settings(kw)  # the kind that has them
    assert err.value.key == key and isinstance(err.value, PlanError)


def test_published_port_must_not_be_the_ssh_port_in_use():
    from cnibench.modes.base import HostFact, HostFacts

    hosts = HostFacts((HostFact("client", "client", "eth1", "198.18.0.11", 24, 1500, "02:00:00:00:00:01", ssh_port=22),
                       HostFact("server", "server", "eth1", "198.18.0.12", 24, 1500, "02:00:00:00:00:02", ssh_port=2222)))
    with pytest.raises(SettingError, match="SSH port of server"):
        check_published_port(get_mode("docker-bridge").settings({"published_port": 2222}), hosts)
    check_published_port(get_mode("docker-bridge").settings({"published_port": 30080}), hosts)


def test_nginx_config_gets_only_an_int_port_and_an_address():
    with pytest.raises(ValueError):
        nginx.render_config(nginx.NginxSpec(bind="10.0.0.1", port="80; include /etc/shadow"))
    with pytest.raises(ValueError):
        nginx.render_config(nginx.NginxSpec(bind="10.0.0.1;", port=80))
    assert "listen 10.0.0.1:80 " in nginx.render_config(nginx.NginxSpec(bind="10.0.0.1", port=80))


def test_study_argument_is_a_name_or_an_existing_file(tmp_path):
    assert study_name_arg("lab") == "lab"
    assert study_name_arg(str(ROOT / "studies" / "quick.yml")) == "quick"
    for bad in ("../../x", "../../x.yml", "/etc/passwd", "a/b", str(tmp_path / "missing.yml")):
        with pytest.raises(ConfigError, match="neither a study name nor an existing study file"):
            study_name_arg(bad)


# --- item 5: the SSH path ---------------------------------------------------------------------

def test_plans_refuse_an_unknown_ssh_path_on_real_hosts_and_the_data_interface_carrying_ssh():
    with pytest.raises(PlanError, match="cannot tell which address"):
        check_ssh_path("server", "eth1", None, None, testbed=False)
    check_ssh_path("server", "eth0", None, None, testbed=True)  # the testbed's SSH has its own link
    with pytest.raises(PlanError, match="runs over the data interface eth1"):
        check_ssh_path("server", "eth1", "10.0.0.5", "eth1", testbed=False)
    check_ssh_path("server", "eth1", "10.0.0.5", "eth0", testbed=False)


# --- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("rate,words", [("1e12", "more than"), ("inf", "not a finite number")])
def test_invoke_bench_refuses_absurd_rates_with_one_message(rate, words, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "CNIBENCH_OUTPUT": str(tmp_path)}
    argv = [sys.executable, "-m", "invoke", "bench", "--mode", "host", "--size", "small", "--rate", rate, "--duration", "2"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: bench: rate:") and words in lines[0], lines
    assert not (tmp_path / "data").exists()  # no record written


def test_study_argument_is_the_name_inside_the_study_file(tmp_path, monkeypatch):
    """`--study x.yml` and `--study x` (studies/x.yml) name the study by the file's `name:`,
    the directory `run-all` records under, not by the file's stem."""
    from cnibench.study import spec as study_mod

    doc = "name: yname\nmodes: [host]\nsizes: [small]\nload: {rates: [1000]}\n"
    (tmp_path / "x.yml").write_text(doc)
    monkeypatch.setattr(study_mod, "STUDIES", tmp_path)
    assert study_name_arg(str(tmp_path / "x.yml")) == "yname"
    assert study_name_arg("x") == "yname"
    assert study_name_arg("nofile") == "nofile"


def test_invoke_analyze_refuses_a_study_path_outside(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib"), "CNIBENCH_OUTPUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "invoke", "analyze", "--study", "../../x"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "neither a study name nor an existing study file" in proc.stderr
