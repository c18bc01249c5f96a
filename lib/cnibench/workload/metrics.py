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

In the run record (`compact`) the per-CPU part is stored as arrays, rounded to 0.1 %: per host
"cpu_fields": ["user", "system", "irq", "softirq", "idle", "steal"], "cpus": ["cpu0", ...] and
per sample "cpu": [[user, system, irq, softirq, idle, steal] per CPU in that order]. A 36-CPU
host then costs ~1 KB per second of run instead of ~3 KB, so a record stays under 64 KB.
"""

from __future__ import annotations

import asyncio

from ..catalog import PREFIX
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


def compact(samples: list[dict]) -> dict:
    """{"cpu_fields", "cpus", "samples"} with each sample's per-CPU dict turned into arrays."""
    names: list[str] = []
    for row in samples:
        for c in row.get("cpu") or {}:
            if c not in names:
                names.append(c)
    names.sort(key=lambda c: (len(c), c))  # cpu2 before cpu10
    out = []
    for row in samples:
        cpu = row.get("cpu") or {}
        arr = [[round(float(cpu[c].get(k, 0.0)), 1) for k in CPU_KINDS] if c in cpu else None for c in names]
        out.append({**row, "cpu": arr})
    return {"cpu_fields": list(CPU_KINDS), "cpus": names, "samples": out}


def expand_cpu(host_metrics: dict, sample: dict) -> dict[str, dict]:
    """A sample's per-CPU values as {cpu: {kind: %}}, from either stored shape."""
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
