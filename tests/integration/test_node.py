"""`node: kubernetes` on the testbed: kube-proxy's rules for 1,000 Services (nftables mode, and
iptables mode through iptables-nft, with flannel's masquerade for flannel), a flow through the
Service VIP reaches the server pod and creates conntrack entries; down leaves every host as found
(nft ruleset, iptables-nft tables, routes, sysctls: the testbed's state capture)."""

from __future__ import annotations

import shutil

import pytest

from cnibench.infra import conntrack
from cnibench.modes import get_mode, mode_down, mode_up, mode_verify

from test_modes import snapshot, state_diff

pytestmark = pytest.mark.skipif(not shutil.which("iptables-nft-restore", path="/usr/sbin:/usr/bin"),
                                reason="needs iptables (iptables-nft): apt-get install -y iptables")


@pytest.mark.parametrize("mode,kube_proxy", [("flannel-vxlan", "nftables"),  # iptables: long tier; its rules are cleaned below
                                             pytest.param("flannel-vxlan", "iptables", marks=pytest.mark.long),
                                             pytest.param("host", "nftables", marks=pytest.mark.long)])
def test_node_up_via_service_tracks_the_flow_and_down_leaves_hosts_as_found(with_fleet, mode, kube_proxy):
    settings = get_mode(mode).settings({"node": "kubernetes", "via": "service", "kube_proxy": kube_proxy})

    async def body(fleet):
        before = await snapshot(fleet)
        endpoint = await mode_up(fleet, mode, settings)
        try:
            assert endpoint.connect_address.startswith("10.96.")  # the Service VIP
            result = await mode_verify(fleet, mode, settings)
            assert result.ok, str(result)
            assert await conntrack.count(fleet.client, endpoint.connect_address, endpoint.connect_port) > 0
        finally:
            await mode_down(fleet, mode)
        return state_diff(before, await snapshot(fleet))

    d = with_fleet(body)
    assert d == {}, "\n".join(f"{h}:\n" + "\n".join(v.values()) for h, v in d.items())


def test_clean_without_the_journal_removes_the_iptables_nft_rules(with_fleet):
    """The journal lost after up (iptables mode): `clean` finds the node's run directory and undoes
    the iptables-nft part; the nft table goes by its cnib_ prefix; every host as found."""
    from cnibench.modes.clean import clean
    from cnibench.modes.engine import state as store

    mode = "flannel-vxlan"
    settings = get_mode(mode).settings({"node": "kubernetes", "kube_proxy": "iptables", "services": 100})

    async def body(fleet):
        before = await snapshot(fleet)
        await mode_up(fleet, mode, settings)
        store.remove_driver(fleet.inventory)
        for h in fleet:
            await h.run(["rm", "-f", store.host_state_path(h.name)])
        await clean(fleet)
        return state_diff(before, await snapshot(fleet))

    d = with_fleet(body)
    assert d == {}, "\n".join(f"{h}:\n" + "\n".join(v.values()) for h, v in d.items())
