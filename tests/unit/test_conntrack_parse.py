"""infra/conntrack.py: /proc/net/nf_conntrack lines parsed (pure); junk is skipped, not trusted."""

from cnibench.infra import conntrack

TEXT = """\
ipv4     2 tcp      6 117 TIME_WAIT src=10.244.1.2 dst=10.96.1.254 sport=40000 dport=80 src=10.244.2.2 dst=10.244.1.2 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=198.18.0.11 dst=10.96.1.254 sport=40001 dport=80 src=10.244.2.2 dst=198.18.0.11 sport=8080 dport=40001 [ASSURED] mark=0 use=1
ipv4     2 udp      17 20 src=1.1.1.1 dst=2.2.2.2 sport=5 dport=53 [UNREPLIED] src=2.2.2.2 dst=1.1.1.1 sport=53 dport=5 mark=0 use=1
ipv4     2 tcp      6 10 CLOSE src=1.2.3.4 dst=$(reboot) sport=1 dport=80 src=a dst=b sport=80 dport=1 mark=0 use=1
ipv6     10 tcp      6 10 CLOSE src=::1 dst=::1 sport=1 dport=80 src=::1 dst=::1 sport=80 dport=1 mark=0 use=1
garbage
"""


def test_parse_keeps_ipv4_entries_with_both_directions():
    e = conntrack.parse(TEXT)
    assert len(e) == 3
    assert (e[0].proto, e[0].state, e[0].dst, e[0].dport, e[0].reply_src) == ("tcp", "TIME_WAIT", "10.96.1.254", 80,
                                                                                "10.244.2.2")
    assert e[2].proto == "udp" and e[2].state is None


def test_matching_counts_the_flows_to_the_dialled_address():
    e = conntrack.parse(TEXT)
    m = conntrack.matching(e, "10.96.1.254", 80)
    assert len(m) == 2 and all(x.reply_src != x.dst for x in m)  # DNATed: the reply comes from the pod
    assert conntrack.matching(e, "10.96.1.254", 81) == []
