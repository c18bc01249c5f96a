"""The server-core steal probe: a tiny C program (stealprobe.c) pinned to each of nginx's cores
that wakes on an absolute schedule and lists the late wake-ups with their cause (steal,
preempted, own, stopped), as cnib-openloop 5 classifies its own stalls. Started with the run
(before the warm-up), stopped after the window, like the hiccup meter; `parse` and `summary`
are pure, the record keeps `hygiene.server_probe` (see `summary`).

Cost model (docs/method.md, "The server-core steal probe"): each wake-up costs the core a fixed
c_wake (timer, two context switches, one pread of schedstat), so the probe's share of its core
is c_wake / INTERVAL_US. A smoke check on the testbed's idle core measured c_wake at about
20-25 µs of the probe's sum_exec_runtime (a VM: arming the timer and leaving idle exit to the
hypervisor), so the 0.2 % budget needs an interval of about 12 ms; the resolution reached is the
interval (an episode's start is known to one interval; its end to the wake-up latency).
benchmarks/stealprobe_bench.py measures the cost and the agreement with /proc/stat.
"""

from __future__ import annotations

import asyncio

from ...infra.cbuild import CSource, ensure_built

SOURCE = CSource(__package__, "stealprobe.c", "stealprobe")
INTERVAL_US = 12000  # the 0.2 % budget at the wake-up cost measured here (module docstring)
LATE_US = 200  # a wake-up later than this is an episode (the timer's own latency stays below)
EPISODES_KEPT = 500  # the largest episodes kept in the record
CAUSES = ("steal", "preempted", "own", "stopped")


def source() -> bytes:
    return SOURCE.read()


def probe_argv(binary: str, cpu: int, interval_us: int = INTERVAL_US, late_us: int = LATE_US) -> list[str]:
    return ["taskset", "-c", str(int(cpu)), binary, str(int(interval_us)), str(int(late_us))]


_INT_KEYS = ("interval_us", "late_us", "cpu", "schedstat", "t0_realtime_ns", "t0_mono_ns", "samples", "span_ns",
             "cpu_ns", "exec_ns", "dropped")


def parse(text: str) -> dict | None:
    """One probe's summary: its scalars, "sched", "offcpu": {cause: [count, ns]} and "episodes":
    [[start_ns, end_ns, late_ns, steal_ns, cause], ...] (ns since its start, in time order);
    None when the text is not a complete summary (nothing in it is run or trusted beyond
    integers and the four cause names)."""
    lines = (text or "").splitlines()
    if not lines or lines[0].strip() != "stealprobe 1" or "end" not in (ln.strip() for ln in lines):
        return None
    out: dict = {"offcpu": {}, "episodes": []}
    try:
        for parts in (ln.split() for ln in lines[1:]):
            if not parts or parts[0] == "end":
                continue
            if parts[0] in _INT_KEYS:
                out[parts[0]] = int(parts[1])
            elif parts[0] == "sched" and parts[1] in ("fifo", "other"):
                out["sched"] = parts[1]
            elif parts[0] == "offcpu" and parts[1] in CAUSES:
                out["offcpu"][parts[1]] = [int(parts[2]), int(parts[3])]
            elif parts[0] == "ep":
                start, end, late, steal, cause = (int(x) for x in parts[1:6])
                if 0 <= cause < len(CAUSES) and end >= start:
                    out["episodes"].append([start, end, late, steal, cause])
    except (IndexError, ValueError):
        return None
    if any(k not in out for k in ("interval_us", "t0_realtime_ns", "span_ns", "cpu_ns")):
        return None
    out["episodes"].sort()
    return out


def steal_spans_realtime(probe: dict) -> list[tuple[int, int, int]]:
    """(start, end, stolen) on the realtime clock (ns) of the probe's episodes with steal in them."""
    t0 = probe["t0_realtime_ns"]
    return [(t0 + s, t0 + e, st) for s, e, _, st, _ in probe["episodes"] if st > 0]


def summary(probes: list[dict], cpus: list[int]) -> dict:
    """The record's `hygiene.server_probe` from the probes of one run (one per nginx core):
    {cpus, resolution_us, probe_cpu_s, window_s, steal_s, episodes: [[start_us_rel, dur_us], ...]
    (the largest EPISODES_KEPT with steal, start since the first probe's start), offcpu_by_cause
    (s), t0_realtime_ns, sched}. probe_cpu_s is the exact sum_exec_runtime where the kernel has
    schedstat, else the tick-sampled rusage."""
    if not probes:
        return {"cpus": list(cpus), "resolution_us": None, "probe_cpu_s": None, "window_s": None, "steal_s": None,
                "episodes": [], "offcpu_by_cause": {}, "t0_realtime_ns": None, "sched": None}
    t0 = min(p["t0_realtime_ns"] for p in probes)
    eps = [(s - t0, e - s, st) for p in probes for s, e, st in steal_spans_realtime(p)]
    kept = sorted(sorted(eps, key=lambda x: -x[2])[:EPISODES_KEPT])
    by_cause: dict[str, float] = {}
    for p in probes:
        for cause, (_, late_ns) in p["offcpu"].items():
            by_cause[cause] = by_cause.get(cause, 0.0) + late_ns / 1e9
    cpu_ns = sum(p["exec_ns"] if p.get("exec_ns", -1) >= 0 else p["cpu_ns"] for p in probes)
    return {"cpus": list(cpus), "resolution_us": max(p["interval_us"] for p in probes),
            "probe_cpu_s": round(cpu_ns / 1e9, 6), "window_s": round(max(p["span_ns"] for p in probes) / 1e9, 3),
            "steal_s": round(sum(st for _, _, st in eps) / 1e9, 6),
            "episodes": [[int(s // 1000), int(d // 1000)] for s, d, _ in kept],
            "offcpu_by_cause": {k: round(v, 6) for k, v in sorted(by_cause.items())},
            "t0_realtime_ns": t0, "sched": sorted({p.get("sched", "?") for p in probes})}


class Probes:
    """The steal probes of one run: one per core on one host; stop never raises."""

    def __init__(self):
        self.running: list[tuple[int, object]] = []  # (cpu, Background)
        self.notes: list[str] = []

    async def start(self, host, cpus: list[int], interval_us: int = INTERVAL_US) -> list[int]:
        """Start a probe pinned to each of `cpus`; their pids. A host without a compiler gets none
        and a note (the server's split is then unobserved, never guessed)."""
        try:
            binary = await ensure_built(host, "stealprobe", source())
        except Exception as exc:  # noqa: BLE001 - the probe is an instrument, not the measurement
            self.notes.append(f"steal probe not started on {host.name}: {exc}")
            return []
        pids = []
        for cpu in cpus:
            bg = await host.start(probe_argv(binary, cpu, interval_us))
            self.running.append((cpu, bg))
            pids.append(bg.pid)
        return pids

    async def stop(self) -> list[dict]:
        """The parsed summary of every probe that gave one (with its "cpu" as pinned)."""
        items, self.running = self.running, []
        results = await asyncio.gather(*(bg.stop(grace=3) for _, bg in items), return_exceptions=True)
        out = []
        for (cpu, _), res in zip(items, results):
            if isinstance(res, asyncio.CancelledError):
                raise res
            parsed = None if isinstance(res, BaseException) else parse(res.stdout)
            if parsed is None:
                self.notes.append(f"steal probe on cpu {cpu} gave no summary")
                continue
            out.append({**parsed, "cpu": cpu})
        return out
