"""Host limits a study needs, checked before anything on a host changes.

One read-only remote command (`limits_argv`) prints the values; `parse_limits` reads them. Each
`check_*` is pure: it returns the problems (each one sentence naming the fix) and notes of one
limit. `study_fit(needs, hosts)` runs them all, with the CPU plan of topology.py, and returns
every problem at once, so a study that does not fit is refused in ONE message (`refuse`)
before the first mode goes up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..catalog import PREFIX
from ..errors import PlanError
from .topology import CpuPlan, Topology, check_pinned, plan_cpus

FD_MARGIN = 64  # descriptors a generator needs besides its connections (= workload/bench.py's)
LOG_RECORD_BYTES = 32  # cnib-openloop's --log record per request due in the window (struct rec)
# cnib-openloop >= 7 on its histogram path (the default): what a run holds and writes does not grow
# with the rate (docs/method.md). The sampled log keeps at most LOG_KEPT requests (= workload
# defaults.LOG_SAMPLE_MAX); the 1 ms slot histograms take SLOT_BYTES_PER_S per second of window (the
# histogram file about as much); a thread ~THREAD_BYTES; a connection ~CONN_BYTES (4 KB out-buffer,
# its in-flight queue at the default depth).
LOG_KEPT = 100_000
SLOT_BYTES_PER_S = 768_000
THREAD_BYTES = 600_000
CONN_BYTES = 5_000
MSS = 1448  # TCP payload per segment at MTU 1500 with timestamps
WIRE_OVERHEAD = 90  # per segment: preamble+IFG 20, Ethernet 14 + FCS 4, IPv4 20, TCP+timestamps 32
LINK_WARN = 0.7  # of the link's speed: queueing starts to show in the tail
MAX_CLOCK_OFFSET_S = 0.001  # clients start at one instant the driver gives; beyond this they do not
CONNTRACK_PER_CONNECTION = 2  # a run's entries linger (TIME_WAIT, 120 s) while the next run's open

# Lines: "nofile SOFT HARD", "port_range LO HI", "conntrack_max N", "speed MBPS", "mem_available
# BYTES", "run_dir FREE_BYTES FSTYPE", "irqbalance yes|no". A missing line: the host does not say.
LIMITS_SH = r"""i=$1; d=$2
echo "nofile $(ulimit -Sn) $(ulimit -Hn)"
echo "port_range $(cat /proc/sys/net/ipv4/ip_local_port_range)"
[ -r /proc/sys/net/netfilter/nf_conntrack_max ] && echo "conntrack_max $(cat /proc/sys/net/netfilter/nf_conntrack_max)"
s=$(cat "/sys/class/net/$i/speed" 2>/dev/null) && echo "speed $s"
awk '/^MemAvailable:/ {printf "mem_available %.0f\n", $2 * 1024}' /proc/meminfo
while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
echo "run_dir $(df -P -k "$d" | awk 'NR == 2 {printf "%.0f", $4 * 1024}') $(stat -f -c %T "$d")"
if pgrep -x irqbalance >/dev/null; then echo "irqbalance yes"; else echo "irqbalance no"; fi
exit 0
"""


def limits_argv(nic: str, run_dir: str) -> list[str]:
    return ["sh", "-c", LIMITS_SH, f"{PREFIX}-limits", nic, run_dir]


@dataclass(frozen=True)
class Limits:
    nofile_soft: int | None = None  # None: unlimited or unknown
    nofile_hard: int | None = None
    port_range: tuple[int, int] | None = None
    conntrack_max: int | None = None  # None: nf_conntrack not loaded
    speed_mbps: int | None = None  # None: the NIC does not say (veth, some virtio)
    mem_available: int | None = None
    run_dir_free: int | None = None
    run_dir_fs: str = ""
    irqbalance: bool | None = None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None  # "unlimited", "?"


def parse_limits(text: str) -> Limits:
    """LIMITS_SH's lines as Limits; an unreadable value stays None (not checked, said so)."""
    kw: dict = {}
    for line in text.splitlines():
        key, *v = line.split()
        if key == "nofile" and len(v) == 2:
            kw["nofile_soft"], kw["nofile_hard"] = _int(v[0]), _int(v[1])
        elif key == "port_range" and len(v) == 2 and None not in map(_int, v):
            kw["port_range"] = (int(v[0]), int(v[1]))
        elif key in ("conntrack_max", "mem_available") and len(v) == 1:
            kw[key] = _int(v[0])
        elif key == "speed" and len(v) == 1:
            s = _int(v[0])
            kw["speed_mbps"] = s if s and s > 0 else None  # -1: unknown
        elif key == "run_dir" and len(v) == 2:
            kw["run_dir_free"], kw["run_dir_fs"] = _int(v[0]), v[1]
        elif key == "irqbalance" and v:
            kw["irqbalance"] = v[0] == "yes"
    return Limits(**kw)


@dataclass(frozen=True)
class Check:
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def check_open_files(host: str, lim: Limits, connections: int) -> Check:
    need = connections + FD_MARGIN
    if lim.nofile_hard is not None and lim.nofile_hard < need:
        return Check((f"{host}: {connections:,} connections need {need:,} open files; the hard limit is "
                      f"{lim.nofile_hard:,} (soft {lim.nofile_soft}). Raise it for the SSH sessions to at "
                      f"least {need:,} (LimitNOFILE= in sshd's unit, or nofile in /etc/security/limits.conf), "
                      "then reconnect",))
    if lim.nofile_soft is not None and lim.nofile_soft < need:
        return Check(notes=(f"{host}: open files: the generator raises its soft limit {lim.nofile_soft:,} to the hard "
                            f"{lim.nofile_hard or 'unlimited'} (needs {need:,})",))
    return Check()


WIDE_PORTS = 65535 - 1024 + 1  # a run widens its client namespace's range to 1024-65535 (workload/ports.py)


def check_ports(host: str, lim: Limits, connections: int) -> Check:
    if lim.port_range is None:
        return Check(notes=(f"{host}: ip_local_port_range unreadable: local ports not checked",))
    lo, hi = lim.port_range
    have = hi - lo + 1
    if have < connections <= WIDE_PORTS:
        return Check(notes=(f"{host}: {connections:,} connections need more local ports than ip_local_port_range "
                            f"{lo} {hi} has ({have:,}): each run widens its client namespace's range to 1024 65535 "
                            "and restores it after",))
    if connections > have:
        return Check((f"{host}: {connections:,} connections to one server ip:port from one address need "
                      f"{connections:,} local ports; net.ipv4.ip_local_port_range {lo} {hi} has {have:,}. Widen "
                      f"it (sysctl -w net.ipv4.ip_local_port_range='1024 65535') or use fewer connections",))
    return Check()


def check_conntrack(host: str, lim: Limits, connections: int, on_path: bool) -> Check:
    if not on_path:
        return Check()
    if lim.conntrack_max is None:
        return Check(notes=(f"{host}: nf_conntrack not loaded yet: its table size is checked once a mode loads it",))
    need = CONNTRACK_PER_CONNECTION * connections
    if lim.conntrack_max < need:
        return Check((f"{host}: conntrack is on the path and {connections:,} connections need about {need:,} "
                      f"entries (a run's linger while the next opens); nf_conntrack_max is {lim.conntrack_max:,}. "
                      f"Raise it (sysctl -w net.netfilter.nf_conntrack_max={need})",))
    return Check()


def check_memory(host: str, lim: Limits, log_bytes: int, held_bytes: int) -> Check:
    """log_bytes: what a run writes to the run directory; held_bytes: what the generator holds."""
    problems, ram = [], held_bytes + (log_bytes if lim.run_dir_fs in ("tmpfs", "ramfs") else 0)
    if lim.run_dir_free is not None and log_bytes > lim.run_dir_free:
        problems.append(f"{host}: a run writes {_mb(log_bytes)} to the run directory ({lim.run_dir_fs}); "
                        f"{_mb(lim.run_dir_free)} are free. Free space there or shorten workload.duration_s")
    if lim.mem_available is not None and ram > lim.mem_available:
        problems.append(f"{host}: a run needs {_mb(ram)} of RAM (the generator's records"
                        f"{' and its log on tmpfs' if ram > held_bytes else ''}); {_mb(lim.mem_available)} are "
                        "available. Shorten workload.duration_s or lower the rates")
    return Check(tuple(problems))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def wire_bytes(payload: int) -> int:
    """Bytes on the link for `payload` bytes of TCP data (headers, framing, preamble)."""
    return payload + max(1, math.ceil(payload / MSS)) * WIRE_OVERHEAD


def offered(size: str, rate: float, response: int, request: int) -> tuple[float, float, str]:
    """Bits/s server->client and client->server at `rate`, and the sentence that says both."""
    down, up = rate * wire_bytes(response) * 8, rate * wire_bytes(request) * 8
    return down, up, (f"{size} at {rate:,.0f} req/s is {down / 1e9:.2f} Gb/s server->client ({response:,} B "
                      f"responses) and {up / 1e9:.2f} Gb/s client->server ({request:,} B requests)")


def check_link(host: str, lim: Limits, size: str, rate: float, response: int, request: int) -> Check:
    down, up, said = offered(size, rate, response, request)
    if lim.speed_mbps is None:
        return Check(notes=(f"{host}: link speed unknown (virtual NIC), not checked: {said}",))
    link = lim.speed_mbps * 1e6
    if max(down, up) > link:
        top = link / (8 * max(wire_bytes(response), wire_bytes(request)))
        return Check((f"{host}: {said}; its link is {link / 1e9:g} Gb/s. Keep {size}'s rates at or below "
                      f"{math.floor(top):,} req/s, or use a faster link",))
    if max(down, up) > LINK_WARN * link:
        return Check(notes=(f"{host}: {said}: above {LINK_WARN:.0%} of its {link / 1e9:g} Gb/s link",))
    return Check()


def check_irqbalance(host: str, lim: Limits) -> Check:
    if lim.irqbalance:
        return Check(notes=(f"{host}: irqbalance runs: it moves the NIC's interrupts during the study, off the "
                            "cores the plan leaves them (systemctl stop irqbalance)",))
    return Check()


def check_clocks(offsets: dict[str, float], bound: float = MAX_CLOCK_OFFSET_S) -> Check:
    """offsets: each client's clock minus the driver's, in seconds (only with several clients)."""
    bad = {h: o for h, o in sorted(offsets.items()) if not abs(o) <= bound}
    return Check(tuple(f"{h}: its clock is {o * 1e3:+.3f} ms off the driver's (bound {bound * 1e3:g} ms): the "
                       "clients would not start at one instant. Synchronize them (chrony or PTP), then retry"
                       for h, o in bad.items()))


@dataclass(frozen=True)
class StudyNeeds:
    """What a study asks of its hosts, in plain values (the caller reads them off the study)."""

    study: str
    threads: int
    workers: int
    rates: tuple[float, ...] = ()  # absolute req/s, all clients together; () = fractions, not known yet
    connections: int = 0  # at the highest rate, all clients together
    response_bytes: dict[str, int] = field(default_factory=dict)  # size -> bytes of one response
    request_bytes: int = 0
    duration_s: float = 0.0
    warmup_s: float = 0.0
    conntrack: bool = False  # a mode puts conntrack (NAT) on the path
    cpus: object = "auto"  # "auto", a CPU tuple, or {client: (..), server: (..)}
    clock_offsets: dict[str, float] = field(default_factory=dict)  # client -> seconds, several clients
    shared_machine: bool = False  # client and server are one machine (the local testbed)


@dataclass(frozen=True)
class HostFacts:
    name: str
    role: str  # client | server
    nic: str
    topology: Topology
    limits: Limits


@dataclass
class Fit:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plans: dict[str, CpuPlan] = field(default_factory=dict)

    def add(self, check: Check) -> None:
        self.problems += check.problems
        self.notes += check.notes


def _plan(fit: Fit, needs: StudyNeeds, hosts: list[HostFacts]) -> None:
    clients = [h for h in hosts if h.role == "client"]
    if needs.shared_machine and clients:  # one machine: threads and workers on separate cores of it
        jobs = [(clients[0], needs.threads, needs.workers, [h.name for h in hosts])]
    else:
        jobs = [(h, needs.threads if h.role == "client" else 0, needs.workers if h.role == "server" else 0, [h.name])
                for h in hosts]
    for h, threads, workers, names in jobs:
        label = "+".join(names)
        try:
            if needs.cpus == "auto":
                plan = plan_cpus(h.topology, h.nic, threads, workers, host=label)
            else:
                plan = _explicit(needs.cpus, h, threads, workers, label)
        except PlanError as exc:
            fit.problems.append(str(exc))
            continue
        fit.notes += [f"{label}: {n}" for n in plan.notes]
        for n in names:
            fit.plans[n] = plan


def _explicit(cpus, h: HostFacts, threads: int, workers: int, label: str) -> CpuPlan:
    side = cpus if not isinstance(cpus, dict) else None
    tc = tuple(side or cpus.get("client", ())) if threads else ()
    wc = tuple(side or cpus.get("server", ())) if workers else ()
    check_pinned(tc, threads, "generator threads", label, h.topology)
    check_pinned(wc, workers, "nginx workers", label, h.topology)
    return CpuPlan(None, tc, wc, (), False, ("cpus given by the study",))


def study_fit(needs: StudyNeeds, hosts: list[HostFacts]) -> Fit:
    """Every problem of running `needs` on `hosts` (none changed), with each host's CPU plan."""
    fit = Fit()
    _plan(fit, needs, hosts)
    clients = [h for h in hosts if h.role == "client"] or hosts[:1]
    top = max(needs.rates, default=0.0)
    share, conns = top / len(clients), math.ceil(needs.connections / len(clients))
    for h in hosts:
        lim = h.limits
        fit.add(check_irqbalance(h.name, lim))
        fit.add(check_conntrack(h.name, lim, needs.connections, needs.conntrack))
        if h.role == "client":
            fit.add(check_open_files(h.name, lim, conns))
            fit.add(check_ports(h.name, lim, conns))
            log = min(share * needs.duration_s, LOG_KEPT) * LOG_RECORD_BYTES
            slots = needs.duration_s * SLOT_BYTES_PER_S
            held = int(log + slots + needs.threads * THREAD_BYTES + conns * CONN_BYTES)
            fit.add(check_memory(h.name, lim, int(log + slots), held))
        rate = share if h.role == "client" else top
        links = [check_link(h.name, lim, s, rate, b, needs.request_bytes)
                 for s, b in sorted(needs.response_bytes.items()) if rate]
        if lim.speed_mbps is None and links:  # one note per host, not one per size
            fit.notes.append("; ".join([links[0].notes[0]] + [c.notes[0].split(": ", 2)[2] for c in links[1:]]))
        else:
            for c in links:
                fit.add(c)
    if not needs.rates:
        fit.notes.append("the loads are fractions of a calibrated rate: connections, link and memory are "
                         "checked against rates only once calibration has run")
    if len(clients) > 1:
        fit.add(check_clocks({h.name: needs.clock_offsets.get(h.name, math.inf) for h in clients}))
    return fit


def refuse(fit: Fit, needs: StudyNeeds) -> None:
    """The one message a study that does not fit is refused with (PlanError), before any change."""
    if fit.problems:
        lines = [f"study {needs.study} does not fit these hosts ({len(fit.problems)} problem(s)); nothing was changed:"]
        raise PlanError("\n".join(lines + [f"  - {p}" for p in fit.problems]))


async def read_host_facts(host, timeout: float = 15.0) -> HostFacts:
    """The two read-only commands on one host (a cnibench.infra.hosts.Host), parsed."""
    from .config import RUN_DIR
    from .topology import parse_topology, topology_argv

    nic = host.spec.data_interface
    topo = await host.run(topology_argv(nic), check=False, timeout=timeout)
    lim = await host.run(limits_argv(nic, str(RUN_DIR)), check=False, timeout=timeout)
    return HostFacts(host.name, host.spec.role, nic, parse_topology(topo.stdout), parse_limits(lim.stdout))


def format_fit(fit: Fit, hosts: list[HostFacts]) -> str:
    """hosts.plan's text: per host its CPU plan and irqbalance, then every note and problem."""
    from .topology import format_cpulist

    out = []
    for h in hosts:
        p = fit.plans.get(h.name)
        ib = {True: "runs", False: "not running", None: "unknown"}[h.limits.irqbalance]
        out.append(f"{h.name} ({h.role}, {h.nic}): {len(h.topology.cpus)} CPUs, irqbalance {ib}")
        if p is None:
            out.append("  cpus: no plan (see the problems)")
            continue
        shared = sum(q is p for q in fit.plans.values()) > 1
        out.append(f"  cpus{' (one machine for both hosts)' if shared else ''}: NUMA node {p.node}; "
                   f"generator threads on {format_cpulist(p.threads)}, nginx workers on "
                   f"{format_cpulist(p.workers)}; NIC interrupts pinned to {format_cpulist(p.irq_cpus)}"
                   f"{' (skipped)' if p.irq_cores_skipped else ''}")
    out += [f"note: {n}" for n in fit.notes]
    out += [f"PROBLEM: {p}" for p in fit.problems] or ["fits: no limit problem"]
    return "\n".join(out)


async def clock_offset(host, samples: int = 5) -> float:
    """The host's clock minus this machine's, in seconds: the sample with the shortest round trip
    (its error is at most half that round trip), from `date +%s.%N` over the open connection."""
    import time

    best = (math.inf, 0.0)
    for _ in range(samples):
        t0 = time.time()
        r = await host.run(["date", "+%s.%N"], timeout=10)
        t1 = time.time()
        best = min(best, (t1 - t0, float(r.stdout.strip()) - (t0 + t1) / 2))
    return best[1]
