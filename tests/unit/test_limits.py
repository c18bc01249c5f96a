"""Host limit checks and study_fit: each check on values that pass and values that fail, and
paper.yml's needs against the 2-core testbed's recorded facts (tests/fixtures/limits/, the two
read-only commands' output over SSH on the local testbed)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from cnibench.errors import PlanError
from cnibench.infra.limits import (
    FD_MARGIN,
    HostFacts,
    Limits,
    StudyNeeds,
    check_clocks,
    check_conntrack,
    check_link,
    check_memory,
    check_open_files,
    check_ports,
    parse_limits,
    refuse,
    study_fit,
    wire_bytes,
)
from cnibench.infra.topology import parse_topology
from cnibench.study.spec import load_study
from cnibench.workload.nginx import response_bytes

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "limits"
ROOT = Path(__file__).resolve().parents[2]


def recorded_host(name: str, role: str, **limits) -> HostFacts:
    topo = parse_topology((FIX / f"testbed-{name}.topology").read_text())
    lim = replace(parse_limits((FIX / f"testbed-{name}.limits").read_text()), **limits)
    return HostFacts(name, role, "eth0", topo, lim)


def test_parse_the_testbeds_limits():
    lim = parse_limits((FIX / "testbed-client.limits").read_text())
    assert lim.port_range == (32768, 60999) and lim.speed_mbps is None  # veth: speed -1
    assert lim.nofile_hard >= lim.nofile_soft > 0 and lim.irqbalance is False
    assert lim.mem_available > 10**8 and lim.run_dir_free > 10**8 and lim.run_dir_fs
    assert parse_limits("nofile 1024 unlimited\nspeed 10000\n") == Limits(1024, None, speed_mbps=10000)


def test_open_files_hard_limit_refuses_soft_limit_is_raised():
    c = check_open_files("client", Limits(256, 256), 4500)
    assert len(c.problems) == 1 and f"need {4500 + FD_MARGIN:,} open files; the hard limit is 256" in c.problems[0]
    assert "LimitNOFILE" in c.problems[0]
    c = check_open_files("client", Limits(1024, 1048576), 4500)
    assert not c.problems and "raises its soft limit 1,024 to the hard 1048576" in c.notes[0]
    assert check_open_files("client", Limits(None, None), 28000) == check_open_files("c", Limits(8192, 8192), 100)


def test_ports_against_connections():
    assert not check_ports("client", Limits(port_range=(32768, 60999)), 28232).problems
    c = check_ports("client", Limits(port_range=(32768, 60999)), 28233)  # a run widens its namespace's range
    assert not c.problems and "widens its client namespace's range to 1024 65535" in c.notes[0]
    assert not check_ports("client", Limits(port_range=(32768, 60999)), 64512).problems
    c = check_ports("client", Limits(port_range=(32768, 60999)), 64513)
    assert "need 64,513 local ports; net.ipv4.ip_local_port_range 32768 60999 has 28,232" in c.problems[0]


def test_conntrack_only_on_the_path():
    small = Limits(conntrack_max=1000)
    assert check_conntrack("server", small, 4500, on_path=False).problems == ()
    assert "nf_conntrack_max is 1,000" in check_conntrack("server", small, 4500, on_path=True).problems[0]
    assert not check_conntrack("server", Limits(conntrack_max=262144), 4500, on_path=True).problems
    assert "not loaded" in check_conntrack("server", Limits(), 4500, on_path=True).notes[0]


def test_memory_counts_the_log_twice_on_tmpfs():
    log = 450_000 * 60 * 32  # 864 MB
    assert not check_memory("c", Limits(mem_available=2 * log, run_dir_free=2 * log, run_dir_fs="ext4"), log, log).problems
    c = check_memory("c", Limits(mem_available=int(1.5 * log), run_dir_free=2 * log, run_dir_fs="tmpfs"), log, log)
    assert len(c.problems) == 1 and "and its log on tmpfs" in c.problems[0]
    c = check_memory("c", Limits(mem_available=10 * log, run_dir_free=log // 2, run_dir_fs="tmpfs"), log, log)
    assert "864 MB to the run directory" in c.problems[0]


def test_link_speed_both_directions():
    large = response_bytes("large")
    assert wire_bytes(large) == large + 3 * 90 and wire_bytes(81) == 171
    c = check_link("server", Limits(speed_mbps=10_000), "large", 450_000, large, 81)
    assert len(c.problems) == 1
    gbps = 450_000 * wire_bytes(large) * 8 / 1e9
    assert f"{gbps:.2f} Gb/s server->client" in c.problems[0] and "its link is 10 Gb/s" in c.problems[0]
    top = math.floor(10e9 / (8 * wire_bytes(large)))
    assert f"at or below {top:,} req/s" in c.problems[0]
    assert not check_link("server", Limits(speed_mbps=10_000), "large", top, large, 81).problems
    assert not check_link("server", Limits(speed_mbps=25_000), "large", 450_000, large, 81).problems
    assert "not checked" in check_link("server", Limits(), "large", 450_000, large, 81).notes[0]


def test_clocks_of_several_clients():
    assert not check_clocks({"a": 0.0002, "b": -0.0004}).problems
    c = check_clocks({"a": 0.0002, "b": 0.0032, "c": math.inf})
    assert len(c.problems) == 2 and c.problems[0].startswith("b: its clock is +3.200 ms off")


def paper_needs(**kw) -> StudyNeeds:
    st = load_study(ROOT / "studies" / "paper.yml")
    w = st.workload
    needs = StudyNeeds(st.name, w["threads"], w["nginx_workers"], st.loads, math.ceil(max(st.loads) / 100),
                       {s: response_bytes(s) for s in st.sizes}, 81, w["duration_s"], w["warmup_s"],
                       shared_machine=True)
    return replace(needs, **kw)


def test_paper_on_the_testbed_is_refused_in_one_message():
    hosts = [recorded_host("client", "client"), recorded_host("server", "server")]
    fit = study_fit(paper_needs(), hosts)
    assert len(fit.problems) == 1 and fit.plans == {}
    assert "18 generator thread(s) and 18 nginx worker(s) need 36 physical cores" in fit.problems[0]
    with pytest.raises(PlanError) as e:
        refuse(fit, paper_needs())
    assert str(e.value).startswith("study paper does not fit these hosts (1 problem(s)); nothing was changed:")


def test_paper_on_a_testbed_with_a_256_file_sshd_lists_every_problem():
    hosts = [recorded_host("client", "client", nofile_soft=256, nofile_hard=256), recorded_host("server", "server")]
    fit = study_fit(paper_needs(), hosts)
    assert len(fit.problems) == 2 and "hard limit is 256" in fit.problems[1]
    msg = pytest.raises(PlanError, refuse, fit, paper_needs()).value
    assert str(msg).count("\n  - ") == 2


def test_a_study_that_fits_the_testbed():
    hosts = [recorded_host("client", "client"), recorded_host("server", "server")]
    needs = paper_needs(threads=1, workers=1, rates=(5000.0,), connections=50)
    fit = study_fit(needs, hosts)
    assert fit.problems == [] and fit.plans["client"].threads == (0,) and fit.plans["server"].workers == (1,)
    refuse(fit, needs)  # no problem, no error


def test_two_clients_split_the_rate_and_need_their_clocks():
    hosts = [recorded_host("client", "client"), replace(recorded_host("client", "client"), name="client2"),
             recorded_host("server", "server", speed_mbps=10_000)]
    needs = paper_needs(threads=1, workers=1, shared_machine=False, clock_offsets={"client": 0.0})
    fit = study_fit(needs, hosts)
    assert any(p.startswith("client2: its clock is") for p in fit.problems)
    assert any(p.startswith("server: large at 450,000 req/s") for p in fit.problems)  # the server gets it all
    assert not any(p.startswith("client") and "Gb/s" in p for p in fit.problems)  # clients' links unknown


def test_explicit_cpus_too_few():
    hosts = [recorded_host("client", "client"), recorded_host("server", "server")]
    fit = study_fit(paper_needs(threads=2, workers=1, cpus={"client": (0,), "server": (1,)}, rates=(5000.0,)), hosts)
    assert len(fit.problems) == 1 and "2 generator threads exceed the 1 CPU(s)" in fit.problems[0]


def test_the_limits_command_runs_here(tmp_path):
    """The very script, run on this machine (read-only): every value it prints parses."""
    import subprocess

    from cnibench.infra.limits import limits_argv

    out = subprocess.run(limits_argv("lo", str(tmp_path / "not" / "there")), capture_output=True, text=True, check=True)
    lim = parse_limits(out.stdout)
    assert lim.port_range and lim.port_range[0] < lim.port_range[1]
    assert lim.mem_available and lim.mem_available > 0 and lim.run_dir_free and lim.run_dir_fs
    assert lim.irqbalance in (True, False) and lim.speed_mbps is None  # loopback has no speed
