"""System metrics on every host during a run: one long-lived sampler per namespace under test.

The sampler is one `bash` process started once per run, before the warm-up, inside the network
namespace under test (the container's; the host's own for `host`), so every mode pays the same:
it starts no process per sample. It reads /proc with the `read`/`mapfile` builtins and sleeps
with `read -t` on a pipe that never delivers, so a sample costs only its own reads (its CPU is
recorded per run: the `sampler` line of @@pids). Per sample it prints, behind the time from
/proc/uptime:

  @@stat       the per-CPU lines of /proc/stat (steal included), ctxt and the intr total
  @@netdev     /proc/net/dev and @@snmp the Tcp lines of /proc/net/snmp of the *host's*
               namespace, read through /proc/<pid>/net of the SSH session that started it
               (a process of the host's namespace), @@snmp-container the container's own
  @@pids       "<role> <pid> <utime+stime ticks>" of the processes whose CPU the noise guards
               subtract (guards.py): the sampler itself, its ancestors (the sshd session that
               carries it: role sshd) and the pids it was given (nginx, the hiccup meter)

and once at start @@boot (the kernel's boot id: two hosts with the same id share a machine,
as the testbed's do). Everything below `SAMPLER_SH` is pure parsing of that text into
per-interval rates:

  {"t": s since the first sample, "dt": s,
   "cpu": {"cpu0": {"user": %, "system": %, "irq": %, "softirq": %, "idle": %, "steal": %}, ...},
   "ctxt_per_s", "intr_per_s",
   "net": {"rx_packets_per_s", "tx_packets_per_s", "rx_bytes_per_s", "tx_bytes_per_s",
           "rx_dropped", "tx_dropped"},           (the data interface; drops are counts)
   "tcp_retrans": count, "tcp_retrans_container": count | None}

In the run record (`compact`) a host's samples are stored as columns ("format": "columns"): each
name once, rates as integers, per-CPU shares as integers of 0.1 % in arrays ordered by host-level
"cpu_fields" and "cpus"; `results.metrics_rows` gives them back as per-sample dicts. A sample
of a 2-CPU host costs ~115 B instead of ~340 B (the per-sample records before issue 27), and a
record keeps at most 40 samples a host (`coarsen`: a 60 s window at 2 s), so a 60 s window's
metrics take under 9 KB for the testbed's two hosts (a unit test) instead of ~44 KB.
"""

from __future__ import annotations

import asyncio
import math

from ..catalog import PREFIX
from ..results import CPU_UNIT_PCT, METRICS_COLUMNS
from ..infra.hosts import Background

PERIOD_S = 1.0
USER_HZ = 100  # the unit of /proc/<pid>/stat and /proc/stat times on Linux (USER_HZ, not HZ)
# TERM (Sampler.stop) takes one last sample and exits at once: `read -t` returns on a trapped
# signal, so a stop neither waits out a period nor loses the tail of the run. A sample torn by
# the signal has no @@end and is dropped by split_samples. $2 > 0: exit after that many samples
# (the quiet-machine check). $3: 1 when started inside a container's namespace. $4..: "role:pid"
# of processes to account. The ancestors accounted as sshd are the sshd/sudo processes above us
# (the walk stops at the first other one: the testbed's sshd may have the driver as parent).
SAMPLER_SH = r"""p=$1; n=$2; cont=$3; shift 3
hp=$PPID  # the SSH session (or sudo) that started us: a process of the host's namespace
exec {w}<> <(:)  # a pipe we hold both ends of: `read -t` on it is a sleep without a process
pids=("$@" "sampler:$$")
q=$hp
while [ "$q" -gt 1 ] 2>/dev/null; do
  read -r l < "/proc/$q/stat" || break
  c=${l#*(}; c=${c%%)*}
  case $c in sshd*|sudo) pids+=("sshd:$q");; *) break;; esac
  r=${l##*) }; set -- $r; q=$2
done
cpu() {
  local x l
  for x in "${pids[@]}"; do
    read -r l < "/proc/${x#*:}/stat" 2>/dev/null || continue
    l=${l##*) }; set -- $l; echo "${x%%:*} ${x#*:} $(( ${12} + ${13} ))"
  done
}
sample() {
  local l up
  read -r up _ < /proc/uptime
  echo "@@sample $up"
  echo "@@stat"
  while read -r l; do
    case $l in cpu*|ctxt*) echo "$l";; intr*) set -- $l; echo "intr $2";; esac
  done < /proc/stat
  echo "@@netdev"; mapfile -t L < "/proc/$hp/net/dev"; printf '%s\n' "${L[@]}"
  echo "@@snmp"; while read -r l; do case $l in Tcp:*) echo "$l";; esac; done < "/proc/$hp/net/snmp"
  if [ "$cont" = 1 ]; then
    echo "@@snmp-container"; while read -r l; do case $l in Tcp:*) echo "$l";; esac; done < /proc/$$/net/snmp
  fi
  echo "@@pids"; cpu
  echo "@@end"
}
trap 'sample; exit 0' TERM
read -r b < /proc/sys/kernel/random/boot_id; echo "@@boot $b"
i=0
while :; do
  sample
  i=$((i + 1)); [ "$n" -gt 0 ] && [ "$i" -ge "$n" ] && exit 0
  read -t "$p" -u "$w"
done
"""
_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def sampler_argv(period_s: float = PERIOD_S, watch: dict[str, list[int]] | None = None, count: int = 0,
                 in_container: bool = False) -> list[str]:
    """The sampler's command (run it inside the namespace to sample: Host.start(netns=...)).
    `watch`: {role: [pid, ...]} of processes whose CPU it reports besides its own and sshd's."""
    roles = [f"{role}:{pid}" for role, pids in (watch or {}).items() for pid in pids]
    return ["bash", "-c", SAMPLER_SH, f"{PREFIX}-sampler", f"{period_s:g}", str(int(count)),
            "1" if in_container else "0", *roles]


def split_samples(text: str) -> list[dict[str, str]]:
    """Complete samples only ({"uptime": .., "stat": text, ...}); a torn last one is dropped."""
    samples = []
    for chunk in text.split("@@sample ")[1:]:
        if "@@end" not in chunk:
            continue
        chunk = chunk.split("@@end", 1)[0]
        head, _, rest = chunk.partition("\n")
        sample = {"uptime": head.strip()}
        for part in rest.split("@@")[1:]:
            name, _, body = part.partition("\n")
            sample[name.strip()] = body
        samples.append(sample)
    return samples


def parse_stat(text: str) -> dict:
    """/proc/stat: per-CPU jiffies by field, ctxt, intr (total)."""
    cpus, ctxt, intr = {}, 0, 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0].startswith("cpu") and parts[0] != "cpu":
            cpus[parts[0]] = dict(zip(_CPU_FIELDS, (int(x) for x in parts[1:9])))
        elif parts[0] == "ctxt":
            ctxt = int(parts[1])
        elif parts[0] == "intr":
            intr = int(parts[1])
    return {"cpus": cpus, "ctxt": ctxt, "intr": intr}


def parse_netdev(text: str, interface: str) -> dict | None:
    """/proc/net/dev counters of one interface (None: not there)."""
    for line in text.splitlines():
        if ":" not in line:
            continue
        name, _, rest = line.partition(":")
        if name.strip() != interface:
            continue
        v = [int(x) for x in rest.split()]
        return {"rx_bytes": v[0], "rx_packets": v[1], "rx_dropped": v[3], "tx_bytes": v[8], "tx_packets": v[9],
                "tx_dropped": v[11]}
    return None


def parse_snmp_tcp(text: str) -> dict:
    """The Tcp: section of /proc/net/snmp (header line, then values line)."""
    rows = [ln.split() for ln in text.splitlines() if ln.startswith("Tcp:")]
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def _cpu_percent(a: dict, b: dict) -> dict:
    d = {k: b[k] - a[k] for k in _CPU_FIELDS}
    total = sum(d.values()) or 1
    return {
        "user": round(100.0 * (d["user"] + d["nice"]) / total, 2),
        "system": round(100.0 * d["system"] / total, 2),
        "irq": round(100.0 * d["irq"] / total, 2),
        "softirq": round(100.0 * d["softirq"] / total, 2),
        "idle": round(100.0 * (d["idle"] + d["iowait"]) / total, 2),
        "steal": round(100.0 * d["steal"] / total, 2),
    }


def parse_pids(text: str) -> dict[int, tuple[str, int]]:
    """@@pids lines: {pid: (role, utime+stime ticks)}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[int(parts[1])] = (parts[0], int(parts[2]))
    return out


def boot_id(text: str) -> str | None:
    """The @@boot line the sampler prints once at start (None: not there)."""
    for line in text.splitlines():
        if line.startswith("@@boot "):
            return line.split(None, 1)[1].strip() or None
    return None


def parse_samples(text: str, interface: str) -> list[dict]:
    """Complete samples, parsed: {"uptime", "stat", "net", "tcp", "tcp_c", "pids"}."""
    parsed = []
    for s in split_samples(text):
        try:
            parsed.append({
                "uptime": float(s["uptime"]),
                "stat": parse_stat(s.get("stat", "")),
                "net": parse_netdev(s.get("netdev", ""), interface),
                "tcp": parse_snmp_tcp(s.get("snmp", "")),
                "tcp_c": parse_snmp_tcp(s["snmp-container"]) if "snmp-container" in s else None,
                "pids": parse_pids(s.get("pids", "")),
            })
        except (KeyError, ValueError, IndexError):
            continue  # a malformed sample is skipped, not fatal
    return parsed


def intervals(text: str, interface: str) -> list[dict]:
    """Per-interval rates between consecutive complete samples (see the module docstring)."""
    return intervals_of(parse_samples(text, interface))


def intervals_of(parsed: list[dict]) -> list[dict]:
    out = []
    for a, b in zip(parsed, parsed[1:]):
        dt = b["uptime"] - a["uptime"]
        if dt <= 0:
            continue
        row = {
            "t": round(b["uptime"] - parsed[0]["uptime"], 3),
            "dt": round(dt, 3),
            "cpu": {c: _cpu_percent(a["stat"]["cpus"][c], b["stat"]["cpus"][c]) for c in b["stat"]["cpus"]
                    if c in a["stat"]["cpus"]},
            "ctxt_per_s": round((b["stat"]["ctxt"] - a["stat"]["ctxt"]) / dt, 1),
            "intr_per_s": round((b["stat"]["intr"] - a["stat"]["intr"]) / dt, 1),
            "net": None,
            "tcp_retrans": b["tcp"].get("RetransSegs", 0) - a["tcp"].get("RetransSegs", 0),
            "tcp_retrans_container": None,
        }
        if a["net"] and b["net"]:
            n0, n1 = a["net"], b["net"]
            row["net"] = {
                "rx_packets_per_s": round((n1["rx_packets"] - n0["rx_packets"]) / dt, 1),
                "tx_packets_per_s": round((n1["tx_packets"] - n0["tx_packets"]) / dt, 1),
                "rx_bytes_per_s": round((n1["rx_bytes"] - n0["rx_bytes"]) / dt, 1),
                "tx_bytes_per_s": round((n1["tx_bytes"] - n0["tx_bytes"]) / dt, 1),
                "rx_dropped": n1["rx_dropped"] - n0["rx_dropped"],
                "tx_dropped": n1["tx_dropped"] - n0["tx_dropped"],
            }
        if a["tcp_c"] and b["tcp_c"]:
            row["tcp_retrans_container"] = b["tcp_c"].get("RetransSegs", 0) - a["tcp_c"].get("RetransSegs", 0)
        out.append(row)
    return out


CPU_KINDS = ("user", "system", "irq", "softirq", "idle", "steal")
NET_KEYS = ("rx_packets_per_s", "tx_packets_per_s", "rx_bytes_per_s", "tx_bytes_per_s", "rx_dropped", "tx_dropped")


def _cpu_names(samples: list[dict]) -> list[str]:
    names: list[str] = []
    for row in samples:
        for c in row.get("cpu") or {}:
            if c not in names:
                names.append(c)
    return sorted(names, key=lambda c: (len(c), c))  # cpu2 before cpu10


CPU_CELLS_PER_HOST = 4000  # per-CPU numbers a host's metrics keep in a record (~14 KB): beyond, a coarser period
SAMPLES_PER_HOST = 40  # samples a host's metrics keep in a record: a 60 s window + warm-up at 2 s, 30 s at 1 s


def merge(rows_: list[dict]) -> dict:
    """Consecutive intervals as one (pure): shares and rates weighted by their length, counts summed."""
    dt = sum(r["dt"] for r in rows_) or 1.0

    def mean(get):
        vals = [(get(r), r["dt"]) for r in rows_]
        return None if any(v is None for v, _ in vals) else sum(v * w for v, w in vals) / dt

    def total(get):
        vals = [get(r) for r in rows_]
        return None if any(v is None for v in vals) else sum(vals)

    cpus = set.intersection(*(set(r.get("cpu") or {}) for r in rows_))
    nets = all(r.get("net") for r in rows_)
    return {"t": rows_[-1]["t"], "dt": round(sum(r["dt"] for r in rows_), 3),
            "cpu": {c: {k: mean(lambda r: r["cpu"][c].get(k, 0.0)) for k in CPU_KINDS} for c in cpus},
            "ctxt_per_s": mean(lambda r: r.get("ctxt_per_s")), "intr_per_s": mean(lambda r: r.get("intr_per_s")),
            "net": ({k: (total if k.endswith("_dropped") else mean)(lambda r: r["net"][k]) for k in NET_KEYS}
                    if nets else None),
            "tcp_retrans": total(lambda r: r.get("tcp_retrans")),
            "tcp_retrans_container": total(lambda r: r.get("tcp_retrans_container"))}


def coarsen(samples: list[dict], cells: int = CPU_CELLS_PER_HOST, most: int = SAMPLES_PER_HOST) -> list[dict]:
    """The samples at a period long enough that there are at most `most` and their per-CPU
    numbers fit `cells`: every k consecutive intervals merged (a 10 s run keeps 1 s, a 60 s
    window 2 s; a 36-CPU host 4 s). CPU time per request and every total stay as they were
    (weighted by length); the guards judge the full samples (Sampler.parsed), not these."""
    ncpu = len(_cpu_names(samples))
    k = max(1, math.ceil(len(samples) * ncpu * len(CPU_KINDS) / max(1, cells)), math.ceil(len(samples) / max(1, most)))
    return samples if k == 1 else [merge(samples[i:i + k]) for i in range(0, len(samples), k)]


def compact(samples: list[dict]) -> dict:
    """The record's `metrics` value of one host (besides period_s and interface), as columns:
    {"format": "columns", "cpu_fields", "cpus", "cpu_unit_pct": 0.1, "dt": [s, ...],
    "cpu": [[[user, system, irq, softirq, idle, steal] per CPU, in 0.1 % integers] per sample],
    "ctxt_per_s", "intr_per_s", "tcp_retrans", "tcp_retrans_container": [int per sample],
    "net": {rx_packets_per_s, ...: [int per sample]}}. Names are stored once, not per sample, and
    rates as integers, so a 60 s window fits the record's 64 KB; a host whose CPUs would take more
    than CPU_CELLS_PER_HOST numbers keeps a coarser period (`coarsen`; "dt" says which). "t" is the running sum of "dt"
    (both come from /proc/uptime's 10 ms steps): results.metrics_rows gives the samples back."""
    samples = coarsen(samples)
    names = _cpu_names(samples)
    scale = 1 / CPU_UNIT_PCT

    def cpu(row):
        c = row.get("cpu") or {}
        return [[round(float(c[n].get(k, 0.0)) * scale) for k in CPU_KINDS] if n in c else None for n in names]

    def col(key):
        return [None if r.get(key) is None else round(r[key]) for r in samples]

    nets = [r.get("net") for r in samples]
    out = {"format": METRICS_COLUMNS, "cpu_fields": list(CPU_KINDS), "cpus": names, "cpu_unit_pct": CPU_UNIT_PCT,
           "dt": [r["dt"] for r in samples], "cpu": [cpu(r) for r in samples],
           "ctxt_per_s": col("ctxt_per_s"), "intr_per_s": col("intr_per_s"), "tcp_retrans": col("tcp_retrans"),
           "tcp_retrans_container": col("tcp_retrans_container"),
           "net": {k: [None if n is None else round(n[k]) for n in nets] for k in NET_KEYS}}
    if all(v is None for v in out["tcp_retrans_container"]):
        out["tcp_retrans_container"] = None
    return out


def expand_cpu(host_metrics: dict, sample: dict) -> dict[str, dict]:
    """A sample's per-CPU values as {cpu: {kind: %}}, from any stored shape (a sample of `rows`)."""
    cpu = sample.get("cpu") or {}
    if isinstance(cpu, dict):
        return cpu
    fields = host_metrics.get("cpu_fields") or list(CPU_KINDS)
    names = host_metrics.get("cpus") or [f"cpu{i}" for i in range(len(cpu))]
    return {n: dict(zip(fields, v)) for n, v in zip(names, cpu) if v is not None}


class Sampler:
    """One sampler per host for the length of a run, inside the namespace under test."""

    def __init__(self, period_s: float = PERIOD_S):
        self.period_s = period_s
        self.running: dict[str, tuple[Background, str]] = {}
        self.parsed: dict[str, dict] = {}  # host -> {"boot_id", "samples": parse_samples(...)} once stopped

    async def start(self, host, interface: str, container_netns: str | None = None,
                    watch: dict[str, list[int]] | None = None) -> None:
        argv = sampler_argv(self.period_s, watch, in_container=container_netns is not None)
        bg = await host.start(argv, netns=container_netns)
        self.running[host.name] = (bg, interface)

    async def stop(self) -> dict[str, dict]:
        """Stop every sampler (even if one fails) and return the record's `metrics` value.
        The samplers are signalled together; each answers with a last sample right away."""
        out: dict[str, dict] = {}
        items = list(self.running.items())
        results = await asyncio.gather(*(bg.stop(grace=3) for _, (bg, _) in items), return_exceptions=True)
        for (name, (_, interface)), res in zip(items, results):
            if isinstance(res, BaseException):  # a lost host must not keep the others' samplers running
                if isinstance(res, asyncio.CancelledError):
                    raise res
                out[name] = {"period_s": self.period_s, "interface": interface, "samples": [], "error": str(res)}
            else:
                parsed = parse_samples(res.stdout, interface)
                self.parsed[name] = {"boot_id": boot_id(res.stdout), "samples": parsed}
                out[name] = {"period_s": self.period_s, "interface": interface, **compact(intervals_of(parsed))}
            self.running.pop(name, None)
        return out
