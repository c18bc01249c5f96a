"""ebpf-redirect: Cilium's veth datapath with BPF host routing, reduced to pod-to-pod forwarding.

Per host: a veth pair per pod (host side `cnibe<host>`, no bridge), the pod's /32 address from
the host's pod subnet with a default route via the subnet's first address (Cilium's router IP),
whose MAC is the host side's (a permanent neighbour entry stands in for Cilium's ARP responder).
The project's tc programs (bpf/redirect.c, built on the host at set-up) sit on ingress of the
host-side veth and of the data NIC:

    pod -> peer pod   cnib_from_pod: bpf_redirect_neigh straight out of the data NIC, the next
                      hop (the peer's data address) taken from the LPM map cnib_peers;
    peer -> pod       cnib_from_net: bpf_redirect_peer into the pod's namespace (map cnib_pods).

ip_forward is on, as Cilium sets it: traffic the programs pass (a pod's DNS query, anything not
for a peer's pod) is routed by the host as in the routed modes; pod-to-pod packets never are
(Ip: ForwDatagrams stays flat during the flow, which verify checks). Routes to peers' pod
subnets are added natively as in flannel-host-gw, for the host's own and the passed traffic.
Programs and maps are pinned in a bpffs the mode mounts per host at /run/cnibench/bpf/cnib-<host>
(the testbed's hosts share one mount namespace: each has its own mount, so none is unmounted
under another); unmounting it drops every pin.

Map values are written by `bpftool map update` steps (pure: derived from the facts): the
host-side veth is created with a fixed ifindex (POD_IFINDEX, ifindexes are per network
namespace) and fixed MACs, so the plan knows everything the maps hold.

Before any change (before_up): the kernel's BPF features and helpers (`bpftool feature probe`),
clsact and cls_bpf (in a throwaway namespace), the tools, a little-endian CPU, a data NIC whose
ingress no other tc program owns; then the object is built. Anything missing refuses the mode
with one message naming it.
"""

from __future__ import annotations

import re
from typing import Mapping

from ...catalog import PREFIX
from ...errors import PlanError, UnsupportedFeature
from ..addressing import forwarding_step, mtu_for, nth, pod_netns, pod_subnets, pod_to_pod_endpoint
from ..base import HOST_RE, ROUTE_PROTO, VETH, Check, Endpoint, HostFacts, ModeSettings, NetworkMode, Step, step
from ..engine import pieces
from ..engine.pieces import require_l2
from .bpf import ensure_object, object_path
from .bpf.checks import (  # noqa: F401  (re-exported: the mode's probe and checks)
    foreign_ingress,
    missing_features,
    parse_forwarded,
    parse_stats,
    probe_host,
    redirect_checks,
)
from .bpf.datapath import (  # noqa: F401  (re-exported: names and encodings)
    BPF_PINS_SH,
    BPF_ROOT,
    FILTER,
    FROM_NET,
    FROM_POD,
    HELPERS,
    MAP_TYPES,
    OUR_PROGRAM,
    PEERS_MAP,
    PODS_MAP,
    POD_IFINDEX,
    PROGRAM,
    STATS,
    bpf_mounts,
    hex_be32,
    hex_ip,
    hex_le32,
    hex_mac,
    host_mac,
    map_update,
    pin_dir,
    pod_mac,
    veth_name,
)


class EbpfRedirect(NetworkMode):
    name = "ebpf-redirect"
    link_kinds = (VETH,)
    owned_links = (rf"{PREFIX}e{HOST_RE}",)
    creates = (r"tc (qdisc|filter) add\b", r"mount -t bpf\b", r"bpftool (prog loadall|map update)\b")
    helpers = HELPERS  # probed before any change (tests add one the kernel lacks)

    def plan(self, hosts: HostFacts, settings: ModeSettings) -> list[Step]:
        subnets = pod_subnets(hosts, settings)
        require_l2(hosts, self.name)
        obj = object_path(PROGRAM)
        steps: list[Step] = []
        for h in hosts:
            if h.data_ifindex <= 0:
                raise PlanError(f"{self.name}: the ifindex of {h.name}'s data interface {h.data_interface} is unknown. "
                                "Gather the facts again (facts.py).")
            net = subnets[h.name]
            pod, gw = nth(net, 2), nth(net, 1)
            veth, ns, pins, mtu = veth_name(h.name), pod_netns(h.name), pin_dir(h.name), mtu_for(h, settings)
            steps.append(forwarding_step(h))
            steps += pieces.netns(h)
            add = ["ip", "link", "add", "name", veth, "index", POD_IFINDEX, "address", host_mac(pod), "mtu", mtu,
                   "type", "veth", "peer", "name", pieces.POD_IF, "address", pod_mac(pod), "mtu", mtu, "netns", ns]
            steps.append(step(h.name, add, ["ip", "link", "del", veth]))
            steps.append(step(h.name, ["ip", "link", "set", veth, "up"]))
            steps += pieces.pod_address(
                h, f"{pod}/32", [
                    [gw, "dev", pieces.POD_IF, "scope", "link"], ["default", "via", gw, "dev", pieces.POD_IF]])
            steps.append(step(h.name, ["ip", "-n", ns, "neigh", "add", gw, "lladdr", host_mac(pod), "dev",
                                       pieces.POD_IF, "nud", "permanent"]))
            # The host's own traffic to its pod, and to peers' pods (native routes, as host-gw):
            # the pods' traffic never uses them, the programs redirect it first.
            steps.append(step(h.name, ["ip", "route", "add", f"{pod}/32", "dev", veth, "scope", "link", "proto",
                                       ROUTE_PROTO]))
            steps += [pieces.host_route(h, subnets[p.name], p.data_address,
                                        h.data_interface) for p in hosts.peers(h.name)]
            # bpffs, programs and maps: unmounting drops every pin, so only the mount has an undo.
            steps.append(step(h.name, ["mkdir", "-p", pins], ["rmdir", pins]))
            steps.append(step(h.name, ["mount", "-t", "bpf", f"{PREFIX}-{h.name}", pins], ["umount", pins]))
            steps.append(step(h.name, ["bpftool", "prog", "loadall", obj, f"{pins}/prog", "type", "classifier",
                                       "pinmaps", f"{pins}/maps"]))
            steps.append(map_update(h.name, PODS_MAP, hex_ip(pod),
                                    hex_be32(POD_IFINDEX) + hex_mac(pod_mac(pod)) + hex_mac(host_mac(pod))))
            for p in hosts.peers(h.name):
                pnet = subnets[p.name]
                steps.append(map_update(h.name, PEERS_MAP, hex_le32(pnet.prefixlen) + hex_ip(pnet.network_address),
                                        hex_be32(h.data_ifindex) + hex_ip(p.data_address)))
            # clsact on the veth goes with it; on the data NIC it is ours to remove (before_up
            # refused a NIC that already had one).
            steps.append(step(h.name, ["tc", "qdisc", "add", "dev", veth, "clsact"]))
            steps.append(step(h.name, ["tc", "filter", "add", "dev", veth, "ingress", *FILTER, "pinned",
                                       f"{pins}/prog/{FROM_POD}"]))
            steps.append(
                step(
                    h.name, ["tc", "qdisc", "add", "dev", h.data_interface, "clsact"], [
                        "tc", "qdisc", "del", "dev", h.data_interface, "clsact"]))
            steps.append(step(h.name, ["tc", "filter", "add", "dev", h.data_interface, "ingress", *FILTER, "pinned",
                                       f"{pins}/prog/{FROM_NET}"]))
        return steps

    def endpoint(self, hosts: HostFacts, settings: ModeSettings) -> Endpoint:
        return pod_to_pod_endpoint(self.name, hosts, settings)

    async def before_up(self, fleet, facts: HostFacts, settings: ModeSettings) -> dict:
        """Refuse, before any change, a host that cannot run the programs; then build them."""
        found = await fleet.gather("eBPF feature probe", lambda host: probe_host(host, facts[host.name], self.helpers))
        lacking = {h: m for h, m in found.items() if m}
        if lacking:
            detail = "; ".join(f"{h}: {', '.join(m)}" for h, m in sorted(lacking.items()))
            raise UnsupportedFeature(f"{self.name} cannot run here — {detail}. Nothing was changed. "
                                     "Use a kernel with BPF, cls_bpf, clsact and these helpers (5.10 or later), "
                                     "or pick another mode.")
        built = await fleet.gather("build BPF programs", lambda host: ensure_object(host, PROGRAM))
        return {"bpf": {h: b.to_dict() for h, b in built.items()}}

    def undo_shapes(self, host: str, data_interface: str | None) -> list[tuple[str, ...]]:
        pins = re.escape(pin_dir(host))
        shapes = [("umount", pins), ("rmdir", pins)]
        if data_interface:  # the inventory's interface, never the host's word
            shapes.append(("tc", "qdisc", "del", "dev", re.escape(data_interface), "clsact"))
        return shapes

    def leftover_queries(self, host: str, data_interface: str) -> dict[str, list[str]]:
        return {"filters": ["tc", "filter", "show", "dev", data_interface, "ingress"],
                "mountinfo": ["cat", "/proc/self/mountinfo"], "pins": ["sh", "-c", 'test -d "$1" && echo yes', "sh",
                                                                       pin_dir(host)]}

    def leftovers(self, host: str, data_interface: str, outputs: Mapping[str, str]) -> list[list[str]]:
        """The data NIC's clsact qdisc when our program is attached there, the host's bpffs
        mount (stacked ones repeated; unmounting drops its pins) and its directory."""
        argvs = []
        if OUR_PROGRAM.search(outputs.get("filters", "")):
            argvs.append(["tc", "qdisc", "del", "dev", data_interface, "clsact"])
        pins = pin_dir(host)
        argvs += [["umount", pins] for m in bpf_mounts(outputs.get("mountinfo", "")) if m.split()[0] == pins]
        if outputs.get("pins", "").strip() == "yes":
            argvs.append(["rmdir", pins])
        return argvs

    def state_commands(self) -> list[tuple[str, list[str]]]:
        return [("mounts", ["cat", "/proc/self/mountinfo"]), ("bpf_pins", ["sh", "-c", BPF_PINS_SH, "sh", BPF_ROOT])]

    def normalise_state(self, name: str, text: str) -> str:
        return "\n".join(bpf_mounts(text)) if name == "mounts" else text

    async def path_checks(self, fleet, endpoint, settings, facts, probe) -> list[Check]:
        return await redirect_checks(fleet, endpoint, settings, facts, probe)
