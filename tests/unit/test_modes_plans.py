"""Plans are pure functions of host facts and settings: check them without any host."""

from __future__ import annotations

import pytest

from cnibench.errors import PlanError
from cnibench.modes import MODES, ModeSettings, get_mode
from cnibench.modes.addressing import pod_subnets
from cnibench.modes.base import LOCAL, HostFact, HostFacts, RouterFact, Step
from cnibench.modes.cli import format_plan
from cnibench.modes.engine.apply import setup_cost
from cnibench.modes.engine.aws import AwsSettings


def facts(l2=True, names=("client", "server"), mtu=1500, router=True) -> HostFacts:
    hosts = []
    for i, n in enumerate(names):
        peers = tuple(p for p in names if p != n) if l2 else ()
        hosts.append(HostFact(n, "client" if i == 0 else "server", "eth0", f"198.18.0.{11 + i}", 24, mtu, f"02:00:00:00:00:0{i}",
                              ip_forward=0, accept_redirects=1, l2_peers=peers, ssh_peer=f"198.19.{i}.1", ssh_interface="mgmt0",
                              data_ifindex=2 + i))
    r = RouterFact("cnib-fabric", "198.18.0.1", "cnibbr0", routes=1) if router else None
    return HostFacts(tuple(hosts), r)


def cmds(steps, host=None):
    return [" ".join(s.argv) for s in steps if host is None or s.host == host]


def test_modes_are_registered_in_the_contract_order():
    assert MODES.names() == ("host", "flannel-vxlan", "flannel-host-gw", "flannel-aws-vpc", "ipvlan", "macvlan", "docker-bridge", "calico-routed", "ebpf-redirect")
    assert [get_mode(m).name for m in MODES] == list(MODES)


def test_unknown_mode_lists_the_known_ones():
    with pytest.raises(PlanError) as e:
        get_mode("flannel-vxlam")
    assert "flannel-vxlan" in str(e.value) and "calico-routed" in str(e.value) and "Did you mean" in str(e.value)


def settings_of(name, **kw):
    """Mode `name`'s own settings (each kind has its settings type)."""
    return get_mode(name).settings(kw)


def test_host_mode_creates_nothing_and_serves_on_the_data_address():
    m = get_mode("host")
    assert m.plan(facts(), ModeSettings()) == []
    ep = m.endpoint(facts(), ModeSettings())
    assert (ep.client_netns, ep.server_netns, ep.connect_address, ep.connect_port) == (None, None, "198.18.0.12", 8080)


def test_subnets_per_host_from_cluster_cidr():
    subnets = pod_subnets(facts(), ModeSettings())
    assert {k: str(v) for k, v in subnets.items()} == {"client": "10.244.1.0/24", "server": "10.244.2.0/24"}
    subnets = pod_subnets(facts(), ModeSettings(cluster_cidr="10.50.0.0/16", subnet_prefix=26))
    assert str(subnets["server"]) == "10.50.0.128/26"


def test_flannel_vxlan_plan_programs_what_flanneld_does():
    steps = get_mode("flannel-vxlan").plan(facts(), settings_of("flannel-vxlan"))
    c = cmds(steps, "client")
    assert "sysctl -q -w net.ipv4.ip_forward=1" in c
    assert "ip link add name cnibcni0 mtu 1450 type bridge" in c
    assert "ip addr add 10.244.1.1/24 dev cnibcni0" in c
    assert "ip link add name cnibvclient mtu 1450 type veth peer name eth0 mtu 1450 netns cnib-client-pod" in c
    assert "ip link add name cnibflannel.1 address 0e:cb:c6:12:00:0b mtu 1450 type vxlan id 1 local 198.18.0.11 dev eth0 dstport 8472 nolearning" in c
    assert "ip addr add 10.244.1.0/32 dev cnibflannel.1" in c
    # per peer: onlink route, permanent neighbour, FDB entry to the peer's data address
    assert "ip route add 10.244.2.0/24 via 10.244.2.0 dev cnibflannel.1 onlink proto 203" in c
    assert "ip neigh add 10.244.2.0 lladdr 0e:cb:c6:12:00:0c dev cnibflannel.1 nud permanent" in c
    assert "bridge fdb append 0e:cb:c6:12:00:0c dev cnibflannel.1 dst 198.18.0.12" in c
    assert "ip -n cnib-client-pod route add default via 10.244.1.1" in c
    # every created host object has an undo; the container's objects go with its namespace
    undo = {" ".join(s.argv): s.undo for s in steps if s.host == "client"}
    assert undo["ip netns add cnib-client-pod"] == ("ip", "netns", "del", "cnib-client-pod")
    assert undo["sysctl -q -w net.ipv4.ip_forward=1"] == ("sysctl", "-q", "-w", "net.ipv4.ip_forward=0", "net.ipv4.conf.all.accept_redirects=1")


def test_vxlan_mtu_follows_the_data_mtu_and_the_override():
    steps = get_mode("flannel-vxlan").plan(facts(mtu=9001), settings_of("flannel-vxlan"))
    assert any("mtu 8951 type vxlan" in c for c in cmds(steps))
    steps = get_mode("flannel-vxlan").plan(facts(), settings_of("flannel-vxlan", mtu=1400))
    assert any("cnibvclient mtu 1400" in c for c in cmds(steps))
    with pytest.raises(PlanError, match="MTU 1480"):
        get_mode("flannel-vxlan").plan(facts(), settings_of("flannel-vxlan", mtu=1480))


def test_host_gw_routes_via_peer_data_address_and_refuses_without_l2():
    steps = get_mode("flannel-host-gw").plan(facts(), settings_of("flannel-host-gw"))
    route = next(s for s in steps if s.host == "server" and s.argv[:3] == ("ip", "route", "add"))
    assert " ".join(route.argv) == "ip route add 10.244.1.0/24 via 198.18.0.11 dev eth0 proto 203"
    assert route.undo == ("ip", "route", "del", *route.argv[3:])
    assert not any("vxlan" in c for c in cmds(steps))
    with pytest.raises(PlanError, match="one L2 segment"):
        get_mode("flannel-host-gw").plan(facts(l2=False), settings_of("flannel-host-gw"))


def test_aws_vpc_on_the_testbed_programs_the_fabric_router():
    steps = get_mode("flannel-aws-vpc").plan(facts(), settings_of("flannel-aws-vpc"))
    local = [s for s in steps if s.host == LOCAL]
    assert all(s.netns == "cnib-fabric" for s in local)
    assert "ip route add 10.244.1.0/24 via 198.18.0.11 dev cnibbr0 proto 203" in cmds(local)
    assert "sysctl -q -w net.ipv4.conf.all.send_redirects=0" in cmds(local)
    assert "ip route add 10.244.0.0/16 via 198.18.0.1 dev eth0 proto 203" in cmds(steps, "client")


def test_aws_vpc_route_limit_is_enforced_like_aws():
    with pytest.raises(PlanError, match="RouteLimitExceeded"):
        get_mode("flannel-aws-vpc").plan(facts(), settings_of("flannel-aws-vpc", route_limit=2))  # 1 existing + 2 hosts
    names = tuple(f"h{i}" for i in range(51))
    with pytest.raises(PlanError, match="RouteLimitExceeded"):
        get_mode("flannel-aws-vpc").plan(facts(names=names, router=True), settings_of("flannel-aws-vpc", subnet_prefix=24))


def test_aws_vpc_on_aws_uses_ec2_calls_and_no_router_namespace():
    aws = AwsSettings(route_table_id="rtb-1", instances={"client": "i-1", "server": "i-2"})
    steps = get_mode("flannel-aws-vpc").plan(facts(router=False), settings_of("flannel-aws-vpc", aws=aws))
    ec2 = [s for s in steps if s.host == "@aws"]
    assert " ".join(ec2[0].argv) == "ec2 modify-instance-attribute --instance-id i-1 --no-source-dest-check"
    assert " ".join(ec2[1].argv) == "ec2 create-route --route-table-id rtb-1 --destination-cidr-block 10.244.1.0/24 --instance-id i-1"
    assert ec2[1].undo[:2] == ("ec2", "delete-route")
    assert not any(s.host == LOCAL for s in steps)


@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_ipvlan_plan_moves_an_ipvlan_link_into_an_empty_container(mode):
    steps = get_mode("ipvlan").plan(facts(), settings_of("ipvlan", ipvlan_mode=mode))
    c = cmds(steps, "client")
    assert c[0] == "ip netns add cnib-client-pod"
    assert f"ip link add name cnibiclient link eth0 type ipvlan mode {mode}" in c
    assert "ip link set cnibiclient netns cnib-client-pod" in c
    assert "ip -n cnib-client-pod link set cnibiclient name eth0" in c
    assert not any("bridge" in x or "veth" in x for x in c)
    if mode == "l2":
        assert "ip -n cnib-client-pod route add 10.244.0.0/16 dev eth0" in c
        assert not any(x.startswith("ip route add") for x in c)
    else:
        assert "ip -n cnib-client-pod addr add 10.244.1.2/32 dev eth0" in c
        assert "ip route add 10.244.2.0/24 via 198.18.0.12 dev eth0 proto 203" in c


def test_ipvlan_rejects_an_unknown_ipvlan_mode():
    with pytest.raises(PlanError, match="l2 or l3"):
        get_mode("ipvlan").plan(facts(), settings_of("ipvlan", ipvlan_mode="l3s"))


def test_macvlan_is_bridge_mode_and_not_ipvlan():
    c = cmds(get_mode("macvlan").plan(facts(), settings_of("macvlan")))
    assert "ip link add name cnibmclient link eth0 type macvlan mode bridge" in c
    assert not any("ipvlan" in x for x in c)


def test_docker_bridge_publishes_a_port_with_dnat_on_the_server_only():
    m = get_mode("docker-bridge")
    steps = m.plan(facts(), m.settings())
    assert "nft add rule ip cnib_docker prerouting ip daddr 198.18.0.12 tcp dport 30080 counter dnat to 172.17.0.2:8080" in cmds(steps, "server")
    assert not any("dnat" in x for x in cmds(steps, "client"))
    assert any("masquerade" in x for x in cmds(steps, "client"))
    ep = m.endpoint(facts(), m.settings())
    assert (ep.server_bind, ep.server_port, ep.connect_address, ep.connect_port) == ("172.17.0.2", 8080, "198.18.0.12", 30080)


def test_calico_routed_has_no_bridge_and_proxy_arp():
    c = cmds(get_mode("calico-routed").plan(facts(), settings_of("calico-routed")), "server")
    assert not any("type bridge" in x or "master" in x for x in c)
    assert any("net.ipv4.conf.cnibcserver.proxy_arp=1" in x for x in c)
    assert "ip route add 10.244.2.2/32 dev cnibcserver scope link proto 203" in c
    assert "ip -n cnib-server-pod route add default via 169.254.1.1 dev eth0" in c


@pytest.mark.parametrize("name", MODES.names())
def test_every_plan_keeps_ssh_and_data_interfaces_untouched(name):
    for s in get_mode(name).plan(facts(), settings_of(name)):
        a = s.argv
        if a[:1] != ("ip",) or "-n" in a[:2]:
            continue
        assert not (a[1] == "link" and a[2] in ("set", "del") and a[3] in ("eth0", "mgmt0")), a
        assert not (a[1] == "addr" and a[-1] in ("eth0", "mgmt0")), a
        if a[1] == "route":
            assert a[-2:] == ("proto", "203"), a  # only our own, marked routes


@pytest.mark.parametrize("name", [m for m in MODES if m != "host"])
def test_every_created_host_object_carries_the_prefix(name):
    for s in get_mode(name).plan(facts(), settings_of(name)):
        a = s.argv
        if a[:3] == ("ip", "link", "add"):
            assert a[4].startswith("cnib") and len(a[4]) <= 15
        if a[:3] == ("ip", "netns", "add"):
            assert a[3].startswith("cnib-")
        if a[:3] == ("nft", "add", "table"):
            assert a[4].startswith("cnib")


def test_bad_settings_are_refused_with_one_clear_message():
    vx = get_mode("flannel-vxlan")
    with pytest.raises(PlanError, match="overlaps the data network"):
        vx.plan(facts(), settings_of("flannel-vxlan", cluster_cidr="198.18.0.0/16"))
    with pytest.raises(PlanError, match="SSH source"):
        vx.plan(facts(), settings_of("flannel-vxlan", cluster_cidr="198.19.0.0/16"))
    with pytest.raises(PlanError, match="too few for 2 hosts"):
        vx.plan(facts(), settings_of("flannel-vxlan", cluster_cidr="10.244.0.0/24", subnet_prefix=24))
    with pytest.raises(PlanError, match="not an IPv4 network"):
        vx.plan(facts(), settings_of("flannel-vxlan", cluster_cidr="10.244.0.1/16"))
    with pytest.raises(PlanError, match="docker_cidr"):
        get_mode("docker-bridge").plan(facts(), settings_of("docker-bridge", docker_cidr="198.18.0.0/23"))


def test_interface_names_over_15_characters_are_refused():
    long = HostFacts(tuple(HostFact(n, r, "eth0", a, 24, 1500, "", l2_peers=(p,)) for n, r, a, p in
                           (("averylonghostname", "client", "198.18.0.11", "server"), ("server", "server", "198.18.0.12", "averylonghostname"))))
    with pytest.raises(PlanError, match="at most 15"):
        get_mode("flannel-host-gw").plan(long, settings_of("flannel-host-gw"))


def test_plans_are_deterministic_and_printable():
    a = get_mode("flannel-vxlan").plan(facts(), settings_of("flannel-vxlan"))
    assert a == get_mode("flannel-vxlan").plan(facts(), settings_of("flannel-vxlan"))
    assert [Step.from_dict(s.to_dict()) for s in a] == a
    text = format_plan(a)
    assert text.startswith("# client\nsysctl -q -w net.ipv4.ip_forward=1\nip netns add cnib-client-pod\n")
    assert "\n# server\n" in text
    undo = format_plan(a, undo=True)
    assert undo.index("ip link del cnibflannel.1") < undo.index("ip netns del cnib-client-pod")


def test_setup_cost_counts_commands_and_kernel_objects():
    steps = get_mode("flannel-vxlan").plan(facts(), settings_of("flannel-vxlan"))
    cost = setup_cost(steps)
    assert cost["commands"] == len(steps)
    # per host: netns, bridge, bridge addr, veth, pod addr, pod route, vxlan, vxlan addr, route, neigh, fdb
    assert cost["kernel_objects"] == 2 * 11
    assert setup_cost(get_mode("host").plan(facts(), settings_of("host"))) == {"commands": 0, "kernel_objects": 0}
