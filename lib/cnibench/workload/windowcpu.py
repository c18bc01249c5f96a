"""CPU of the pinned cores over the measurement window, per role, and instructions where the
hypervisor exposes the PMU (issue 25, item 4).

    window_cpu(samples_by_host, roles, duration_s)  -> metrics.window_cpu        (pure)
    instructions_support(text, exit_status)         -> (True, None) | (False, reason)   (pure)
    parse_perf_count(text)                          -> instructions counted, or None     (pure)

window_cpu reads the per-CPU /proc/stat lines the sampler already takes (metrics.parse_samples:
cumulative jiffies, 1/USER_HZ s). The window is the last `duration_s` before the sampler's last
sample (taken when the load ended, session.py stops the samplers right after the generator); its
start falls between two samples, where the cumulative counters are interpolated linearly
(counters sampled once a second: the start is uncertain by the load's change within that
second, the end is exact). user includes nice.
"""

from __future__ import annotations

from .metrics import USER_HZ

KINDS = {"user_s": ("user", "nice"), "system_s": ("system",), "softirq_s": ("softirq",), "irq_s": ("irq",),
         "steal_s": ("steal",), "idle_s": ("idle", "iowait")}


def _at(samples: list[dict], t: float, cpu: str, fields: tuple[str, ...]) -> float | None:
    """Cumulative jiffies of `fields` of `cpu` at uptime t, interpolated between samples."""
    def val(s):
        c = s["stat"]["cpus"].get(cpu)
        return None if c is None else sum(c.get(f, 0) for f in fields)
    for a, b in zip(samples, samples[1:]):
        if a["uptime"] <= t <= b["uptime"]:
            va, vb = val(a), val(b)
            if va is None or vb is None:
                return None
            span = b["uptime"] - a["uptime"]
            return va + (vb - va) * ((t - a["uptime"]) / span if span > 0 else 1.0)
    return None


def role_cpu(samples: list[dict], cpus: list[int], duration_s: float) -> dict | None:
    """One role's window CPU (None: fewer than two samples, or the window not inside them)."""
    if len(samples) < 2 or not cpus:
        return None
    end = samples[-1]["uptime"]
    start = max(samples[0]["uptime"], end - float(duration_s))
    out: dict = {"cpus": list(cpus), "span_s": round(end - start, 3)}
    for key, fields in KINDS.items():
        total = 0.0
        for cpu in cpus:
            a, b = _at(samples, start, f"cpu{cpu}", fields), _at(samples, end, f"cpu{cpu}", fields)
            if a is None or b is None:
                return None
            total += b - a
        out[key] = round(total / USER_HZ, 3)
    return out


def window_cpu(samples_by_host: dict[str, list[dict]], roles: dict[str, tuple[str, list[int]]],
               duration_s: float) -> dict:
    """{"client": {...}, "server": {...}}: each role's pinned cores (roles: role -> (host, cpus))
    over the window, from that host's sampler samples; a role without samples or pinning is None."""
    return {role: role_cpu(samples_by_host.get(host) or [], cpus, duration_s) for role, (host, cpus) in roles.items()}


def instructions_support(text: str, exit_status: int) -> tuple[bool, str | None]:
    """From `perf stat -x, -e instructions true`: whether instructions can be counted here."""
    if exit_status == 127 or "not found" in (text or ""):
        return False, "perf is not installed on this host (not installed by cnibench)"
    if exit_status != 0:
        return False, f"perf stat -e instructions true failed (exit {exit_status})"
    if parse_perf_count(text) is None:
        return False, "perf stat -e instructions: <not supported> (the hypervisor exposes no PMU to this guest)"
    return True, None


def parse_perf_count(text: str) -> int | None:
    """The instructions count from perf stat's CSV output (-x,), None when not counted."""
    for line in (text or "").splitlines():
        parts = line.split(",")
        if len(parts) >= 3 and parts[2].startswith("instructions"):
            try:
                return int(parts[0])
            except ValueError:
                return None
    return None
