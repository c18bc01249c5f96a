"""flanneld `--ip-masq`: its nat rules (pure), in the shape of flannel's
pkg/trafficmngr/iptables/iptables.go `masqRules` (one cluster CIDR, the kernel supports
--random-fully), as iptables-restore lines for iptables-nft."""

from __future__ import annotations

KUBE_PROXY_MARK = "0x4000/0x4000"
CHAIN = "FLANNEL-POSTRTG"
_C = '-m comment --comment "flanneld masq"'


def rules(cluster_cidr: str, pod_cidr: str) -> list[str]:
    """The chain, the POSTROUTING jump and the chain's rules, in flannel's order."""
    return [
        f":{CHAIN} - [0:0]",
        f"-A POSTROUTING {_C} -j {CHAIN}",
        f"-A {CHAIN} -m mark --mark {KUBE_PROXY_MARK} {_C} -j RETURN",
        f"-A {CHAIN} -s {pod_cidr} -d {cluster_cidr} {_C} -j RETURN",
        f"-A {CHAIN} -s {cluster_cidr} -d {pod_cidr} {_C} -j RETURN",
        f"-A {CHAIN} ! -s {cluster_cidr} -d {pod_cidr} {_C} -j RETURN",
        f"-A {CHAIN} -s {cluster_cidr} ! -d 224.0.0.0/4 {_C} -j MASQUERADE --random-fully",
        f"-A {CHAIN} ! -s {cluster_cidr} -d {cluster_cidr} {_C} -j MASQUERADE --random-fully",
    ]
