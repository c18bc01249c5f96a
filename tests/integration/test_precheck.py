"""hosts.check against the testbed: capabilities as the kernel really has them."""

from __future__ import annotations

import json
import subprocess
import sys

from cnibench.study.precheck import check_fleet


def local_kernel_has(kind: str) -> bool:
    """An independent probe on this machine (the testbed hosts share its kernel)."""
    ns = "cnib-probe-t"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"], check=True)
        r = subprocess.run(["ip", "-n", ns, "link", "add", "x0", "link", "p0", "type", kind], capture_output=True)
        return r.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def test_precheck_reports_each_host(with_fleet, testbed):
    reports = with_fleet(check_fleet)
    assert [r.name for r in reports] == ["client", "server"]
    for r in reports:
        assert r.reachable and r.privileged == "root"
        assert r.tools["ip"] and r.tools["nginx"] and r.tools["h2load"]
        assert "h2load" in r.generators and "openloop" in r.generators
        assert r.cpu_count >= 1 and r.kernel
        assert r.data_mtu == 1500 and r.data_address == testbed.host(r.name).data_address
        for kind in ("bridge", "veth", "vxlan", "macvlan"):
            assert r.kernel_features[kind]["ok"], r.kernel_features[kind]
        ipvlan = r.kernel_features["ipvlan"]
        assert ipvlan["ok"] == local_kernel_has("ipvlan")
        if not ipvlan["ok"]:
            assert "no ipvlan driver" in ipvlan["reason"]
    # the probe namespaces are gone
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "cnib-probe" not in names


def test_hosts_check_task_json(testbed):
    out = subprocess.run([sys.executable, "-m", "invoke", "hosts.check", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {d["name"] for d in data} == {"client", "server"} and all(d["reachable"] for d in data)
