"""A host's CPU topology and the `cpus: auto` placement plan.

One read-only remote command (`topology_argv`) prints what sysfs and /proc say: every CPU's
package, core id and SMT siblings, the NUMA nodes' CPU lists, the data NIC's NUMA node and the
CPU affinity of the NIC's interrupts. `parse_topology` reads its lines; nothing read back is
ever run. The script takes a root prefix as its second argument so the tests run the very same
script over recorded sysfs trees (tests/fixtures/topology/).

`plan_cpus` is `cpus: auto`: one hyperthread (the lowest-numbered) per physical core on the
NIC's NUMA node; generator threads first, then nginx workers, each on its own core. The cores
taking the NIC's interrupts (an interrupt allowed on every CPU pins none) are skipped when the
other cores suffice, and used last otherwise, so they are taken only when nothing else is left;
a plan that leaves fewer than SPARE_CORES other cores for the system says so in its notes. More
threads or workers than the node's cores is refused with one message (PlanError).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import PREFIX
from ..errors import PlanError

SPARE_CORES = 2  # cores a plan should leave to the system besides the NIC's (the "+ 2")

# Lines: "cpu N PACKAGE CORE SIBLINGS", "node N CPULIST", "nic_node N", "irq N AFFINITY NAME".
# The NIC's interrupts are the /proc/interrupts lines naming the interface or its bus device
# (virtio2-input.0, 0000:18:00.0), as provenance's TUNING_SH finds them.
TOPOLOGY_SH = r"""i=$1; r=${2:-}
for d in "$r"/sys/devices/system/cpu/cpu[0-9]*; do
  t=$d/topology; [ -r "$t/core_id" ] || continue
  echo "cpu ${d##*/cpu} $(cat "$t/physical_package_id") $(cat "$t/core_id") $(cat "$t/thread_siblings_list")"
done
for d in "$r"/sys/devices/system/node/node[0-9]*; do
  [ -r "$d/cpulist" ] && echo "node ${d##*/node} $(cat "$d/cpulist")"
done
n=$(cat "$r/sys/class/net/$i/device/numa_node" 2>/dev/null) && echo "nic_node $n"
bus=$(basename "$(readlink -f "$r/sys/class/net/$i/device" 2>/dev/null)" 2>/dev/null)
[ -e "$r/sys/class/net/$i/device" ] || bus=
grep -E "(^|[^[:alnum:]])$i([^[:alnum:]]|\$)${bus:+|$bus}" "$r/proc/interrupts" 2>/dev/null | while read -r q rest; do
  q=${q%:}; echo "irq $q $(cat "$r/proc/irq/$q/smp_affinity_list" 2>/dev/null || echo ?) ${rest##* }"
done
exit 0
"""


def topology_argv(nic: str, root: str = "") -> list[str]:
    """The one read-only command that prints a host's topology (argv; `root` for recorded trees)."""
    return ["sh", "-c", TOPOLOGY_SH, f"{PREFIX}-topology", nic, root]


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Linux's CPU list format ("0-8,18-26") as sorted CPU numbers; ValueError when it is not one."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a < 0 or b < a:
            raise ValueError(f"not a CPU list: {text!r}")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


def format_cpulist(cpus) -> str:
    """CPU numbers as Linux's compact list ("0-3,8")."""
    cpus, runs = sorted(set(cpus)), []
    for c in cpus:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "-"


@dataclass(frozen=True)
class Cpu:
    cpu: int
    package: int
    core: int
    siblings: tuple[int, ...]


@dataclass(frozen=True)
class Irq:
    irq: int
    affinity: tuple[int, ...] | None  # None: unreadable
    name: str


@dataclass(frozen=True)
class Topology:
    cpus: tuple[Cpu, ...]
    nodes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # node -> its CPUs
    nic_node: int | None = None  # None or -1: the kernel does not say (a VM, a veth)
    irqs: tuple[Irq, ...] = ()

    def node_of(self, cpu: int) -> int | None:
        return next((n for n, cs in self.nodes.items() if cpu in cs), None)


def parse_topology(text: str) -> Topology:
    """TOPOLOGY_SH's lines as a Topology; lines it does not know are ignored."""
    cpus, nodes, nic_node, irqs = [], {}, None, []
    for line in text.splitlines():
        parts = line.split()
        try:
            if parts[:1] == ["cpu"] and len(parts) == 5:
                cpus.append(Cpu(int(parts[1]), int(parts[2]), int(parts[3]), parse_cpulist(parts[4])))
            elif parts[:1] == ["node"] and len(parts) == 3:
                nodes[int(parts[1])] = parse_cpulist(parts[2])
            elif parts[:1] == ["nic_node"] and len(parts) == 2:
                nic_node = int(parts[1])
            elif parts[:1] == ["irq"] and len(parts) >= 3:
                aff = None if parts[2] == "?" else parse_cpulist(parts[2])
                irqs.append(Irq(int(parts[1]), aff, parts[3] if len(parts) > 3 else ""))
        except (ValueError, IndexError):
            continue
    return Topology(tuple(sorted(cpus, key=lambda c: c.cpu)), nodes, nic_node, tuple(irqs))


@dataclass(frozen=True)
class CpuPlan:
    node: int | None
    threads: tuple[int, ...]  # generator threads' CPUs, one per thread
    workers: tuple[int, ...]  # nginx workers' CPUs, one per worker
    irq_cpus: tuple[int, ...]  # CPUs the NIC's interrupts are pinned to
    irq_cores_skipped: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"node": self.node, "threads": list(self.threads), "workers": list(self.workers),
                "irq_cpus": list(self.irq_cpus), "irq_cores_skipped": self.irq_cores_skipped,
                "notes": list(self.notes)}


def pinned_irq_cpus(topo: Topology) -> tuple[int, ...]:
    """CPUs the NIC's interrupts are pinned to; an interrupt allowed on every CPU pins nothing."""
    everything = {c.cpu for c in topo.cpus}
    out: set[int] = set()
    for irq in topo.irqs:
        if irq.affinity and set(irq.affinity) != everything:
            out.update(irq.affinity)
    return tuple(sorted(out))


def _node(topo: Topology) -> tuple[int | None, list[str]]:
    if topo.nic_node is not None and topo.nic_node >= 0 and topo.nic_node in topo.nodes:
        return topo.nic_node, []
    if not topo.nodes:
        return None, ["no NUMA nodes in sysfs: every CPU counts as one node"]
    first = min(topo.nodes)
    if len(topo.nodes) == 1:
        return first, []
    return first, [f"the NIC's NUMA node is unknown: node {first} used (of {len(topo.nodes)})"]


def physical_cores(topo: Topology, node: int | None) -> list[tuple[int, ...]]:
    """The node's physical cores as their CPUs (lowest first), ordered by their lowest CPU."""
    allowed = set(topo.nodes.get(node, ())) if node is not None else {c.cpu for c in topo.cpus}
    cores: dict[tuple[int, int], list[int]] = {}
    for c in topo.cpus:
        if c.cpu in allowed:
            cores.setdefault((c.package, c.core), []).append(c.cpu)
    return sorted((tuple(sorted(v)) for v in cores.values()), key=lambda cs: cs[0])


def plan_cpus(topo: Topology, nic: str, threads: int, workers: int, host: str = "host") -> CpuPlan:
    """`cpus: auto` for `threads` generator threads and `workers` nginx workers on one host
    (give 0 for the side a host does not run). PlanError when they do not fit."""
    if threads < 0 or workers < 0:
        raise PlanError(f"{host}: threads and workers cannot be negative ({threads}, {workers})")
    if not topo.cpus:
        raise PlanError(f"{host}: sysfs shows no CPU topology (devices/system/cpu/cpu*/topology): "
                        "cpus: auto cannot plan; give the CPUs as a list")
    node, notes = _node(topo)
    cores = physical_cores(topo, node)
    irq = set(pinned_irq_cpus(topo))
    free = [cs for cs in cores if not irq & set(cs)]
    busy = [cs for cs in cores if irq & set(cs)]
    need = threads + workers
    skipped = bool(busy) and len(free) >= need
    order = free + busy  # the NIC's cores last, only when nothing else is left
    if need > len(cores):
        where = f"NUMA node {node}" if node is not None else "the host"
        raise PlanError(
            f"{host}: {_what(threads, workers)} need {need} physical cores on {where} (the NIC {nic}'s), "
            f"which has {len(cores)} (CPUs {format_cpulist(c for cs in cores for c in cs)}): cpus: auto "
            f"pins one per core. Lower workload.threads / workload.nginx_workers to {len(cores)} in all, "
            "or use hosts with more cores")
    if busy and not skipped:
        notes.append(f"shares {need - len(free)} core(s) with the NIC's interrupts (CPUs {format_cpulist(irq)})")
    elif len(free) - need < SPARE_CORES:
        notes.append(f"leaves {len(free) - need} core(s) free for the system and the NIC's interrupts "
                     f"(fewer than {SPARE_CORES})")
    picks = [cs[0] for cs in order[:need]]
    return CpuPlan(node, tuple(picks[:threads]), tuple(picks[threads:]), tuple(sorted(irq)), skipped, tuple(notes))


def _what(threads: int, workers: int) -> str:
    parts = [f"{threads} generator thread(s)" if threads else "", f"{workers} nginx worker(s)" if workers else ""]
    return " and ".join(p for p in parts if p)


def check_pinned(cpus: tuple[int, ...], count: int, what: str, host: str, topo: Topology) -> None:
    """An explicit CPU list: every CPU exists and there are at least as many as `count` of `what`."""
    known = {c.cpu for c in topo.cpus}
    missing = sorted(set(cpus) - known)
    if missing:
        raise PlanError(f"{host}: CPUs {format_cpulist(missing)} do not exist (it has {format_cpulist(known)})")
    if count > len(set(cpus)):
        raise PlanError(f"{host}: {count} {what} exceed the {len(set(cpus))} CPU(s) they are pinned to "
                        f"({format_cpulist(cpus)}): give as many CPUs, or fewer {what}")


def parse_cpus_setting(value, where: str = "workload.cpus"):
    """A study's `cpus:` value: "auto", or explicit lists {client: [..], server: [..]} / "0-3".
    Anything else is refused naming the key."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, dict) and value and set(value) <= {"client", "server"}:
        return {k: parse_cpus_setting(v, f"{where}.{k}") for k, v in value.items()}
    try:
        if isinstance(value, str):
            return parse_cpulist(value) or _bad(value, where)
        if isinstance(value, list) and value and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                     for c in value):
            return tuple(sorted(set(value)))
    except ValueError:
        pass
    return _bad(value, where)


def _bad(value, where: str):
    raise PlanError(f"{where}: {value!r} is not a CPU setting. Use auto (the default on real hosts), "
                    "a CPU list like 0-3,8 or [0, 1], or {client: [...], server: [...]}")
