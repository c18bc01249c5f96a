"""Study key `variants` (study/variants.py): arms "<mode>·<name>" with settings added, their
settings per arm, refusals before anything runs; studies/node.yml parses into its six arms."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnibench.errors import ConfigError
from cnibench.infra import conntrack
from cnibench.study.matrix import plan
from cnibench.study.runner import mode_settings
from cnibench.study.spec import load_study

ROOT = Path(__file__).resolve().parents[2]


def test_node_study_has_bare_and_node_arms_of_each_mode():
    s = load_study(ROOT / "studies" / "node.yml")
    assert [a for a, _ in s.arms] == ["host", "flannel-vxlan", "host·k8s", "host·k8s·svc", "flannel-vxlan·k8s",
                                      "flannel-vxlan·k8s·svc"]
    assert s.repetitions == 10 and s.loads == (0.3,) and s.reference == "host"
    assert mode_settings(s, "host", "host") is None
    k = mode_settings(s, "flannel-vxlan", "flannel-vxlan·k8s·svc")
    assert (k.node, k.via, k.services, k.kube_proxy) == ("kubernetes", "service", 1000, "nftables")
    assert {r.arm for r in plan(s, {"small": 10000})} == {a for a, _ in s.arms}


def write(tmp_path, extra: str) -> Path:
    p = tmp_path / "s.yml"
    p.write_text("modes: [host, flannel-vxlan]\nreference: host\nload: {rates: [1000]}\n" + extra)
    return p


@pytest.mark.parametrize("extra,word", [("variants: {k8s: {node: cluster}}", "node"),
                                        ("variants: {k8s: {via: service}}", "via"),
                                        ("variants: {'Bad Name': {node: kubernetes}}", "suffix"),
                                        ("variants: {k8s: {}}", "non-empty"),
                                        ("variants: [k8s]", "mapping")])
def test_bad_variants_are_refused_with_one_message(tmp_path, extra, word):
    with pytest.raises(ConfigError, match=word):
        load_study(write(tmp_path, extra))


def test_twin_still_comes_last(tmp_path):
    s = load_study(write(tmp_path, "twin: true\nvariants: {k8s: {node: kubernetes}}"))
    assert s.arms[-1] == ("host·A/A", "host") and ("host·k8s", "host") in s.arms


def test_flow_entries_count_the_measured_flows_per_side():
    ep = {"connect_address": "10.96.1.254", "connect_port": 80, "server_bind": "10.244.2.2", "server_port": 8080}
    text = ("ipv4 2 tcp 6 117 ESTABLISHED src=10.244.1.2 dst=10.96.1.254 sport=1 dport=80 src=10.244.2.2 "
            "dst=10.244.1.2 sport=8080 dport=1 [ASSURED] use=1\n"
            "ipv4 2 tcp 6 117 ESTABLISHED src=10.244.1.2 dst=10.244.2.2 sport=1 dport=8080 src=10.244.2.2 "
            "dst=10.244.1.2 sport=8080 dport=1 [ASSURED] use=1\n")
    e = conntrack.parse(text)
    assert conntrack.flow_entries(e, ep, "client") == 1 and conntrack.flow_entries(e, ep, "server") == 2
