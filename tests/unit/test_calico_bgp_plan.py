"""calico-routed `routing: bgp` (modes/kinds/calico_bgp.py): the plan's BIRD steps, their undo
shapes (trusted from a host's copy), clean's leftovers, and the setting's check (pure)."""

from __future__ import annotations

import pytest

from cnibench.infra import bird
from cnibench.modes import get_mode
from cnibench.modes.base import HostFact, HostFacts
from cnibench.modes.engine.trust import undo_allowed
from cnibench.modes.kinds import calico_bgp
from cnibench.modes.settings import SettingError

HOSTS = HostFacts((
    HostFact("client", "client", "eth0", "198.18.0.11", 24, 1500, "02:00:00:00:00:01", l2_peers=("server",)),
    HostFact("server", "server", "eth0", "198.18.0.12", 24, 1500, "02:00:00:00:00:02", l2_peers=("client",)),
))


def plan(routing):
    mode = get_mode("calico-routed")
    return mode.plan(HOSTS, mode.settings({"routing": routing}))


def test_bgp_replaces_the_static_routes_with_bird_steps():
    static, bgp = plan("static"), plan("bgp")
    assert any(s.argv[:3] == ("ip", "route", "add") and "203" in s.argv for s in static)
    assert not any(s.argv[:3] == ("ip", "route", "add") and "via" in s.argv for s in bgp)
    client = [s for s in bgp if s.host == "client"]
    words = [s.argv[0] if s.argv[0] != "sh" else s.argv[-1] for s in client[-5:]]
    assert words[0] == "10.244.2.0/24" and client[-5].undo == ("ip", "route", "del", "10.244.2.0/24", "proto", "bird")
    assert client[-4].undo[-1] == bird.paths("client")["dir"]
    assert client[-3].argv[:2] == ("bird", "-p") and client[-2].argv[0] == "bird" and "-P" in client[-2].argv
    assert client[-1].argv[-1] == "10.244.2.0/24"
    conf = client[-4].argv[-1]
    assert "neighbor 198.18.0.12 as 64512" in conf and "hold time 3" in conf and "persist" not in conf
    assert "10.244.1.0/24" in conf  # the client's own block, exported


def test_every_bgp_undo_is_trusted_from_a_hosts_copy_and_nothing_else():
    for s in plan("bgp"):
        if s.undo:
            assert undo_allowed(s.host, list(s.undo), "eth0", "calico-routed"), s.undo
    stop = list(calico_bgp.undo_shapes("client")[1][:3])
    assert not undo_allowed("client", ["sh", "-c", "rm -rf /", "cnib", "/"], "eth0", "calico-routed")
    assert not undo_allowed("client", ["sh", "-c", calico_bgp.STOP_SH, "cnib", "/etc"], "eth0", "calico-routed")
    assert stop[0] == "sh"
    # a route by protocol alone is never an undo
    assert not undo_allowed("client", ["ip", "route", "flush", "proto", "bird"], "eth0", "calico-routed")


def test_clean_stops_our_bird_only_when_its_directory_is_there():
    assert calico_bgp.leftovers("client", {"bird": ""}) == []
    [argv] = calico_bgp.leftovers("client", {"bird": "present\n"})
    assert argv[:3] == ["sh", "-c", calico_bgp.STOP_SH] and argv[-1] == bird.paths("client")["dir"]
    assert not any("route" in a and "bird" in a for a in argv[3:])


def test_routing_setting_is_checked():
    with pytest.raises(SettingError, match="routing"):
        get_mode("calico-routed").settings({"routing": "ospf"})
    assert get_mode("calico-routed").settings({}).routing == "static"


def test_verify_checks_are_pure_on_birdc_words():
    peers = calico_bgp.peers(HOSTS, "client")
    ok = calico_bgp.session_check("client", {"cnib_peer_server": {"proto": "BGP", "state": "up",
                                                                  "info": "Established"}}, peers)
    down = calico_bgp.session_check("client", {"cnib_peer_server": {"proto": "BGP", "state": "start",
                                                                    "info": "Active"}}, peers)
    assert ok.ok and not down.ok and "Active" in down.detail
    assert calico_bgp.route_check("client", ["10.244.2.0/24"], ["10.244.2.0/24"]).ok
    assert not calico_bgp.route_check("client", [], ["10.244.2.0/24"]).ok
