"""infra/cni.py's pure parts: the execution config, the call order, dry-run, errors, records;
on real plugin output captured from containernetworking-plugins 1.1.1 (tests/fixtures/cni/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnibench.errors import PlanError
from cnibench.infra import cni

FIX = Path(__file__).parents[1] / "fixtures" / "cni"
ATT = cni.Attachment("client", "cnib-pod", "cnib-client-pod", args=(("K8S_POD_NAME", "web"),),
                     runtime_config={"portMappings": [{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]})


def chain():
    return cni.conflist("cnib-docker", [
        {"type": "bridge", "bridge": "cnib-docker0", "ipam": {"type": "host-local", "ranges": [[{"subnet": "172.17.0.0/16"}]]}},
        {"type": "firewall"},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ])


def test_add_in_order_del_in_reverse_check_in_order():
    net = chain()
    assert [c.plugin for c in cni.plan("ADD", net, ATT)] == ["bridge", "firewall", "portmap"]
    assert [c.plugin for c in cni.plan("DEL", net, ATT)] == ["portmap", "firewall", "bridge"]
    assert [c.plugin for c in cni.plan("CHECK", net, ATT)] == ["bridge", "firewall", "portmap"]
    assert cni.plan("CHECK", {**net, "disableCheck": True}, ATT) == []
    with pytest.raises(PlanError):
        cni.plan("GC", net, ATT)


def test_environment_rides_in_argv_and_names_the_binary():
    argv = cni.plan("DEL", chain(), ATT)[0].argv
    assert argv[0] == "env" and argv[-1] == "/usr/lib/cni/portmap"
    env = dict(a.split("=", 1) for a in argv[1:-1])
    assert env == {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "cnib-pod", "CNI_NETNS": "/run/netns/cnib-client-pod",
                   "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": "K8S_POD_NAME=web"}


def test_execution_config_gets_name_version_and_only_declared_capabilities():
    calls = cni.plan("ADD", chain(), ATT)
    bridge, portmap = json.loads(calls[0].stdin(None)), json.loads(calls[2].stdin({"cniVersion": "1.0.0"}))
    assert bridge["name"] == portmap["name"] == "cnib-docker" and bridge["cniVersion"] == "1.0.0"
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge  # bridge declares no capability
    assert portmap["runtimeConfig"] == {"portMappings": ATT.runtime_config["portMappings"]}
    assert "capabilities" not in portmap and portmap["prevResult"] == {"cniVersion": "1.0.0"}


def test_prev_result_is_the_stored_result_verbatim():
    result = json.loads((FIX / "bridge-static-add-result.json").read_text())
    stdin = json.loads(cni.plan("CHECK", chain(), ATT)[1].stdin(result))
    assert stdin["prevResult"] == result and stdin["prevResult"]["interfaces"][1]["name"].startswith("veth")


def test_data_dir_is_ours_and_var_lib_cni_is_refused():
    net = cni.with_data_dir(chain(), "/run/cnibench/cni/client")
    assert net["plugins"][0]["ipam"]["dataDir"] == "/run/cnibench/cni/client/ipam"
    assert "dataDir" not in chain()["plugins"][0]["ipam"]  # the input is not changed
    bad = chain()
    bad["plugins"][0]["ipam"]["dataDir"] = "/var/lib/cni/networks"
    with pytest.raises(PlanError, match="/var/lib/cni"):
        cni.with_data_dir(bad, "/run/cnibench/cni/client")


def test_conflist_refuses_what_the_spec_forbids():
    with pytest.raises(PlanError):
        cni.conflist("x", [])
    with pytest.raises(PlanError):
        cni.conflist("x", [{"type": "../bin/sh"}])


def test_dry_run_prints_conflist_and_every_call():
    text = cni.render("ADD", chain(), ATT)
    assert json.loads(text[text.index("{"):text.index("\n$ ")]) == chain()
    calls = [line for line in text.splitlines() if line.startswith("$ env CNI_COMMAND=ADD")]
    assert [c.split()[-2] for c in calls] == ["/usr/lib/cni/bridge", "/usr/lib/cni/firewall", "/usr/lib/cni/portmap"]
    assert text.count("<the previous plugin's result>") == 2  # every plugin but the first


@pytest.mark.parametrize("name, code, words", [
    ("tuning-add-error.json", 999, "cnib_no_such_key: no such file or directory"),
    ("ipvlan-add-error.json", 999, "failed to create ipvlan: operation not supported"),
    ("bridge-check-route-without-gw-error.json", 999, "Expected Route"),
])
def test_plugin_errors_parsed_from_real_output(name, code, words):
    got = cni.parse_error((FIX / name).read_text(), "")
    assert got[0] == code and words in got[1]
    err = cni.CniError("server", "ADD", "ipvlan", *got)
    assert str(err).startswith("server: CNI ADD of plugin 'ipvlan' failed (error code 999): ")


def test_plugin_error_without_json_keeps_its_words():
    assert cni.parse_error("", "panic: boom\n") == (None, "panic: boom", "")
    assert cni.parse_error("", "")[1] == "the plugin printed nothing"


def test_record_round_trips_to_the_same_attachment():
    rec = json.loads(json.dumps(cni.record(chain(), ATT, {"cniVersion": "1.0.0"})))
    assert cni.attachment_of(rec) == ATT and rec["network"] == chain()
    assert cni.record_key("cnib-docker", ATT) == "cnib-docker-cnib-pod-eth0"


def test_version_answer_parses():
    assert "1.0.0" in json.loads((FIX / "macvlan-version.json").read_text())["supportedVersions"]


def test_left_after_del_covers_every_plugin_the_modes_use():
    assert {"bridge", "host-local", "portmap", "firewall", "macvlan", "ipvlan", "ptp", "static"} <= set(cni.LEFT_AFTER_DEL)


def test_only_tables_that_appeared_are_dropped():
    before = "table inet cnib_filter\ntable ip nat\n"
    after = "table inet cnib_filter\ntable ip nat\ntable ip filter\ntable ip6 nat\n"
    assert cni.drop_new_tables(before, after) == [["nft", "delete", "table", "ip", "filter"], ["nft", "delete", "table", "ip6", "nat"]]
    assert cni.drop_new_tables(after, after) == []


def test_clean_refuses_a_directory_that_is_not_ours():
    import asyncio

    with pytest.raises(PlanError, match="refusing to clean /var/lib/cni"):
        asyncio.run(cni.clean(None, "/var/lib/cni"))
