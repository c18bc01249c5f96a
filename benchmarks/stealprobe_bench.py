"""The steal probe's acceptance figures (issue 25, acceptance 2), on the local testbed (needs
root and an idle machine; takes /run/cnibench-dev.lock itself):

    python3 benchmarks/stealprobe_bench.py [--runs 10] [--rate R] [--duration 5] [--pairs 10]

Part 1, `runs` lab-length runs (openloop, host mode, pinned, the record's server probe on nginx's
core) with a second probe on the generator's core, started just before the run and stopped
just after:
  - each probe's own CPU as measured by the kernel (/proc/<pid>/stat utime+stime, tick-sampled,
    and schedstat's exact sum_exec_runtime) as % of its core over its life; target <= 0.2 %;
  - on the generator's core, the share of the generator's steal-classified off-CPU time (its
    listed stalls of cause steal) inside the probe's episodes widened by the probe's stated
    resolution on each side; target >= 90 %;
  - summed over the runs, the client-core probe's steal vs /proc/stat's steal of that core over
    the probe's life; target within max(10 %, 20 ms).
Part 2, `pairs` interleaved pairs at `rate` (give 50 % of the calibrated maximum) with the side
programs (sampler, hiccup meter, server probe) on vs off: the p50 difference and its 95 %
interval (t over the pairs' log ratios); aim within +-5 %. --arms picks which sets to compare with
off (on: the record's default, sampler and probe; all: with the hiccup meter, off by default). The
generator's stall detector is part of cnib-openloop and stays on in both arms (it has no switch).

Prints one table. Results also go to benchmarks/results/stealprobe.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
from dataclasses import replace

from cnibench.infra import testbed as tb
from cnibench.infra.config import ROOT, load_inventory
from cnibench.infra.hosts import Fleet
from cnibench.workload import stealprobe as sp
from cnibench.workload.bench import BenchSpec
from cnibench.workload.cli import mode_endpoint
from cnibench.workload.metrics import USER_HZ
from cnibench.workload.session import BenchSession

from hygiene_bench import effect, fmt

OUT = ROOT / "benchmarks" / "results"
LOCK = "/run/cnibench-dev.lock"


def steal_jiffies(proc_stat: str, cpu: int) -> int:
    """The steal field of cpuN in /proc/stat (pure)."""
    for line in proc_stat.splitlines():
        parts = line.split()
        if parts and parts[0] == f"cpu{cpu}":
            return int(parts[8])
    raise ValueError(f"no cpu{cpu} line in /proc/stat")


def ticks_of(pid_stat: str) -> int:
    """utime + stime of /proc/<pid>/stat (pure)."""
    fields = pid_stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def coverage(stalls: list, t0_realtime_ns: int, probe: dict) -> dict:
    """Share of the generator's steal stalls' off-CPU time inside the probe's episodes widened by
    its resolution (each stall weighted by the overlapped fraction of its span; pure)."""
    pad = probe["interval_us"] * 1000
    shift = probe["t0_realtime_ns"] - t0_realtime_ns  # probe time -> generator time
    spans = [(s + shift - pad, e + shift + pad) for s, e, _, st, c in probe["episodes"] if c == 0 and st > 0]
    total = inside = 0.0
    for st in stalls or []:
        if len(st) < 5 or st[4] != 0:
            continue
        begin, end, off = st[1], st[2], st[3]
        total += off
        length = max(1, end - begin)
        covered = sum(max(0, min(end, b) - max(begin, a)) for a, b in spans)
        inside += off * min(1.0, covered / length)
    return {"steal_ms": round(total / 1e6, 3), "inside_ms": round(inside / 1e6, 3),
            "share": round(inside / total, 4) if total else None}


async def one_run(s: BenchSession, fleet, spec: BenchSpec, i: int) -> dict:
    host, cpu = fleet.client, spec.client_cpus[0]
    probes = sp.Probes()
    stat0 = (await host.run(["cat", "/proc/stat"])).stdout
    pids = await probes.start(host, [cpu])
    rec = await s.run(spec, run_id=f"bench/stealprobe/host/small/{int(spec.rate)}/{i}")
    ticks = ticks_of((await host.run(["cat", f"/proc/{pids[0]}/stat"])).stdout) if pids else None
    out = await probes.stop()
    stat1 = (await host.run(["cat", "/proc/stat"])).stdout
    if not out:
        return {"status": rec["status"], "error": "; ".join(probes.notes)}
    p = out[0]
    info = (rec.get("settings") or {}).get("generator_info") or {}
    server = (rec.get("hygiene") or {}).get("server_probe") or {}
    life_s = p["span_ns"] / 1e9
    return {"status": rec["status"], "life_s": round(life_s, 3),
            "client_probe_cpu_pct_stat": None if ticks is None else round(100 * ticks / USER_HZ / life_s, 4),
            "client_probe_cpu_pct_exec": round(100 * p.get("exec_ns", -1) / 1e9 / life_s, 4),
            "server_probe_cpu_pct": None if not server.get("probe_cpu_s") else
            round(100 * server["probe_cpu_s"] / server["window_s"] / max(1, len(server["cpus"])), 4),
            "probe_steal_s": round(sum(e[3] for e in p["episodes"]) / 1e9, 6),
            "procstat_steal_s": (steal_jiffies(stat1, cpu) - steal_jiffies(stat0, cpu)) / USER_HZ,
            "coverage": coverage(info.get("stalls_largest"), info.get("t0_realtime_ns") or 0, p)}


async def part1(fleet, ep, base: BenchSpec, runs: int) -> list[dict]:
    rows = []
    async with BenchSession(fleet, ep) as s:
        for i in range(runs):
            row = await one_run(s, fleet, base, i)
            rows.append(row)
            print(f"  run {i + 1}: {json.dumps(row)}", flush=True)
    return rows


SIDE_ARMS = {  # each arm's side programs: `on` the record's default (sampler, probe), `all` with the hiccup
    "on": {},  # meter too, `off` none; the others one each
    "all": {"hiccup": "on"},
    "off": {"metrics": False, "hiccup": "off", "steal_probe": False},
    "sampler": {"hiccup": "off", "steal_probe": False},
    "hiccup": {"metrics": False, "steal_probe": False, "hiccup": "on"},
    "probe": {"metrics": False, "hiccup": "off"},
}


async def part2(fleet, ep, base: BenchSpec, pairs: int, arms: list[str]) -> dict:
    """Interleaved rounds of `off` and each arm (the order rotates each round); every arm's p50 effect
    against `off` from the rounds' log ratios."""
    names = ["off"] + [a for a in arms if a != "off"]
    got: dict[str, list] = {a: [] for a in names}
    async with BenchSession(fleet, ep) as s:
        for i in range(pairs):
            k = i % len(names)
            for arm in names[k:] + names[:k]:
                rec = await s.run(replace(base, **SIDE_ARMS[arm]), run_id=f"bench/stealprobe-side/{arm}/{i}")
                p50 = ((rec.get("latency") or {}).get("percentiles") or {}).get("50")
                got[arm].append(p50)
                print(f"  round {i + 1} {arm:8s}: {rec['status']} p50 {p50} us", flush=True)
    effects = {a: effect(list(zip(got["off"], got[a]))) for a in names if a != "off"}
    return {"p50": effects.get("on") or next(iter(effects.values())), "effects": effects, "p50_us": got}


def table(rows: list[dict], side: dict) -> str:
    ok = [r for r in rows if "coverage" in r]
    worst = lambda k: max((r[k] for r in ok if r.get(k) is not None), default=None)  # noqa: E731
    steal_p, steal_s = sum(r["probe_steal_s"] for r in ok), sum(r["procstat_steal_s"] for r in ok)
    tol = max(0.10 * steal_s, 0.020)
    cov_steal = sum(r["coverage"]["steal_ms"] for r in ok)
    cov_in = sum(r["coverage"]["inside_ms"] for r in ok)
    pct = lambda v: "-" if v is None else f"{v} %"  # noqa: E731
    cov = f"{100 * cov_in / cov_steal:.1f} % of {cov_steal:.1f} ms" if cov_steal else "no steal seen"
    agree = "yes" if abs(steal_p - steal_s) <= tol else "no"
    rows_out = [
        ("probe CPU, generator core, /proc/<pid>/stat, worst", pct(worst("client_probe_cpu_pct_stat")), "<= 0.2 %"),
        ("probe CPU, generator core, sum_exec_runtime, worst", pct(worst("client_probe_cpu_pct_exec")), "<= 0.2 %"),
        ("probe CPU, nginx core, sum_exec_runtime (worst run)", pct(worst("server_probe_cpu_pct")), "<= 0.2 %"),
        ("generator steal off-CPU inside probe episodes (all runs)", cov, ">= 90 %"),
        ("probe steal vs /proc/stat steal, summed", f"{steal_p:.3f} s vs {steal_s:.3f} s",
         f"within {tol:.3f} s: {agree}"),
    ] + [(f"side programs: {a} vs off, p50", fmt(e), "within +-5 %") for a, e in side["effects"].items()]
    lines = [f"{'figure':58s} {'value':>40s}  target"] + [f"{a:58s} {b:>40s}  {c}" for a, b, c in rows_out]
    return "\n".join(lines)


async def main(args) -> dict:
    was_up = tb.status()["up"]
    if not was_up:
        tb.up()
    try:
        async with Fleet(load_inventory(tb.generated_inventory_path())) as fleet:
            base = BenchSpec(mode="host", size="small", rate=args.rate, duration_s=args.duration, warmup_s=0.5,
                             generator="openloop")
            async with mode_endpoint(fleet, "host") as ep:
                rows = await part1(fleet, ep, base, args.runs)
                side = await part2(fleet, ep, base, args.pairs, args.arms.split(","))
            print(table(rows, side))
            return {"runs": rows, "side": side}
    finally:
        if not was_up:
            tb.down()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--rate", type=float, default=12_000, help="requests/s: give 50 %% of the calibrated maximum")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--arms", default="on", help="side-program arms to compare with off, comma-separated: "
                    + ", ".join(a for a in SIDE_ARMS if a != "off"))
    a = ap.parse_args()
    if bad := [x for x in a.arms.split(",") if x not in SIDE_ARMS]:
        ap.error(f"unknown arm(s) {', '.join(bad)}; choose from {', '.join(SIDE_ARMS)}")
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = asyncio.run(main(a))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "stealprobe.json").write_text(json.dumps(result, indent=1))
