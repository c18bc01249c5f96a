from cnibench.study.precheck import HostReport, parse_cpuinfo, parse_version, probe_commands
from cnibench.infra.packages import install_command, missing


def test_versions_from_real_banners():
    assert parse_version("ip", "ip utility, iproute2-6.1.0, libbpf 1.1.2") == "6.1.0"
    assert parse_version("nginx", "nginx version: nginx/1.22.1") == "1.22.1"
    assert parse_version("h2load", "h2load nghttp2/1.52.0") == "1.52.0"
    assert parse_version("tcpkali", "tcpkali version 1.2.0 (libev, ssl)") == "1.2.0"


def test_cpuinfo():
    text = "processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
    assert parse_cpuinfo(text) == (2, "AMD EPYC")


def test_probes_stay_in_the_throwaway_namespace():
    from cnibench.modes import MODES

    kinds = {k.kind: k for k in MODES.link_kinds()}
    assert {"bridge", "veth", "vxlan", "macvlan", "ipvlan"} <= set(kinds)
    for kind in kinds.values():
        for argv in probe_commands("cnib-probe-x", kind):
            assert argv[:3] == ["ip", "-n", "cnib-probe-x"]
    assert probe_commands("n", kinds["ipvlan"])[-1][-3:] == ["ipvlan", "mode", "l2"]


def test_problems_name_the_fix():
    r = HostReport(name="c", role="client", address="a:22", reachable=True, privileged="root", tools={"ip": "6.1.0"}, data_mtu=1500)
    assert r.problems() == ["no C compiler to build cnib-openloop, the study's load generator: apt-get install -y build-essential"]
    r.tools["h2load"] = "1.52.0"
    assert r.problems() == r.problems()[:1] and r.generators == ["h2load"]  # h2load alone is not the study's generator
    r.tools["cc"] = "12.2.0"
    assert r.problems() == [] and r.generators == ["openloop", "h2load"]


def test_missing_packages():
    assert missing({"definitely-not-a-program-cnib": "pkg-x", "sh": "dash"}) == ["pkg-x"]
    assert install_command(["a"])[:3] == ["apt-get", "install", "-y"]


# --- host tuning (provenance.parse_tuning) and a study's `require` (policy.tuning_mismatches) ---

TUNING = """governor cpu0 performance
governor cpu1 powersave
max_cstate 1
cpuidle_driver intel_idle
cpuidle_governor menu
cstate state0 0 POLL
cstate state1 1 haltpoll idle
irq 38 0-1 virtio2-input.0
irq 39 3 eth0-TxRx-0
"""


def test_tuning_is_parsed_and_checked_against_require():
    from cnibench.study import policy
    from cnibench.study.provenance import parse_tuning

    t = parse_tuning(TUNING)
    assert t["governor"] == {"cpu0": "performance", "cpu1": "powersave"} and t["max_cstate"] == 1
    assert t["cstates"][1] == {"state": "state1", "name": "haltpoll idle", "disabled": True}
    assert t["nic_irqs"][1] == {"irq": "39", "affinity": "3", "name": "eth0-TxRx-0"}
    t.update(mtu=1500, offloads={"tcp-segmentation-offload": True})
    assert policy.tuning_mismatches({}, t, "h") == []
    problems = policy.tuning_mismatches({"governor": "performance", "max_cstate": 1, "mtu": 9000,
                                         "offloads": {"tcp-segmentation-offload": False}}, t, "server")
    assert len(problems) == 3
    assert "server: CPU frequency governor is performance, powersave" in problems[0]
    assert "mtu is 1500, the study requires 9000" in problems[1] and "offload tcp-segmentation-offload is on" in problems[2]
    assert "governor is unknown" in policy.tuning_mismatches({"governor": "performance"}, {"governor": {}}, "vm")[0]
