"""`implementation: cni` (issue 26): plans on fakes (ipvlan included, whose driver this kernel
lacks), the host copy's trust, the differences list, the study key and the declared pairs (pure)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from test_modes_plans import facts

from cnibench.errors import ConfigError, PlanError
from cnibench.modes import MODES, cnidiff, get_mode
from cnibench.modes.cli import format_plan
from cnibench.modes.engine.state import _setting_defaults, host_copy
from cnibench.modes.engine.trust import StateRefused, check_host_state, undo_allowed
from cnibench.study import implementations as impls
from cnibench.analysis import pairs

CNI = [n for n in MODES.names() if "cni" in MODES.implementations(n)]


def test_the_cni_implementations_are_registered_through_the_registry():
    assert set(CNI) == {"flannel-vxlan", "flannel-host-gw", "flannel-aws-vpc", "ipvlan", "macvlan", "docker-bridge",
                        "calico-routed"}
    assert all(get_mode(n, "cni").implementation == "cni" and get_mode(n, "cni").name == n for n in CNI)
    with pytest.raises(PlanError, match="has no implementation 'kubelet'. Known: project, cni"):
        get_mode("macvlan", "kubelet")


def plan_of(name, **kw):
    mode = get_mode(name, "cni")
    return mode, mode.plan(facts(), mode.settings(kw))


def adds(steps, host="server"):
    return [s for s in steps if s.host == host and "CNI_COMMAND=ADD" in s.argv]


@pytest.mark.parametrize("name", CNI)
def test_each_plugin_call_is_a_step_undone_by_its_own_del(name):
    _, steps = plan_of(name)
    calls = adds(steps)
    assert calls, name
    for s in calls:
        plugin = s.argv[-1]
        assert s.undo[:2] == ("env", "CNI_COMMAND=DEL") and s.undo[-1] == plugin
        conf, undo_conf = json.loads(s.input), json.loads(s.undo_input)
        assert conf["type"] == undo_conf["type"] == plugin.rpartition("/")[2]
        assert "/var/lib/cni" not in s.input
    # a chained plugin gets the planned result (static IPAM: the address is known when planning)
    for s in calls[1:]:
        assert json.loads(s.input)["prevResult"]["ips"][0]["address"] == "172.17.0.2/16"
    assert "prevResult" not in json.loads(calls[0].input)


def test_ipvlan_cni_plans_l2_and_l3_on_fakes():
    _, l2 = plan_of("ipvlan")
    conf = json.loads(adds(l2)[0].input)
    assert conf["mode"] == "l2" and conf["master"] == "eth0" and conf["ipam"]["routes"] == [{"dst": "10.244.0.0/16"}]
    _, l3 = plan_of("ipvlan", ipvlan_mode="l3")
    conf = json.loads(adds(l3)[0].input)
    assert conf["mode"] == "l3" and conf["ipam"]["addresses"] == [{"address": "10.244.2.2/32"}]
    assert any(s.argv[:3] == ("ip", "route", "add") and "proto" in s.argv for s in l3 if s.host == "server")
    assert get_mode("ipvlan", "cni").link_kinds == get_mode("ipvlan").link_kinds  # probed: refused before a change


def test_what_del_leaves_is_undone_after_the_last_del():
    _, steps = plan_of("docker-bridge")
    server = [s for s in steps if s.host == "server"]
    first_add = server.index(adds(steps)[0])
    guards = [" ".join(s.undo) for s in server[:first_add] if s.undo]
    assert "ip link del cnibdocker0" in guards and "nft delete table ip nat" in guards
    assert "nft delete table ip filter" in guards and "nft delete table ip6 nat" in guards
    assert any(g.startswith("sysctl -q -w net.ipv4.ip_forward=0") for g in guards)
    portmap = json.loads(adds(steps)[-1].input)
    assert portmap["runtimeConfig"]["portMappings"] == [
        {"hostPort": 30080, "containerPort": 8080, "protocol": "tcp", "hostIP": "198.18.0.12"}]
    assert "runtimeConfig" not in json.loads(adds(steps, "client")[-1].input)
    _, flannel = plan_of("flannel-vxlan")
    bridge = json.loads(adds(flannel)[0].input)
    assert bridge["hairpinMode"] is True and bridge["mtu"] == 1450 and bridge["bridge"] == "cnibcni0"
    assert all(r.get("gw") for r in bridge["ipam"]["routes"])  # bridge/ptp CHECK needs a gw (infra/cni.py)


def test_dry_run_shows_the_conflist_and_each_call_with_its_stdin():
    mode, steps = plan_of("macvlan")
    notes = "\n".join(mode.explain(facts(), mode.settings()))
    assert '"type": "macvlan"' in notes and "CNI network cnibmacvlan on server" in notes
    text = format_plan(steps)
    assert "/usr/lib/cni/macvlan <<'EOF'\n{" in text


@pytest.mark.parametrize("name", CNI)
def test_a_host_copy_of_a_cni_plan_is_trusted_and_a_tampered_stdin_is_not(name):
    mode = get_mode(name, "cni")
    settings = mode.settings()
    steps = mode.plan(facts(), settings)
    for s in steps:
        if s.host == "server" and s.undo is not None:
            assert undo_allowed("server", s.undo, "eth0", name), " ".join(s.undo)
    doc = {"mode": name, "implementation": "cni", "status": "up", "endpoint": mode.endpoint(facts(), settings).to_dict(),
           "settings": asdict(settings), "commands": len(steps), "kernel_objects": 3, "target": "server",
           "steps": [s.to_dict() for s in steps if s.host == "server"], "started": 3}
    doc = json.loads(json.dumps(host_copy(doc)))
    checked = check_host_state("server", doc, MODES, _setting_defaults(), "eth0")
    assert checked["implementation"] == "cni"
    bad = json.loads(json.dumps(doc))
    i = next(i for i, s in enumerate(bad["steps"]) if s.get("undo_input"))
    conf = json.loads(bad["steps"][i]["undo_input"])
    conf["ipam"] = {"type": "dhcp"}
    bad["steps"][i]["undo_input"] = json.dumps(conf)
    with pytest.raises(StateRefused, match="is not that CNI plugin's config"):
        check_host_state("server", bad, MODES, _setting_defaults(), "eth0")


LIST = {"9.9.9": {"macvlan": {"predicted": {"latency": "same"},
                              "pod": [{"part": "route", "line": r"^[-+]10\.244\.0\.0/16 dev eth0", "why": "scope"}]}}}
DIFF = {"route": "--- a\n+++ b\n@@ -1 +1 @@\n-10.244.0.0/16 dev eth0 scope link\n+10.244.0.0/16 dev eth0",
        "link": "--- a\n+++ b\n@@ -1 +1 @@\n-2: eth0 qlen 1000\n+2: eth0"}


def test_the_differences_list_allows_only_what_it_lists_and_an_unknown_version_reports():
    r = cnidiff.compare("9.9.9", "macvlan", "pod", DIFF, LIST)
    assert r["known"] and r["unexplained"] == [("link", "-2: eth0 qlen 1000"), ("link", "+2: eth0")]
    unknown = cnidiff.compare("1.0.0", "macvlan", "pod", DIFF, LIST)
    assert not unknown["known"] and len(unknown["unexplained"]) == 4
    assert cnidiff.predicted_sign("9.9.9", "macvlan", LIST) == "same"
    assert cnidiff.predicted_sign("1.0.0", "macvlan", LIST) is None


def test_normalise_leaves_out_what_differs_between_any_two_runs():
    a = {"link": "4: eth0@if2: <UP> mtu 1500\n    link/ether 92:51:26:19:62:da brd ff:ff:ff:ff:ff:ff",
         "addr": "    inet6 fe80::9051:26ff:fe19:62da/64 scope link tentative\n7: veth1a2b3c4d@if2: <UP>"}
    b = {"link": "2: eth0@if9: <UP> mtu 1500\n    link/ether 76:59:e3:0e:11:0a brd ff:ff:ff:ff:ff:ff",
         "addr": "    inet6 fe80::7459:e3ff:fe0e:110a/64 scope link\n3: vethdeadbeef@if2: <UP>"}
    assert cnidiff.normalise(a) == cnidiff.normalise(b)


def test_the_written_list_parses_and_predicts_a_sign_for_every_cni_mode():
    data = cnidiff.load()
    assert data, "modes/cni_differences.yml lists no plugin version"
    for version, modes in data.items():
        assert set(CNI) <= set(modes), f"{version}: no entry for {sorted(set(CNI) - set(modes))}"
        for m in modes:
            assert cnidiff.predicted_sign(version, m) in cnidiff.SIGNS


def test_the_implementations_key_makes_arms_and_refuses_bad_input():
    p = Path("s.yml")
    got = impls.parse({"macvlan": ["cni"], "calico-routed": "cni"}, p, ("host", "macvlan", "calico-routed"))
    assert got == {"macvlan": ("cni",), "calico-routed": ("cni",)}
    assert impls.arms(("host", "macvlan"), got) == (("host", "host"), ("macvlan", "macvlan"),
                                                     ("macvlan·cni", "macvlan"))
    assert impls.implementation_of("macvlan·cni", "macvlan") == "cni"
    assert impls.implementation_of("host·A/A", "host") == "project"
    assert impls.implementation_of("macvlan", "macvlan") == "project"
    for bad, match in [({"macvlan": ["kubelet"]}, "not an implementation of macvlan"),
                       ({"ipvlan": ["cni"]}, "not one of this study's modes"), ({"host": ["cni"]}, "not an impl"),
                       (["macvlan"], "must be a mapping"), ({"macvlan": []}, "non-empty list")]:
        with pytest.raises(ConfigError, match=match):
            impls.parse(bad, p, ("host", "macvlan"))


def test_the_study_file_cni_yml_has_both_implementations_of_each_mode_as_arms():
    from cnibench.study.spec import load_study

    study = load_study(Path(__file__).resolve().parents[2] / "studies" / "cni.yml")
    arms = dict(study.arms)
    assert study.repetitions == 10 and study.loads == (0.3,)
    for m in CNI:
        if m in study.modes:
            assert arms[m] == m and arms[f"{m}·cni"] == m
    assert len(pairs.declared(arms)) == sum(1 for m in CNI if m in study.modes)


def test_declared_pairs_and_the_gate():
    assert pairs.declared(["host", "host·A/A", "macvlan", "macvlan·cni", "ipvlan·cni"]) == [
        ("macvlan·cni", "macvlan", "macvlan")]
    rows = pd.DataFrame([dict(size="small", percentile=99.0, arm="macvlan·cni", against="macvlan", mode="macvlan",
                              verdict=v) for v in ("slower", "equivalent", "faster")])
    gated = pairs.gate_column(rows, "1.1.1+ds1-3+b5")
    assert list(gated["predicted"]) == ["same"] * 3
    assert list(gated["gate"]) == ["FAIL: not predicted", "pass", "FAIL: not predicted"]
    assert len(pairs.gate(gated)) == 2


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cni"


def test_clean_without_a_journal_finds_the_plugins_objects_by_what_ties_them_to_us():
    """Captured here: the docker-bridge cni chain's ADD in a throwaway namespace (1.1.1, iptables-nft)."""
    from cnibench.modes.engine.cnisteps import sweep_without_journal

    outputs = {"veth": (FIXTURES / "ip-link-veth-docker-chain.json").read_text(),
               "nat": (FIXTURES / "iptables-save-nat-docker-chain.txt").read_text(),
               "filter": (FIXTURES / "iptables-save-filter-docker-chain.txt").read_text()}
    argvs = sweep_without_journal(outputs)
    assert argvs[0][:3] == ["ip", "link", "del"] and argvs[0][3].startswith("veth")
    deletes = [a for a in argvs if a[3] == "-D"]
    assert len(deletes) == 4 and all("cnibdocker" in " ".join(a) for a in deletes)
    assert {a[4] for a in argvs if a[3] == "-X"} == {"CNI-240bb0367e7487876552e874", "CNI-DN-240bb0367e7487876552e"}
    assert not any("CNI-HOSTPORT" in a[4] or "CNI-FORWARD" in a[4] for a in argvs if a[3] in ("-F", "-X"))
    foreign = outputs["nat"].replace('\\"cnibdocker\\"', '\\"podman\\"')
    assert [a for a in sweep_without_journal({**outputs, "nat": foreign, "veth": "[]"}) if a[2] == "nat"] == []


def test_docker_bridge_cni_verify_reads_portmaps_dnat_counter():
    from cnibench.modes.kinds.docker_bridge import parse_iptables_dnat

    text = (FIXTURES / "iptables-save-nat-docker-chain.txt").read_text()
    counted = "\n".join(f"[7:420] {ln}" if ln.startswith("-A") else ln for ln in text.splitlines())
    assert parse_iptables_dnat(counted) == 7
    with pytest.raises(ValueError, match="no DNAT rule"):
        parse_iptables_dnat("*nat\nCOMMIT\n")


def test_the_record_names_the_implementation_and_the_plugin_version():
    from cnibench.study.matrix import PlannedRun
    from cnibench.study.runner import finish_record

    run = PlannedRun("r1", "cni", "macvlan", "small", 0.3, 1000.0, 0.3, 1, 0, "macvlan·cni")
    details = {"cni": {"client": {"version": "1.1.1+ds1-3+b5"}, "server": {"version": "1.1.1+ds1-3+b5"}}}
    rec = finish_record({"mode": "macvlan"}, run, None, details)
    assert rec["implementation"] == "cni" and rec["implementation_version"] == "1.1.1+ds1-3+b5"
    plain = finish_record({"mode": "macvlan"}, PlannedRun("r2", "cni", "macvlan", "small", 0.3, 1000.0, 0.3, 1, 1),
                          None, None)
    assert plain["implementation"] == "project" and "implementation_version" not in plain


def test_declared_pairs_on_a_synthetic_study_with_a_gate_that_catches_an_unpredicted_sign(tmp_path):
    """Arm "macvlan·cni" built 30 % slower than "macvlan" (the list predicts "same"): the pair is
    "slower" and the gate names it; "macvlan" vs "host" is not in the declared family."""
    import numpy as np

    from cnibench import results
    from cnibench.analysis import dataset, stats
    from cnibench.analysis.synthetic import Truth, write_study

    truth = Truth(overhead={"host": 1.0, "macvlan": 1.0, "docker-bridge": 1.3}, between_sigma=0.02,
                  block_sigma=0.02, rep_sigma=0.05)
    paths = write_study(tmp_path, modes=("host", "macvlan", "docker-bridge"), sizes=("small",), loads=(0.3,),
                        reps=10, truth=truth, seed=3, duration_s=4)
    for p in paths:
        rec = json.loads(p.read_text())
        if rec["arm"] == "docker-bridge":
            p.unlink()
            rec.update(arm="macvlan·cni", mode="macvlan", implementation="cni",
                       run_id=results.run_id("synthetic", "macvlan-cni", rec["size"], rec["target_rate"],
                                             rec["repetition"]))
            results.write_record(tmp_path, rec)
    ds = dataset.build("synthetic", tmp_path)
    an = stats.analyze(ds, estimator="block-t")
    rows = pairs.family_rows(ds, estimator="block-t", version="1.1.1+ds1-3+b5")
    assert set(rows["arm"]) == {"macvlan·cni"} and set(rows["against"]) == {"macvlan"}
    p99 = rows[rows["percentile"] == 99.0].iloc[0]
    assert p99["verdict"] == "slower" and p99["ratio_lo"] < 1.3 < p99["ratio_hi"] or abs(np.log(p99["ratio"] / 1.3)) < 0.1
    assert p99["gate"] == "FAIL: not predicted" and any("macvlan·cni vs macvlan is slower" in g for g in pairs.gate(rows))
    [(title, table)] = pairs.section(ds, an)
    assert "Declared pairs" in title and len(table) == len(rows)


def test_a_failed_plugin_call_becomes_one_message_in_the_plugins_own_words():
    from cnibench.errors import CommandFailed, FleetError
    from cnibench.infra import cni
    from cnibench.infra.hosts import CommandResult
    from cnibench.modes.engine.cnisteps import plugin_failure

    _, steps = plan_of("macvlan")
    add = adds(steps)[0]
    out = (FIXTURES / "ipvlan-add-error.json").read_text()
    failed = CommandFailed(CommandResult("server", add.argv, 1, out, "", 0.01))
    err = plugin_failure(failed)
    assert isinstance(err, cni.CniError) and err.plugin == "macvlan" and err.command == "ADD"
    assert str(err).startswith("server: CNI ADD of plugin 'macvlan' failed (error code") and "every change undone" in str(err)
    both = plugin_failure(FleetError("mode up", {"client": failed, "server": failed}))
    assert all(isinstance(e, cni.CniError) for e in both.errors.values())
    other = CommandFailed(CommandResult("server", ("ip", "link", "add"), 2, "", "RTNETLINK answers: File exists", 0.0))
    assert plugin_failure(other) is other
