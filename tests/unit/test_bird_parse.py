"""infra/bird.py's pure parts: the config and the birdc parsers, on output captured from
Debian 12's bird2 2.0.12 (tests/fixtures/bird/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cnibench.errors import PlanError
from cnibench.infra import bird

FIX = Path(__file__).parents[1] / "fixtures" / "bird"
PEER = bird.Peer("x", "198.18.99.2")
CFG = bird.BirdConfig("198.18.0.12", ("10.244.2.0/24",), (bird.Peer("client", "198.18.0.11"),), log_file="/run/cnibench/bird/s/bird.log")


def test_established_session_and_learned_route():
    protocols = bird.parse_protocols((FIX / "show-protocols-established.txt").read_text())
    assert protocols["cnib_peer_x"] == {"proto": "BGP", "state": "up", "info": "Established"}
    assert protocols["cnib_kernel"]["proto"] == "Kernel" and protocols["device1"]["info"] == ""
    assert bird.established(protocols, [PEER]) == []
    routes = bird.parse_routes((FIX / "show-route-learned.txt").read_text())
    assert {r["net"]: r["protocol"] for r in routes} == {"10.244.1.0/24": "cnib_blocks", "10.244.2.0/24": "cnib_peer_x"}
    bgp = [r for r in routes if r["protocol"] == "cnib_peer_x"][0]
    assert bgp["via"] == "198.18.99.2" and bgp["dev"] == "cnib-t26va" and bgp["best"]
    assert bird.learned(routes, [PEER]) == {"10.244.2.0/24"}  # the own blackhole is not "learned"


def test_peer_down_and_route_withdrawn():
    protocols = bird.parse_protocols((FIX / "show-protocols-peer-down.txt").read_text())
    assert protocols["cnib_peer_x"]["state"] == "start" and "Connection closed" in protocols["cnib_peer_x"]["info"]
    assert bird.established(protocols, [PEER]) == ["x"]
    assert bird.learned(bird.parse_routes((FIX / "show-route-withdrawn.txt").read_text()), [PEER]) == set()


def test_an_unknown_peer_is_not_established():
    assert bird.established({}, [PEER]) == ["x"]


def test_negotiated_hold_time_is_three_seconds():
    text = (FIX / "show-protocols-all-peer.txt").read_text()
    assert re.search(r"Hold timer:\s+[\d.]+/3\b", text)  # what the rendered config asked for


def _statements(text):
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_render_has_the_shape_of_the_calico_fixture():
    ours = _statements(bird.render(CFG))
    theirs = _statements((FIX / "calico-shape-server.conf").read_text())
    for stmt in ("router id 198.18.0.12;", "protocol device { scan time 2; }", "learn;", "scan time 2;", "merge paths on;",
                 "route 10.244.2.0/24 blackhole;", "local 198.18.0.12 as 64512;", "neighbor 198.18.0.11 as 64512;", "direct;"):
        assert stmt in ours and stmt in theirs, stmt
    assert "hold time 3;" in ours and "keepalive time 1;" in ours
    assert not any("persist" in s for s in ours)  # kernel routes leave with BIRD
    assert 'log "/run/cnibench/bird/s/bird.log" all;' in ours
    assert "protocol bgp cnib_peer_client {" in ours


def test_render_refuses_bad_input():
    with pytest.raises(ValueError):
        bird.render(bird.BirdConfig("not-an-ip", (), ()))
    with pytest.raises(PlanError):
        bird.render(bird.BirdConfig("198.18.0.1", (), (bird.Peer("a;b", "198.18.0.2"),)))
    with pytest.raises(PlanError):
        bird.render(bird.BirdConfig("198.18.0.1", (), (), hold_time=1))


def test_paths_under_the_run_directory():
    p = bird.paths("server", "/run/cnibench")
    assert p["socket"] == "/run/cnibench/bird/server/bird.ctl" and all(v.startswith("/run/cnibench/bird/server") for v in p.values())
