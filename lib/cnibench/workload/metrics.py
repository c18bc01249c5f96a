"""System metrics on every host during a run: a sampler over SSH with a 1 s period.

The remote side is one `sh` loop that prints /proc/stat, /proc/net/dev and /proc/net/snmp
(and, for a container mode, the container's /proc/net/snmp: TCP runs there) behind a
timestamp from /proc/uptime. Nothing else runs on the host; a sample costs a few `cat`s.
Everything below `SAMPLER_SH` is pure parsing of that text into per-interval rates:

  {"t": s since the first sample, "dt": s,
   "cpu": {"cpu0": {"user": %, "system": %, "irq": %, "softirq": %, "idle": %}, ...},
   "ctxt_per_s", "intr_per_s",
   "net": {"rx_packets_per_s", "tx_packets_per_s", "rx_bytes_per_s", "tx_bytes_per_s",
           "rx_dropped", "tx_dropped"},           (the data interface; drops are counts)
   "tcp_retrans": count, "tcp_retrans_container": count | None}

In the run record (`compact`) the per-CPU part is stored as arrays, rounded to 0.1 %: per host
"cpu_fields": ["user", "system", "irq", "softirq", "idle"], "cpus": ["cpu0", ...] and per
sample "cpu": [[user, system, irq, softirq, idle] per CPU in that order]. A 36-CPU host then
costs ~1 KB per second of run instead of ~3 KB, so a record stays under 64 KB.
"""

from __future__ import annotations

import asyncio

from ..hosts import Background

PERIOD_S = 1.0
# TERM (Sampler.stop) takes one last sample and exits at once: the sleep runs in the background
# and `wait` returns on the signal, so a stop neither waits out a period nor loses the tail of
# the run. A sample torn by the signal has no @@end and is dropped by split_samples.
SAMPLER_SH = r"""p=$1; ns=$2; s=
sample() {
  read -r up _ < /proc/uptime
  echo "@@sample $up"
  echo "@@stat"; cat /proc/stat
  echo "@@netdev"; cat /proc/net/dev
  echo "@@snmp"; cat /proc/net/snmp
  if [ -n "$ns" ]; then echo "@@snmp-container"; ip netns exec "$ns" cat /proc/net/snmp 2>/dev/null; fi
  echo "@@end"
}
trap '[ -n "$s" ] && kill "$s" 2>/dev/null; sample; exit 0' TERM
while :; do
  sample
  sleep "$p" & s=$!
  wait "$s"
done
"""
_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def sampler_argv(period_s: float = PERIOD_S, container_netns: str | None = None) -> list[str]:
    return ["sh", "-c", SAMPLER_SH, "cnib-sampler", f"{period_s:g}", container_netns or ""]


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
        return {"rx_bytes": v[0], "rx_packets": v[1], "rx_dropped": v[3], "tx_bytes": v[8], "tx_packets": v[9], "tx_dropped": v[11]}
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
    }


def intervals(text: str, interface: str) -> list[dict]:
    """Per-interval rates between consecutive complete samples (see the module docstring)."""
    parsed = []
    for s in split_samples(text):
        try:
            parsed.append({
                "uptime": float(s["uptime"]),
                "stat": parse_stat(s.get("stat", "")),
                "net": parse_netdev(s.get("netdev", ""), interface),
                "tcp": parse_snmp_tcp(s.get("snmp", "")),
                "tcp_c": parse_snmp_tcp(s["snmp-container"]) if "snmp-container" in s else None,
            })
        except (KeyError, ValueError, IndexError):
            continue  # a malformed sample is skipped, not fatal
    out = []
    for a, b in zip(parsed, parsed[1:]):
        dt = b["uptime"] - a["uptime"]
        if dt <= 0:
            continue
        row = {
            "t": round(b["uptime"] - parsed[0]["uptime"], 3),
            "dt": round(dt, 3),
            "cpu": {c: _cpu_percent(a["stat"]["cpus"][c], b["stat"]["cpus"][c]) for c in b["stat"]["cpus"] if c in a["stat"]["cpus"]},
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


CPU_KINDS = ("user", "system", "irq", "softirq", "idle")


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
    """One sampler per host for the length of a run."""

    def __init__(self, period_s: float = PERIOD_S):
        self.period_s = period_s
        self.running: dict[str, tuple[Background, str]] = {}

    async def start(self, host, interface: str, container_netns: str | None = None) -> None:
        bg = await host.start(sampler_argv(self.period_s, container_netns))
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
                out[name] = {"period_s": self.period_s, "interface": interface, **compact(intervals(res.stdout, interface))}
            self.running.pop(name, None)
        return out
