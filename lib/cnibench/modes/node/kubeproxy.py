"""kube-proxy's rules for N ClusterIP Services (pure), in its nftables and iptables modes.

The shapes are kube-proxy's own (kubernetes/kubernetes pkg/proxy/nftables/proxier.go and
pkg/proxy/iptables/proxier.go, read at the commit whose nftables `proxier_test.go` is
030880a5dc5449403c6d1f0aa146a7dc21d6c6dc), written anew here and checked against the expected
dumps of their unit tests (TestOverallNFTablesRules' `baseRules` and svc1; TestOverallIPTablesRules'
svc1, tests/unit/test_node_kubeproxy.py): chain names are kube-proxy's hashes (base32 of
SHA-256), a Service is one TCP port with one endpoint, masquerade bit 0x4000.

Intended differences (the list the record cites):
- nftables: the table is `ip cnib_kube_proxy` (ownership: clean sweeps cnib_ tables), not `ip kube-proxy`.
- iptables: the KUBE-FORWARD INVALID drop has no `-m nfacct` counter (no nfacct objects here).
- no NodePort, LoadBalancer or ExternalIP Services; no kube-proxy sysctls (nf_conntrack_max,
  timeouts): the node's conntrack settings stay as found.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

from ...catalog import PREFIX

NFT_TABLE = f"{PREFIX}_kube_proxy"
MASQ_BIT = "0x4000"
NAMESPACE = "cnib"


@dataclass(frozen=True)
class Service:
    name: str  # a Service name in NAMESPACE
    vip: str  # its ClusterIP
    port: int  # its port (TCP), named p<port>
    endpoint: str  # the one endpoint's address
    target_port: int
    namespace: str = NAMESPACE

    @property
    def port_name(self) -> str:
        return f"{self.namespace}/{self.name}:p{self.port}"  # ServicePortName.String()


def services(count: int, service_cidr: str, cluster_cidr: str, measured: tuple[str, int],
             port: int = 80) -> tuple[list[Service], Service]:
    """`count` Services on `port`, VIPs from .10 of the service CIDR: the measured one DNATs to
    `measured` (address, port), the others each to one address from the top of the cluster CIDR
    (pods nobody runs). The measured one is in the middle of the order (kube-proxy's iptables
    KUBE-SERVICES is walked in order: the middle is a random Service's expected place)."""
    net = ipaddress.IPv4Network(service_cidr)
    pods = ipaddress.IPv4Network(cluster_cidr)
    if not 1 <= count <= min(net.num_addresses - 12, pods.num_addresses // 2):
        raise ValueError(f"{count} Services do not fit in {service_cidr} / {cluster_cidr}")
    mid = count // 2
    out = []
    for i in range(count):
        vip = str(net.network_address + 10 + i)
        ep, target = measured if i == mid else (str(pods.broadcast_address - 1 - i), 8080)
        out.append(Service(f"svc-{i:05d}", vip, port, ep, target))
    return out, out[mid]


def _b32(text: str, n: int) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:n]


# -- nftables mode ------------------------------------------------------------------------------

def nft_chain_base(s: Service, endpoint: str | None = None) -> str:
    """servicePortChainNameBase / servicePortEndpointChainNameBase (hashAndTruncate)."""
    name = f"{s.namespace}/{s.name}/tcp/p{s.port}" + (f"__{endpoint}" if endpoint else "")
    name = f"{_b32(name, 8)}-{name}"
    return name if len(name) <= 112 else name[:109] + "..."


def nft_base(service_cidr: str, node_ip: str, table: str = NFT_TABLE) -> list[str]:
    """The rules every node has (the test's baseRules, the table named `table`)."""
    t = f"ip {table}"
    vs = "type ipv4_addr . inet_proto . inet_service : verdict"
    out = [f'add table {t} {{ comment "rules for kube-proxy" ; }}',
           f'add set {t} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}',
           f'add set {t} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}',
           f'add map {t} firewall-ips {{ {vs} ; '
           'comment "destinations that are subject to LoadBalancerSourceRanges" ; }',
           f'add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; '
           'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }',
           f'add map {t} no-endpoint-services {{ {vs} ; '
           'comment "vmap to drop or reject packets to services with no endpoints" ; }',
           f'add map {t} service-ips {{ {vs} ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}',
           f'add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; '
           'comment "NodePort traffic" ; }']
    hooks = {"filter-prerouting-pre-dnat": "filter hook prerouting priority -110",
             "filter-output-pre-dnat": "filter hook output priority -110",
             "filter-forward": "filter hook forward priority 0",
             "filter-input": "filter hook input priority 0", "filter-output": "filter hook output priority 0",
             "nat-output": "nat hook output priority -100", "nat-postrouting": "nat hook postrouting priority 100",
             "nat-prerouting": "nat hook prerouting priority -100"}
    for c in ("cluster-ips-check", *list(hooks)[:5], "firewall-check", "mark-for-masquerade", "masquerading",
              *list(hooks)[5:], "nodeport-endpoints-check", "reject-chain", "services", "service-endpoints-check"):
        extra = (f" {{ type {hooks[c]} ; }}" if c in hooks else
                 ' { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }'
                 if c == "reject-chain" else "")
        out.append(f"add chain {t} {c}{extra}")
    rules = [
        ("cluster-ips-check", 'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"'),
        ("cluster-ips-check", f'ip daddr {{ {service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"'),
        ("filter-prerouting-pre-dnat", "ct state new jump firewall-check"),
        ("filter-forward", "ct state new jump service-endpoints-check"),
        ("filter-forward", "ct state new jump cluster-ips-check"),
        ("filter-input", "ct state new jump nodeport-endpoints-check"),
        ("filter-input", "ct state new jump service-endpoints-check"),
        ("filter-output", "ct state new jump service-endpoints-check"),
        ("filter-output-pre-dnat", "ct state new jump firewall-check"),
        ("filter-output", "ct state new jump cluster-ips-check"),
        ("firewall-check", "ip daddr . meta l4proto . th dport vmap @firewall-ips"),
        ("mark-for-masquerade", f"mark set mark or {MASQ_BIT}"),
        ("masquerading", f"mark and {MASQ_BIT} == 0 return"),
        ("masquerading", f"mark set mark xor {MASQ_BIT}"),
        ("masquerading", "masquerade fully-random"),
        ("nat-output", "jump services"), ("nat-postrouting", "jump masquerading"), ("nat-prerouting", "jump services"),
        ("nodeport-endpoints-check", "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"),
        ("reject-chain", "reject"),
        ("services", "ip daddr . meta l4proto . th dport vmap @service-ips"),
        ("services", "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"),
    ]
    out += [f"add rule {t} {c} {r}" for c, r in rules]
    out += [f"add element {t} nodeport-ips {{ {node_ip} }}",
            f"add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services"]
    return out


def nft_service(s: Service, cluster_cidr: str, table: str = NFT_TABLE) -> list[str]:
    """One ClusterIP Service with one endpoint (the test's svc1 block)."""
    t = f"ip {table}"
    ep = f"{s.endpoint}/{s.target_port}"
    svc, epc = f"service-{nft_chain_base(s)}", f"endpoint-{nft_chain_base(s, ep)}"
    # Both chains first: `nft -f` refuses a goto to a chain not declared yet.
    return [f"add chain {t} {svc}",
            f"add chain {t} {epc}",
            f"add rule {t} {svc} ip daddr {s.vip} ip saddr != {cluster_cidr} jump mark-for-masquerade",
            f"add rule {t} {svc} numgen random mod 1 vmap {{ 0 : goto {epc} }}",
            f"add rule {t} {epc} ip saddr {s.endpoint} jump mark-for-masquerade",
            f"add rule {t} {epc} meta l4proto tcp dnat to {s.endpoint}:{s.target_port}",
            f"add element {t} cluster-ips {{ {s.vip} }}",
            f"add element {t} service-ips {{ {s.vip} . tcp . {s.port} : goto {svc} }}"]


# -- iptables mode (iptables-nft) ---------------------------------------------------------------

IPT_JUMPS = (  # iptablesJumpChains (+ the kubelet's KUBE-FIREWALL): (table, from, to, comment, extra)
    ("filter", "INPUT", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals",
     "-m conntrack --ctstate NEW"),
    ("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals",
     "-m conntrack --ctstate NEW"),
    ("filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports", ""),
    ("filter", "FORWARD", "KUBE-SERVICES", "kubernetes service portals", "-m conntrack --ctstate NEW"),
    ("filter", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", "-m conntrack --ctstate NEW"),
    ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", ""),
    ("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals", ""),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules", ""),
    ("filter", "INPUT", "KUBE-FIREWALL", "", ""),
    ("filter", "OUTPUT", "KUBE-FIREWALL", "", ""),
)
IPT_FILTER_CHAINS = ("KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL", "KUBE-FORWARD",
                     "KUBE-PROXY-FIREWALL")
IPT_NAT_CHAINS = ("KUBE-NODEPORTS", "KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING")


def svc_chain(s: Service) -> str:
    return "KUBE-SVC-" + _b32(s.port_name + "tcp", 16)  # servicePortPolicyClusterChain


def sep_chain(s: Service) -> str:
    return "KUBE-SEP-" + _b32(s.port_name + "tcp" + f"{s.endpoint}:{s.target_port}", 16)


def _q(comment: str) -> str:
    return f'"{comment}"' if " " in comment else comment


def ipt_jump(table: str, src: str, dst: str, comment: str, extra: str) -> str:
    """The `-I <src> ...` rule kube-proxy ensures (iptables-restore form, without -t)."""
    words = [extra] if extra else []
    if comment:
        words += ["-m", "comment", "--comment", _q(comment)]
    return " ".join([f"-I {src}", *words, f"-j {dst}"])


def ipt_base() -> dict[str, list[str]]:
    """Each table's chains and fixed rules (iptables-restore lines, no COMMIT)."""
    filt = [f":{c} - [0:0]" for c in IPT_FILTER_CHAINS] + [
        '-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 '
        "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_BIT}/{MASQ_BIT} '
        "-j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
        "RELATED,ESTABLISHED -j ACCEPT"]
    nat = [f":{c} - [0:0]" for c in IPT_NAT_CHAINS] + [
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_BIT}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_BIT}/{MASQ_BIT} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_BIT}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully"]
    for table, src, dst, comment, extra in IPT_JUMPS:
        (filt if table == "filter" else nat).append(ipt_jump(table, src, dst, comment, extra))
    return {"filter": filt, "nat": nat}


def ipt_service(s: Service, cluster_cidr: str) -> list[str]:
    """One ClusterIP Service's nat lines (the test's svc1 lines): chains declared, then rules."""
    svc, sep, pn = svc_chain(s), sep_chain(s), s.port_name
    return [f":{svc} - [0:0]", f":{sep} - [0:0]",
            f'-A KUBE-SERVICES -m comment --comment "{pn} cluster IP" -m tcp -p tcp -d {s.vip} --dport {s.port} '
            f"-j {svc}",
            f"-A {sep} -m comment --comment {pn} -s {s.endpoint} -j KUBE-MARK-MASQ",
            f"-A {sep} -m comment --comment {pn} -m tcp -p tcp -j DNAT --to-destination {s.endpoint}:{s.target_port}",
            f'-A {svc} -m comment --comment "{pn} cluster IP" -m tcp -p tcp -d {s.vip} --dport {s.port} '
            f"! -s {cluster_cidr} -j KUBE-MARK-MASQ",
            f'-A {svc} -m comment --comment "{pn} -> {s.endpoint}:{s.target_port}" -j {sep}']


NODEPORTS_LAST = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
                  'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')


def chunks(lines: list[str], limit: int = 60_000) -> list[list[str]]:
    """Consecutive groups of whole lines, each at most `limit` characters (one argv word each:
    Linux allows 128 KiB per word)."""
    out: list[list[str]] = [[]]
    size = 0
    for line in lines:
        if out[-1] and size + len(line) + 1 > limit:
            out.append([])
            size = 0
        out[-1].append(line)
        size += len(line) + 1
    return out
