"""Measurement-hygiene benchmarks on the local testbed (needs root and an idle machine).

    flock /run/cnibench-dev.lock python3 benchmarks/hygiene_bench.py sampler      [--pairs 5] [--rate R]
    flock /run/cnibench-dev.lock python3 benchmarks/hygiene_bench.py meter        [--pairs 5] [--rate R]
    flock /run/cnibench-dev.lock python3 benchmarks/hygiene_bench.py calibration  [--repeat 5] \
[--mode host --size small]

sampler      interleaved runs with the sampler on and off (metrics true/false), `pairs` pairs per
             mode (host, flannel-vxlan), order alternating within pairs; prints per mode the mean
             relative effect on p50 with its 95 % CI (t over the pairs' log ratios) and the
             effect on p99. Target: the CI of the p50 effect within +-5 %.
meter        the same with the hiccup meter off / on (unpinned) / pinned (one per pinned core),
             host mode; target: the meter moves p50 by less than 5 %. Decides the default placement.
             Also over the pairs the machine left alone: neither run's generator was off its CPU
             for more than 1 % of the run (its own stall detector; the same measure with the
             meter on or off), a rule fixed before the runs.
calibration  `repeat` back-to-back calibrations of one mode/size (nothing saved); prints each
             maximum and their coefficient of variation (target <= 3 %).

The testbed is brought up if it is down and left as found. Results also go to
benchmarks/results/hygiene-<what>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from dataclasses import replace

from cnibench.infra import testbed as tb
from cnibench.infra.config import ROOT, load_inventory
from cnibench.infra.hosts import Fleet
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import BenchSession
from cnibench.study.runner import bench_spec
from cnibench.study.calibration import calibrate_kwargs
from cnibench.study.spec import load_study
from cnibench.workload.calibrate import calibrate
from cnibench.workload.cli import mode_endpoint
from cnibench.workload.quiet import wait_quiet

OUT = ROOT / "benchmarks" / "results"
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 15: 2.13, 20: 2.09,
        30: 2.04}


def t975(df: int) -> float:
    return T975.get(df) or T975[min(T975, key=lambda k: abs(k - df))]


def effect(pairs: list[tuple[float, float]]) -> dict:
    """Mean relative effect (on/off - 1) over paired runs and its 95 % CI, from log ratios (pure)."""
    logs = [math.log(on / off) for off, on in pairs if on and off]
    if len(logs) < 2:
        return {"n": len(logs), "effect": None, "ci95": None}
    m, s = statistics.mean(logs), statistics.stdev(logs)
    h = t975(len(logs) - 1) * s / math.sqrt(len(logs))
    return {"n": len(logs), "effect": math.exp(m) - 1, "ci95": [math.exp(m - h) - 1, math.exp(m + h) - 1]}


def cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else None


def p(rec, key):
    v = ((rec.get("latency") or {}).get("percentiles") or {}).get(key)
    return None if v is None else float(v)


async def interleaved(fleet, mode: str, base: BenchSpec, variants: dict[str, dict], pairs: int) -> dict:
    """Runs of each variant (BenchSpec overrides) in rotating order, `pairs` rounds, one nginx."""
    names = list(variants)
    rows: dict[str, list[dict]] = {n: [] for n in names}
    async with mode_endpoint(fleet, mode) as ep:
        async with BenchSession(fleet, ep) as s:
            for i in range(pairs):
                order = names[i % len(names):] + names[:i % len(names)]
                for n in order:
                    spec = replace(base, mode=mode, **variants[n])
                    rec = await s.run(spec, run_id=f"bench/hygiene/{mode}/{n}/{i}")
                    h = rec.get("hygiene") or {}
                    info = (rec.get("settings") or {}).get("generator_info") or {}
                    row = {"status": rec["status"], "reason": rec["reason"], "p50": p(rec, "50"), "p99": p(rec, "99"),
                           "flags": h.get("flags"), "cpu_s": h.get("cpu_s"),
                           "offcpu_ms": None if info.get("offcpu_s") is None else round(info["offcpu_s"] * 1e3, 1),
                           "run_s": spec.warmup_s + spec.duration_s}
                    rows[n].append(row)
                    print(f"  {mode:14s} round {i + 1} {n:8s} {row['status']:7s} p50 {row['p50']} us  p99 {row['p99']} "
                          f"us  generator off its CPU {row['offcpu_ms']} ms  flags {row['flags']}  {row['reason']}",
                          flush=True)
    return rows


OFFCPU_MAX = 0.01  # of a run: beyond it the machine, not the variant, set the run (rule fixed before the runs)


def machine_disturbed(row: dict) -> bool:
    """The generator's own stall detector (cnib-openloop 2) found its core taken away for more
    than OFFCPU_MAX of the run: a measure that does not depend on the variant being compared
    (the hiccup meter's own figures exist only where it runs)."""
    return row.get("offcpu_ms") is not None and row["offcpu_ms"] > OFFCPU_MAX * 1e3 * row["run_s"]


def compare(rows: dict[str, list[dict]], off: str, on: str) -> dict:
    """The effect over all pairs, and over the pairs in which neither run was machine_disturbed."""
    pairs = list(zip(rows[off], rows[on]))
    kept = [(a, b) for a, b in pairs if not machine_disturbed(a) and not machine_disturbed(b)]
    return {"p50": effect([(a["p50"], b["p50"]) for a, b in pairs]),
            "p99": effect([(a["p99"], b["p99"]) for a, b in pairs]),
            "undisturbed_pairs": {"n": len(kept), "of": len(pairs),
                                  "p50": effect([(a["p50"], b["p50"]) for a, b in kept]),
                                  "p99": effect([(a["p99"], b["p99"]) for a, b in kept])}}


def fmt(e: dict) -> str:
    if e["effect"] is None:
        return "n/a"
    return f"{100 * e['effect']:+.1f} % (95 % CI {100 * e['ci95'][0]:+.1f} .. {100 * e['ci95'][1]:+.1f} %, n={e['n']})"


async def bench_sampler(fleet, args) -> dict:
    base = BenchSpec(mode="host", size="small", rate=args.rate, duration_s=args.duration, warmup_s=1, connections=16)
    out = {}
    for mode in ("host", "flannel-vxlan"):
        rows = await interleaved(fleet, mode, base, {"off": {"metrics": False}, "on": {"metrics": True}}, args.pairs)
        out[mode] = {"rows": rows, **compare(rows, "off", "on")}
        cost = [r["cpu_s"].get("sampler") for r in rows["on"] if r.get("cpu_s")]
        out[mode]["sampler_cpu_s_per_run"] = (statistics.mean(c for c in cost if c is not None)
                                              if any(c is not None for c in cost) else None)
        print(f"{mode}: sampler effect on p50 {fmt(out[mode]['p50'])}; on p99 {fmt(out[mode]['p99'])}; "
              f"sampler CPU {out[mode]['sampler_cpu_s_per_run']} s per run")
    return out


async def bench_meter(fleet, args) -> dict:
    base = BenchSpec(mode="host", size="small", rate=args.rate, duration_s=args.duration, warmup_s=1, connections=16,
                     metrics=False)
    rows = await interleaved(fleet, "host", base,
                             {"off": {"hiccup": "off"}, "on": {"hiccup": "on"}, "pinned": {"hiccup": "pinned"}},
                             args.pairs)
    out = {"rows": rows, "on": compare(rows, "off", "on"), "pinned": compare(rows, "off", "pinned")}
    for name, label in (("on", "unpinned"), ("pinned", "pinned  ")):
        e, u = out[name], out[name]["undisturbed_pairs"]
        print(f"hiccup meter {label}: effect on p50 {fmt(e['p50'])}; on p99 {fmt(e['p99'])}")
        print(f"  pairs the machine left alone ({u['n']} of {u['of']}; generator off its CPU <= {100 * OFFCPU_MAX:g} % "
              f"of each run): p50 {fmt(u['p50'])}; p99 {fmt(u['p99'])}")
    return out


async def bench_calibration(fleet, args) -> dict:
    # Exactly as `invoke run-all` calibrates for studies/lab.yml: its workload (generator, default
    # connections, guards) and its calibration settings.
    lab = load_study("lab")
    template = bench_spec({**lab.workload, "mode": args.mode, "size": args.size, "rate": 1})
    kw = calibrate_kwargs(lab)
    maxima, runs = [], []
    async with mode_endpoint(fleet, args.mode) as ep:
        for i in range(args.repeat):
            t = time.monotonic()
            res = await calibrate(fleet, ep, template, **kw)
            maxima.append(res["max_rate"])
            runs.append({"max_rate": res["max_rate"], "probes": len(res["probes"]),
                         "seconds": round(time.monotonic() - t, 1), "probe_log": res["probes"]})
            print(f"  calibration {i + 1}: {res['max_rate']:.0f} req/s ({len(res['probes'])} probes, "
                  f"{runs[-1]['seconds']} s)", flush=True)
            for e in res["probes"]:  # what decided it: each probe's rate, verdict, p90 and the steal around it
                steal = "-" if e.get("steal") is None else f"{100 * e['steal']:.1f} %"
                lat = "-" if e.get("latency_us") is None else f"{e['latency_us'] / 1000:.2f} ms"
                print(f"    {e['rate']:>8.0f} {'ok ' if e['ok'] else 'bad'} p{e['percentile']:g} {lat:>9} steal "
                      f"{steal:>6}"
                      f"{' disturbed: ' + str(e.get('disturbed_by')) if e.get('disturbed') else ''}", flush=True)
    c = cv(maxima)
    print(f"{args.mode}/{args.size}: maxima {[round(m) for m in maxima]}, CV {100 * c:.2f} % (target <= 3 %)"
          if c is not None else "one calibration: no CV")
    return {"runs": runs, "cv": c}


async def main(args) -> dict:
    was_up = tb.status()["up"]
    if not was_up:
        tb.up()
    try:
        async with Fleet(load_inventory(tb.generated_inventory_path())) as fleet:
            q = await wait_quiet(fleet, {"max_cpu": 0.1, "window_s": 0.5, "max_wait_s": args.quiet_wait})
            if not q["quiet"]:
                print("warning: the machine is not quiet; these numbers are not the benchmark's", file=sys.stderr)
            fn = {"sampler": bench_sampler, "meter": bench_meter, "calibration": bench_calibration}[args.what]
            return {"quiet": q, **await fn(fleet, args)}
    finally:
        if not was_up:
            tb.down()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("sampler", "meter", "calibration"))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--rate", type=float, default=25_000)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mode", default="host")
    ap.add_argument("--size", default="small")
    ap.add_argument("--quiet-wait", type=float, default=120, help="seconds to wait for a quiet machine first")
    a = ap.parse_args()
    result = asyncio.run(main(a))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"hygiene-{a.what}.json").write_text(json.dumps(result, indent=1, default=str))
