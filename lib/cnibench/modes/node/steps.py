"""The steps of `node: kubernetes` on each host (pure), around any mode's plan, and the
endpoint through the Service VIP (`via: service`).

kube-proxy in its nftables mode: the rules (kubeproxy.py) loaded with `nft -f -` in chunks
(one argv word each), undone by deleting the table. In its iptables mode (iptables-nft): a
step refuses a host that already has kube-proxy's chains (a real node), records which nft
tables exist, loads the rules with `iptables-nft-restore --noflush` in chunks; the undo deletes
what it added (the tables iptables-nft made, else the jumps and the KUBE-/FLANNEL- chains).
flannel's `--ip-masq` rules (flannel.py) go the same way for the flannel modes.
Conntrack: the nat hooks make the kernel track every flow (verify counts the entries).
"""

from __future__ import annotations

import re

from ...infra.config import RUN_DIR
from ..addressing import pod_subnets
from ..engine import pieces
from ..base import Endpoint, HostFacts, ModeSettings, Step, step
from . import flannel_masq, kubeproxy

SERVICE_PORT = 80

NFT_SH = 'printf "%s\\n" "$1" | nft -f -'
IPT_SH = 'printf "%s\\n" "$1" | iptables-nft-restore -w --noflush'
REFUSE_SH = ('if iptables-nft -w -t nat -S KUBE-SERVICES >/dev/null 2>&1 || iptables-nft -w -t nat -S FLANNEL-POSTRTG '
             '>/dev/null 2>&1; then echo "kube-proxy or flannel chains are already here (a real node?): '
             'node: kubernetes refuses to add its own" >&2; exit 1; fi; '
             'mkdir -p -m 700 -- "$1" && nft list tables > "$1/tables.before"')
# Undo: the tables iptables-nft made go whole; in a table that was there, our jumps and chains.
IPT_UNDO_SH = (
    'd=$1; test -f "$d/tables.before" || exit 0; '
    'for t in nat filter; do if grep -qx "table ip $t" "$d/tables.before"; then '
    '{ echo "*$t"; iptables-nft -w -t $t -S | grep -E -- "^-A [A-Z]+ .*-j (KUBE|FLANNEL)-" | sed "s/^-A /-D /"; '
    'iptables-nft -w -t $t -S | awk \'/^-N (KUBE|FLANNEL)-/{print "-F "$2}\'; '
    'iptables-nft -w -t $t -S | awk \'/^-N (KUBE|FLANNEL)-/{print "-X "$2}\'; echo COMMIT; } '
    '| iptables-nft-restore -w --noflush; else nft delete table ip $t 2>/dev/null; fi; done; '
    'rm -rf -- "$d"; rmdir -- "${d%/*}" 2>/dev/null; true')


def run_dir(host: str) -> str:
    return f"{RUN_DIR}/node/{host}"


def _services(settings: ModeSettings, endpoint: Endpoint):
    return kubeproxy.services(settings.services, settings.service_cidr, settings.cluster_cidr,
                              (endpoint.connect_address, endpoint.connect_port), SERVICE_PORT)


def nft_steps(host: str, lines: list[str]) -> list[Step]:
    table = ["nft", "delete", "table", "ip", kubeproxy.NFT_TABLE]
    return [step(host, ["sh", "-c", NFT_SH, "cnib", "\n".join(c)], table if i == 0 else None)
            for i, c in enumerate(kubeproxy.chunks(lines))]


def ipt_lines(tables: dict[str, list[str]]) -> list[str]:
    """iptables-restore text in whole-table blocks (a block never spans two chunks)."""
    out = []
    for t, lines in tables.items():
        for c in kubeproxy.chunks(lines):
            out.append("\n".join([f"*{t}", *c, "COMMIT"]))
    return out


def ipt_steps(host: str, tables: dict[str, list[str]]) -> list[Step]:
    d = run_dir(host)
    out = [step(host, ["sh", "-c", REFUSE_SH, "cnib", d], ["sh", "-c", IPT_UNDO_SH, "cnib", d])]
    return out + [step(host, ["sh", "-c", IPT_SH, "cnib", block]) for block in ipt_lines(tables)]


def host_steps(h, hosts: HostFacts, settings: ModeSettings, endpoint: Endpoint, ip_masq: bool) -> list[Step]:
    """One host's node steps (pure)."""
    svcs, _ = _services(settings, endpoint)
    ipt: dict[str, list[str]] = {}
    if settings.kube_proxy == "nftables":
        lines = kubeproxy.nft_base(settings.service_cidr, h.data_address)
        for s in svcs:
            lines += kubeproxy.nft_service(s, settings.cluster_cidr)
        out = nft_steps(h.name, lines)
    else:
        base = kubeproxy.ipt_base()
        nat = base["nat"] + [line for s in svcs for line in kubeproxy.ipt_service(s, settings.cluster_cidr)]
        ipt = {"filter": base["filter"], "nat": nat + [kubeproxy.NODEPORTS_LAST]}
        out = []
    # A node reaches the service CIDR through its default route; a testbed host has none, and a
    # host-network client routes before its OUTPUT DNAT: a route there, via a peer.
    peer = hosts.peers(h.name)[0]
    out.insert(0, pieces.host_route(h, settings.service_cidr, peer.data_address, h.data_interface))
    if ip_masq:
        block = pod_subnets(hosts, settings)[h.name]
        ipt.setdefault("nat", []).extend(flannel_masq.rules(settings.cluster_cidr, str(block)))
    return out + (ipt_steps(h.name, ipt) if ipt else [])


def plan(hosts: HostFacts, settings: ModeSettings, endpoint: Endpoint, ip_masq: bool = False) -> list[Step]:
    """Every host's node steps; none when the node is bare. `ip_masq`: the mode's masquerade
    rules too (flannel's, for its pod block on each host)."""
    if settings.node != "kubernetes":
        return []
    return [s for h in hosts for s in host_steps(h, hosts, settings, endpoint, ip_masq)]


def endpoint(bare: Endpoint, settings: ModeSettings) -> Endpoint:
    """`via: service`: the client dials the measured Service's VIP; kube-proxy's DNAT sends it to
    the address the bare endpoint dials."""
    if settings.via != "service":
        return bare
    _, measured = _services(settings, bare)
    d = bare.to_dict()
    d.update(connect_address=measured.vip, connect_port=measured.port)
    return Endpoint.from_dict(d)


def undo_shapes(host: str) -> list[tuple[str, ...]]:
    return [("sh", "-c", re.escape(IPT_UNDO_SH), "cnib", re.escape(run_dir(host)))]


def leftover_query(host: str) -> list[str]:
    """`clean` without a journal: is this host's node run directory there (read-only)?"""
    return ["sh", "-c", 'test -f "$1/tables.before" && echo present; true', "cnib", run_dir(host)]


def leftovers(host: str, output: str) -> list[list[str]]:
    """The iptables-nft undo when the run directory is there (pure): it exists only after the
    refusal step found no kube-proxy or flannel chains, so the KUBE-/FLANNEL- chains are ours."""
    return [["sh", "-c", IPT_UNDO_SH, "cnib", run_dir(host)]] if output.strip() == "present" else []
