"""cpus: auto on recorded topologies: the real script (topology_argv) run over sysfs trees under
tests/fixtures/topology/ (vm-2core captured from this project's 2-core KVM guest; the other two
built by hand, see build.py), its output parsed, the plan compared with CPU lists written here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cnibench.errors import PlanError
from cnibench.infra.topology import (
    check_pinned,
    format_cpulist,
    parse_cpulist,
    parse_cpus_setting,
    parse_topology,
    physical_cores,
    pinned_irq_cpus,
    plan_cpus,
    topology_argv,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "topology"


def recorded(name: str, nic: str):
    out = subprocess.run(topology_argv(nic, str(FIX / name)), capture_output=True, text=True, check=True)
    return parse_topology(out.stdout)


@pytest.fixture(scope="module")
def two_socket():
    return recorded("two-socket-36", "ens1f0")


@pytest.fixture(scope="module")
def smt16():
    return recorded("smt-16", "enp65s0")


@pytest.fixture(scope="module")
def vm():
    return recorded("vm-2core", "eth0")


def test_cpulists_round_trip():
    assert parse_cpulist("0-8,18-26") == tuple(range(0, 9)) + tuple(range(18, 27))
    assert parse_cpulist("3") == (3,)
    assert format_cpulist([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    for bad in ("3-1", "a", "-1"):
        with pytest.raises(ValueError):
            parse_cpulist(bad)


def test_two_socket_reads_what_sysfs_says(two_socket):
    assert len(two_socket.cpus) == 36
    assert two_socket.nic_node == 1
    assert two_socket.nodes[1] == tuple(range(9, 18)) + tuple(range(27, 36))
    # ens1f0's queues only: eno1's interrupt on CPU 0 and the misc one allowed everywhere do not pin
    assert [i.name for i in two_socket.irqs] == ["i40e-0000:d8:00.0:misc"] + [f"i40e-ens1f0-TxRx-{q}" for q in range(4)]
    assert pinned_irq_cpus(two_socket) == (9, 10, 11, 12)
    assert physical_cores(two_socket, 1)[0] == (9, 27)


def test_two_socket_plan_uses_the_nics_node_one_thread_per_core(two_socket):
    p = plan_cpus(two_socket, "ens1f0", 4, 0)
    assert p.node == 1 and p.threads == (13, 14, 15, 16) and p.workers == ()
    assert p.irq_cores_skipped
    # 5 cores are free of the NIC's interrupts: the 6th and 7th come from its cores, in order
    p = plan_cpus(two_socket, "ens1f0", 4, 3)
    assert p.threads == (13, 14, 15, 16) and p.workers == (17, 9, 10)
    assert not p.irq_cores_skipped and "shares 2 core(s)" in p.notes[0]
    p = plan_cpus(two_socket, "ens1f0", 0, 9)
    assert p.workers == (13, 14, 15, 16, 17, 9, 10, 11, 12)


def test_two_socket_refuses_more_than_the_nodes_cores(two_socket):
    with pytest.raises(PlanError) as e:
        plan_cpus(two_socket, "ens1f0", 18, 0, host="client")
    msg = str(e.value)
    assert msg.startswith("client: 18 generator thread(s) need 18 physical cores on NUMA node 1")
    assert "which has 9 (CPUs 9-17,27-35)" in msg and "workload.threads" in msg


def test_smt16_skips_the_interrupt_cores_and_never_a_sibling(smt16):
    assert smt16.nic_node == 0 and pinned_irq_cpus(smt16) == (0, 1, 2, 3)
    p = plan_cpus(smt16, "enp65s0", 4, 4)
    assert p.threads == (4, 5, 6, 7) and p.workers == (8, 9, 10, 11) and p.irq_cores_skipped
    p = plan_cpus(smt16, "enp65s0", 8, 8)
    assert p.threads == tuple(range(4, 12)) and p.workers == (12, 13, 14, 15, 0, 1, 2, 3)
    assert not p.irq_cores_skipped
    with pytest.raises(PlanError, match="17 generator thread"):
        plan_cpus(smt16, "enp65s0", 17, 0)


def test_vm_one_core_each_and_the_paper_refused(vm):
    assert [c.cpu for c in vm.cpus] == [0, 1] and vm.nic_node is None
    assert {i.name for i in vm.irqs} == {"virtio2-config", "virtio2-input.0", "virtio2-output.0"}
    assert pinned_irq_cpus(vm) == ()  # allowed on both CPUs: nothing to skip
    p = plan_cpus(vm, "eth0", 1, 1)
    assert (p.node, p.threads, p.workers) == (0, (0,), (1,))
    with pytest.raises(PlanError) as e:
        plan_cpus(vm, "eth0", 18, 18, host="testbed")
    assert "18 generator thread(s) and 18 nginx worker(s) need 36 physical cores on NUMA node 0" in str(e.value)
    assert "which has 2 (CPUs 0-1)" in str(e.value)


def test_a_veth_without_device_or_topology(tmp_path):
    out = subprocess.run(topology_argv("cnib-none", str(tmp_path)), capture_output=True, text=True, check=True)
    topo = parse_topology(out.stdout)
    assert topo.cpus == () and topo.irqs == ()
    with pytest.raises(PlanError, match="no CPU topology"):
        plan_cpus(topo, "cnib-none", 1, 0)


def test_unknown_nic_node_on_two_nodes_says_which_it_used(two_socket):
    from dataclasses import replace

    p = plan_cpus(replace(two_socket, nic_node=-1, irqs=()), "ens1f0", 2, 0)
    assert p.node == 0 and p.threads == (0, 1) and "unknown" in p.notes[0]


def test_cpus_setting_values():
    assert parse_cpus_setting("auto") == "auto" and parse_cpus_setting(None) == "auto"
    assert parse_cpus_setting("0-2") == (0, 1, 2) and parse_cpus_setting([1, 0]) == (0, 1)
    assert parse_cpus_setting({"client": [0], "server": "1"}) == {"client": (0,), "server": (1,)}
    for bad in ("automatic", [], [-1], [True], {"nginx": [1]}, 3):
        with pytest.raises(PlanError, match="is not a CPU setting"):
            parse_cpus_setting(bad)


def test_explicit_lists_too_short_or_missing(vm):
    check_pinned((0, 1), 2, "threads", "client", vm)
    with pytest.raises(PlanError, match="18 nginx workers exceed the 1 CPU"):
        check_pinned((1,), 18, "nginx workers", "server", vm)
    with pytest.raises(PlanError, match="CPUs 5 do not exist"):
        check_pinned((5,), 1, "threads", "client", vm)
