"""Apply/undo semantics, the AWS driver (moto), state capture and the clean sweep (pure parts)."""

from __future__ import annotations

import asyncio
import json

import pytest

from cnibench.errors import CommandFailed, PlanError
from cnibench.infra.hosts import CommandResult
from cnibench.modes.base import Step, step
from cnibench.modes.clean import sweep_plan
from cnibench.modes.engine.apply import apply_steps, undo_steps
from cnibench.modes.engine.hoststate import diff, normalise
from cnibench.modes.engine.pathcheck import parse_rule_counters, parse_ttl
from cnibench.modes.kinds.docker_bridge import parse_dnat_packets


class FakeHost:
    """Records commands; fails the argv listed in `fail`, answers `absent` with ENOENT."""

    def __init__(self, name, log, fail=(), absent=()):
        self.name, self.log, self.fail, self.absent = name, log, set(fail), set(absent)

    async def run(self, argv, check=True, netns=None, **kw):
        cmd = " ".join(argv)
        self.log.append((self.name, cmd))
        status, err = 0, ""
        if cmd in self.fail:
            status, err = 2, "RTNETLINK answers: File exists"
        elif cmd in self.absent:
            status, err = 1, "Cannot find device"
        r = CommandResult(self.name, tuple(argv), status, "", err, 0.0)
        if check and status:
            raise CommandFailed(r)
        return r


def plan():
    return [
        step("a", ["mk", "1"], ["rm", "1"]),
        step("a", ["mk", "2"], ["rm", "2"]),
        step("a", ["child", "of", "2"]),
        step("a", ["mk", "3"], ["rm", "3"]),
        step("b", ["mk", "b1"], ["rm", "b1"]),
    ]


def test_a_failure_midway_undoes_what_was_done_in_reverse():
    log = []
    runners = {"a": FakeHost("a", log, fail={"mk 3"}), "b": FakeHost("b", log)}
    with pytest.raises(CommandFailed):
        asyncio.run(apply_steps(runners, plan()))
    a_cmds = [c for h, c in log if h == "a"]
    assert a_cmds == ["mk 1", "mk 2", "child of 2", "mk 3", "rm 2", "rm 1"]  # never "rm 3": it failed
    # the other host stops at its next step; whatever it did is undone too
    assert (("b", "mk b1") in log) == (("b", "rm b1") in log)


def test_apply_runs_every_step_in_order_per_host():
    log = []
    runners = {"a": FakeHost("a", log), "b": FakeHost("b", log)}
    asyncio.run(apply_steps(runners, plan()))
    assert [c for h, c in log if h == "a"] == ["mk 1", "mk 2", "child of 2", "mk 3"]


def test_undo_treats_already_gone_as_success_and_reports_the_rest():
    log = []
    runners = {"a": FakeHost("a", log, absent={"rm 2"}), "b": FakeHost("b", log)}
    assert asyncio.run(undo_steps(runners, plan())) == []
    assert [c for h, c in log if h == "a"] == ["rm 3", "rm 2", "rm 1"]
    runners = {"a": FakeHost("a", [], fail={"rm 2"}), "b": FakeHost("b", [])}
    with pytest.raises(PlanError, match="rm 2"):
        asyncio.run(undo_steps(runners, plan()))


def test_parsers_on_real_output():
    assert parse_ttl("64 bytes from 10.244.2.2: icmp_seq=1 ttl=61 time=0.101 ms") == 61
    assert parse_ttl("1 packets transmitted, 0 received") is None
    nft = {"nftables": [{"metainfo": {}}, {"chain": {"name": "prerouting"}},
                        {"rule": {"expr": [{"match": {}}, {"counter": {"packets": 7, "bytes": 420}}, {"dnat": {"addr": "172.17.0.2", "port": 8080}}]}}]}
    assert parse_dnat_packets(json.dumps(nft)) == 7
    table = {"nftables": [{"rule": {"expr": [{"counter": {"packets": 3, "bytes": 1}}]}}, {"rule": {"expr": [{"counter": {"packets": 0, "bytes": 0}}]}}]}
    assert parse_rule_counters(json.dumps(table)) == [3, 0]


def test_state_normalisation_hides_only_volatile_values():
    a = "5: cnibbr0: <UP> mtu 1500\n    bridge hello_timer 0.00 gc_timer 12.34 promiscuity 0"
    b = "5: cnibbr0: <UP> mtu 1500\n    bridge hello_timer 1.00 gc_timer 99.10 promiscuity 0"
    assert normalise("link", a) == normalise("link", b)
    assert normalise("link", a) != normalise("link", b.replace("promiscuity 0", "promiscuity 1"))
    assert normalise("nft", "counter packets 3 bytes 100") == normalise("nft", "counter packets 9 bytes 900")
    assert normalise("fdb", "33:33:00:00:00:01 dev eth0 self permanent\naa:bb dev eth0 master br0") == "33:33:00:00:00:01 dev eth0 self permanent"
    assert normalise("netns", "cnib-client-pod (id: 3)\ncnib-server-pod\ncnib-client", "cnib-client-") == "cnib-client-pod"
    before = {"route": "default via 1.1.1.1", "sysctl": "net.ipv4.ip_forward = 0"}
    assert diff(before, dict(before)) == {}
    d = diff(before, {"route": "default via 1.1.1.1", "sysctl": "net.ipv4.ip_forward = 1"})
    assert list(d) == ["sysctl"] and "+net.ipv4.ip_forward = 1" in d["sysctl"]


def test_clean_sweeps_only_what_modes_own():
    argvs = sweep_plan(
        "client",
        netns=["cnib-client", "cnib-client-pod", "cnib-server-pod", "cnib-fabric", "other"],
        links=["lo", "eth0", "mgmt0", "cnibcni0", "cnibflannel.1", "cnibvclient", "cnib-m-client", "cnibd-client", "cnibbr0", "cnibdocker0"],
        tables=[("ip", "cnib_docker"), ("inet", "filter")],
        protect={"eth0", "mgmt0"},
    )
    flat = [" ".join(a) for a in argvs]
    assert "ip netns del cnib-client-pod" in flat
    assert not any(x.endswith(("cnib-client", "cnib-server-pod", "cnib-fabric", "other")) for x in flat)
    assert {"ip link del cnibcni0", "ip link del cnibflannel.1", "ip link del cnibvclient", "ip link del cnibdocker0"} <= set(flat)
    assert not any(x.endswith(("cnib-m-client", "cnibd-client", "cnibbr0", "eth0", "mgmt0")) for x in flat)
    assert "nft delete table ip cnib_docker" in flat and not any("filter" in x for x in flat)
    assert flat[-1] == "ip route flush table main proto 203"


def test_step_round_trips_through_json():
    s = Step("@local", ("ip", "route", "add", "x"), ("ip", "route", "del", "x"), "cnib-fabric")
    assert Step.from_dict(json.loads(json.dumps(s.to_dict()))) == s
