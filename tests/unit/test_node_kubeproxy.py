"""modes/node: kube-proxy's rules (nftables and iptables modes) and flannel's --ip-masq rules
rendered for the inputs of kube-proxy's own unit tests and compared with their expected dumps
(tests/fixtures/kubeproxy/); the node steps, their undos and the Service VIP endpoint (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnibench.modes import get_mode
from cnibench.modes.base import HostFact, HostFacts
from cnibench.modes.engine.trust import undo_allowed
from cnibench.modes.node import flannel_masq, kubeproxy, steps
from cnibench.modes.settings import SettingError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "kubeproxy"
SVC1 = kubeproxy.Service("svc1", "172.30.0.41", 80, "10.180.0.1", 80, namespace="ns1")
HOSTS = HostFacts((
    HostFact("client", "client", "eth0", "198.18.0.11", 24, 1500, "02:00:00:00:00:01", l2_peers=("server",)),
    HostFact("server", "server", "eth0", "198.18.0.12", 24, 1500, "02:00:00:00:00:02", l2_peers=("client",)),
))


def lines(name: str) -> list[str]:
    return [ln for ln in (FIX / name).read_text().splitlines() if ln.strip()]


def test_nft_base_rules_are_kube_proxys():
    assert kubeproxy.nft_base("172.30.0.0/16", "192.168.0.2", table="kube-proxy") == lines("nft_base.txt")


def test_nft_service_matches_the_svc1_dump_names_and_hashes_included():
    got = kubeproxy.nft_service(SVC1, "10.0.0.0/8", table="kube-proxy")
    assert sorted(got) == sorted(lines("nft_svc1.txt"))
    # both chains are declared before any rule that jumps to them (nft -f needs it)
    assert [g.split()[:2] for g in got[:2]] == [["add", "chain"], ["add", "chain"]]


def test_ipt_service_matches_the_svc1_dump():
    assert sorted(kubeproxy.ipt_service(SVC1, "10.0.0.0/8")) == sorted(lines("ipt_svc1.txt"))
    assert kubeproxy.svc_chain(SVC1) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert kubeproxy.sep_chain(SVC1) == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def test_ipt_fixed_chains_match_but_for_the_written_differences():
    want = [ln for ln in lines("ipt_fixed.txt") if ln not in ("*filter", "*nat", "COMMIT")]
    base = kubeproxy.ipt_base()
    got = [ln for ln in base["filter"] + base["nat"] if not ln.startswith("-I ")] + [kubeproxy.NODEPORTS_LAST]
    # the intended differences: no nfacct counter; MASQUERADE --random-fully (the kernel has it;
    # the test's fake iptables does not)
    want = [w.replace(" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts", "") for w in want]
    want = [w + " --random-fully" if w.endswith("requiring SNAT\" -j MASQUERADE") else w for w in want]
    assert sorted(got) == sorted(want)
    jumps = [ln for ln in base["nat"] if ln.startswith("-I ")]
    assert '-I PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in jumps


def test_flannel_masq_rules_in_flannels_order():
    r = flannel_masq.rules("10.244.0.0/16", "10.244.1.0/24")
    assert r[1] == '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'
    assert r[2].startswith("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000")
    assert r[-2] == ('-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
                     "-j MASQUERADE --random-fully")


def test_services_put_the_measured_one_in_the_middle_and_dnat_it_to_the_pod():
    svcs, measured = kubeproxy.services(1000, "10.96.0.0/12", "10.244.0.0/16", ("10.244.2.2", 8080))
    assert len(svcs) == 1000 and len({s.vip for s in svcs}) == 1000 and svcs[500] is measured
    assert (measured.endpoint, measured.target_port) == ("10.244.2.2", 8080)
    assert all(s.endpoint != "10.244.2.2" for s in svcs if s is not measured)
    with pytest.raises(ValueError):
        kubeproxy.services(10, "10.96.0.0/28", "10.244.0.0/16", ("10.244.2.2", 8080))


def test_chunks_fit_one_argv_word_and_keep_every_line():
    text = [f"line {i} " + "x" * 100 for i in range(3000)]
    parts = kubeproxy.chunks(text, limit=60_000)
    assert [ln for p in parts for ln in p] == text and all(len("\n".join(p)) <= 60_000 for p in parts)


@pytest.mark.parametrize("mode,kp", [("flannel-vxlan", "nftables"), ("flannel-vxlan", "iptables"),
                                     ("calico-routed", "iptables")])
def test_node_steps_and_undos(mode, kp):
    m = get_mode(mode)
    s = m.settings({"node": "kubernetes", "kube_proxy": kp, "via": "service", "services": 50})
    bare = m.endpoint(HOSTS, s)
    plan = steps.plan(HOSTS, s, bare, m.ip_masq)
    assert plan and all(not st.undo or undo_allowed(st.host, list(st.undo), "eth0", mode) for st in plan)
    words = " ".join(" ".join(st.argv) for st in plan)
    assert ("-j FLANNEL-POSTRTG" in words) == m.ip_masq
    assert ("nft -f -" in words) == (kp == "nftables") and ("KUBE-SVC-" in words) == (kp == "iptables")
    ep = steps.endpoint(bare, s)
    assert ep.connect_address.startswith("10.96.") and ep.connect_port == 80 and ep.server_bind == bare.server_bind
    assert steps.plan(HOSTS, m.settings({}), bare, m.ip_masq) == []  # bare: nothing


def test_node_settings_are_checked():
    with pytest.raises(SettingError, match="via"):
        get_mode("host").settings({"via": "service"})
    with pytest.raises(SettingError, match="kube_proxy"):
        get_mode("host").settings({"node": "kubernetes", "kube_proxy": "ipvs"})
    with pytest.raises(SettingError, match="services"):
        get_mode("host").settings({"node": "kubernetes", "services": 0})


def test_clean_without_a_journal_undoes_only_a_run_directory_it_finds():
    assert steps.leftovers("client", "") == []
    [argv] = steps.leftovers("client", "present\n")
    assert argv[:3] == ["sh", "-c", steps.IPT_UNDO_SH] and argv[-1] == steps.run_dir("client")
    assert undo_allowed("client", argv, "eth0", "host")
    assert not undo_allowed("client", ["sh", "-c", steps.IPT_UNDO_SH, "cnib", "/"], "eth0", "host")
