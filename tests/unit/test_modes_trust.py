"""What a host's copy of the mode state may say (issue 12, item 1): the allow-list accepts every
undo the modes plan, and refuses anything else (pure)."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import pytest
from test_modes_plans import facts

from cnibench.modes import MODES, get_mode
from cnibench.modes.base import AWS, LOCAL
from cnibench.modes.engine.apply import already_gone
from cnibench.modes.engine.facts import originals_over
from cnibench.modes.engine.state import _setting_defaults, host_copy
from cnibench.modes.engine.trust import (
    StateRefused,
    check_endpoint,
    check_host_state,
    parse_originals,
    sysctl_assignments,
    undo_allowed,
)


def every_plan():
    for name in MODES:
        mode = get_mode(name)
        for settings in ([mode.settings({"ipvlan_mode": "l2"}), mode.settings({"ipvlan_mode": "l3"})] if name == "ipvlan" else [mode.settings()]):
            yield name, mode.plan(facts(), settings), mode.endpoint(facts(), settings), settings


def host_doc(name, steps, endpoint, settings, host="server"):
    """What up writes to a host (state.host_copy of the host's document)."""
    doc = {"mode": name, "status": "up", "endpoint": endpoint.to_dict(), "settings": asdict(settings),
           "commands": len(steps), "kernel_objects": 3, "setup_seconds": 0.2, "target": host,
           "steps": [s.to_dict() for s in steps if s.host == host], "started": 7}
    return json.loads(json.dumps(host_copy(doc)))


@pytest.mark.parametrize("name,steps,endpoint,settings", list(every_plan()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_undo_a_mode_plans_for_a_host_is_allowed(name, steps, endpoint, settings):
    for s in steps:
        if s.host not in (LOCAL, AWS) and s.undo is not None:
            assert undo_allowed(s.host, s.undo, "eth0"), f"{name}: {' '.join(s.undo)}"
    for host in ("client", "server"):
        checked = check_host_state(host, host_doc(name, steps, endpoint, settings, host), MODES, _setting_defaults(), "eth0")
        assert checked["steps"] == [s.to_dict() for s in steps if s.host == host]


def vxlan_doc():
    mode = get_mode("flannel-vxlan")
    steps = mode.plan(facts(), mode.settings())
    return host_doc("flannel-vxlan", steps, mode.endpoint(facts(), mode.settings()), mode.settings())


def refused(doc, match, host="server"):
    with pytest.raises(StateRefused, match=match):
        check_host_state(host, doc, MODES, _setting_defaults())


def test_a_tampered_host_copy_is_refused():
    doc = vxlan_doc()
    refused(doc, "addressed to 'server'", host="client")  # server's file read as the client's
    bad = copy.deepcopy(doc)
    bad["steps"].append({"host": LOCAL, "argv": ["true"], "undo": ["sh", "-c", "touch /tmp/owned"], "netns": None})
    refused(bad, "addressed to '@local'")
    bad["steps"][-1]["host"] = "server"
    refused(bad, "not a command a mode plans")
    for undo in (["ip", "link", "del", "eth0"], ["ip", "netns", "del", "cnib-client-pod"], ["ip", "route", "del", "default"],
                 ["nft", "delete", "table", "inet", "filter"], ["sysctl", "-q", "-w", "kernel.core_pattern=|/tmp/x"],
                 ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1;reboot"], ["rm", "-rf", "/"], ["ip", "link", "del", "cnibx", "extra"]):
        bad = copy.deepcopy(doc)
        bad["steps"][0]["undo"] = undo
        refused(bad, "not a command a mode plans")
    bad = copy.deepcopy(doc)
    bad["steps"][0]["netns"] = "cnib-fabric"
    refused(bad, "namespace")
    for port in ("8080; rm -rf /", 0, 70000, 8080.5, True, "../../etc"):
        bad = copy.deepcopy(doc)
        bad["endpoint"]["server_port"] = port
        refused(bad, "server_port")
    bad = copy.deepcopy(doc)
    bad["endpoint"]["server_bind"] = "1.2.3.4; include /etc/shadow"
    refused(bad, "server_bind")
    bad = copy.deepcopy(doc)
    bad["endpoint"]["server_netns"] = "cnib-server-pod/../x"
    refused(bad, "server_netns")
    bad = copy.deepcopy(doc)
    bad["settings"]["service_port"] = "22"
    refused(bad, "service_port")
    for k, v in (("mode", "rm -rf"), ("status", "weird"), ("steps", "x")):
        bad = copy.deepcopy(doc)
        bad[k] = v
        refused(bad, k)


def test_aws_settings_never_come_from_a_host():
    doc = vxlan_doc()
    doc["settings"]["aws"] = {"endpoint_url": "http://evil", "region": "x", "route_table_id": "r", "instances": {}}
    assert "aws" not in check_host_state("server", doc, MODES, _setting_defaults())["settings"]


def test_endpoint_fields_are_typed():
    ep = {"mode": "host", "client_netns": None, "server_netns": None, "server_bind": "198.18.0.12", "server_port": 8080,
          "connect_address": "198.18.0.12", "connect_port": 8080}
    assert check_endpoint(ep, MODES) == ep
    with pytest.raises(StateRefused):
        check_endpoint({**ep, "extra": 1}, MODES)
    with pytest.raises(StateRefused):
        check_endpoint({**ep, "connect_port": -1}, MODES)


def test_sysctl_originals_are_touched_keys_set_to_integers():
    assert parse_originals("net.ipv4.ip_forward=0\nnet.ipv4.conf.all.accept_redirects=1\n") == [
        "net.ipv4.ip_forward=0", "net.ipv4.conf.all.accept_redirects=1"]
    assert parse_originals("net.ipv4.conf.cnibbr0.send_redirects=1") == ["net.ipv4.conf.cnibbr0.send_redirects=1"]
    for bad in ("kernel.modprobe=/tmp/x", "net.ipv4.ip_forward=1 2", "net.ipv4.ip_forward=-1", "net.ipv4.conf.a.b.send_redirects=0"):
        with pytest.raises(StateRefused):
            parse_originals(bad)
    steps = get_mode("flannel-aws-vpc").plan(facts(), get_mode("flannel-aws-vpc").settings())
    assert sysctl_assignments(s for s in steps if s.host == "client") == ["net.ipv4.ip_forward=0", "net.ipv4.conf.all.accept_redirects=1"]
    assert "net.ipv4.conf.cnibbr0.send_redirects=1" in sysctl_assignments(s for s in steps if s.host == LOCAL)


def test_fact_gathering_takes_a_recorded_original_over_the_live_value():
    keys = ["net.ipv4.ip_forward", "net.ipv4.conf.all.accept_redirects"]
    assert originals_over([], keys, ["1", "0"]) == ["1", "0"]
    assert originals_over(["net.ipv4.ip_forward=0"], keys, ["1", "0"]) == ["0", "0"]


@pytest.mark.parametrize("status,text,gone", [
    (1, 'Cannot find device "cnibcni0"', True),
    (1, 'Cannot remove namespace file "/run/netns/cnib-client-pod": No such file or directory', True),
    (2, "RTNETLINK answers: No such process", True),
    (1, "Error: Could not process rule: No such file or directory\ndelete table ip cnib_docker", True),
    (254, "An error occurred (InvalidRoute.NotFound): no route", True),
    (1, 'Cannot open network namespace "cnib-client-pod": No such file or directory', True),
    (127, "bash: line 1: nft: command not found", False),
    (127, "sh: 1: nft: not found", False),
    (127, "timeout: failed to run command 'nft': No such file or directory", False),
    (1, "sudo: nft: command not found", False),
    (255, 'exec of "nft" failed: No such file or directory', False),
    (2, "RTNETLINK answers: File exists", False),
    (1, "The route does not exist; route not found", False),
])
def test_already_gone_is_only_a_missing_object_never_a_missing_command(status, text, gone):
    assert already_gone(status, text) is gone


def test_ebpf_undos_are_allowed_only_for_the_hosts_own_objects():
    """ebpf-redirect's undos: the clsact qdisc of the inventory's data interface or of our own
    interfaces, and the host's own bpffs mount; nothing else of the same shape."""
    from cnibench.modes.kinds.ebpf import pin_dir

    mine = pin_dir("server")
    assert mine.endswith("/bpf/cnib-server")
    for undo in (["tc", "qdisc", "del", "dev", "eth0", "clsact"], ["tc", "qdisc", "del", "dev", "cnibeserver", "clsact"],
                 ["umount", mine], ["rmdir", mine]):
        assert undo_allowed("server", undo, "eth0"), undo
    for undo in (["tc", "qdisc", "del", "dev", "mgmt0", "clsact"],  # not the data interface
                 ["tc", "qdisc", "del", "dev", "eth0", "root"], ["tc", "qdisc", "del", "dev", "eth0", "ingress"],
                 ["tc", "filter", "del", "dev", "eth0", "ingress"],
                 ["umount", pin_dir("client")], ["rmdir", pin_dir("client")],  # another host's mount
                 ["umount", "/sys/fs/bpf"], ["umount", "/"], ["umount", "-l", mine], ["rmdir", "/etc"],
                 ["rmdir", mine + "/.."], ["rm", "-rf", mine]):
        assert not undo_allowed("server", undo, "eth0"), undo
    # without the inventory's data interface (a host copy read for another inventory): only ours
    assert not undo_allowed("server", ["tc", "qdisc", "del", "dev", "eth0", "clsact"])
    assert undo_allowed("server", ["tc", "qdisc", "del", "dev", "cnibeserver", "clsact"])
