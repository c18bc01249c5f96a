"""Workload benchmark on the local testbed (needs root; takes ~15 minutes).

    flock /run/cnibench-dev.lock python3 benchmarks/workload_bench.py [--quick]

Measures and prints:
  1. the calibrated maximum sustainable rate (valid, p99 <= bound) and the closed-loop
     saturation throughput, per mode (host, flannel-vxlan) and size (small, large);
  2. h2load's closed-loop maximum on one core (deep pipelining; cnib-openloop's capacity
     against it is benchmarks/openloop_bench.py);
  3. p50 / p99 / p99.9 at 30, 40 and 50 % of the host-mode maximum, for host and flannel-vxlan;
  4. the metrics sampler's cost: p99 with and without it at the same rate (alternating runs).
Results also go to benchmarks/results/workload.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace

from cnibench.infra import testbed as tb
from cnibench.infra.config import ROOT, load_inventory
from cnibench.infra.hosts import Fleet
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import run_bench
from cnibench.workload.calibrate import calibrate, save_calibration
from cnibench.workload.cli import mode_endpoint

MODES = ("host", "flannel-vxlan")
SIZES = ("small", "large")
FRACTIONS = (0.3, 0.4, 0.5)
OUT = ROOT / "benchmarks" / "results" / "workload.json"


def pct(rec, key):
    p = (rec.get("latency") or {}).get("percentiles") or {}
    return None if p.get(key) is None else p[key] / 1000.0


def row(rec):
    return {"rate": rec["target_rate"], "status": rec["status"], "reason": rec["reason"],
            "achieved": rec["achieved_rate"], "p50_ms": pct(rec, "50"), "p99_ms": pct(rec, "99"),
            "p99.9_ms": pct(rec, "99.9"), "generator_cpu": rec["generator_cpu"],
            "send_lag_p999_us": ((rec["latency"].get("send_lag") or {}).get("percentiles") or {}).get("99.9")}


async def once(fleet, ep, spec, tag):
    rec = await run_bench(fleet, ep, spec, run_id=f"bench/{spec.mode}/{spec.size}/{int(spec.rate)}/{tag}")
    r = row(rec)
    print(f"    {spec.mode:14s} {spec.size:5s} {spec.rate:8.0f} req/s {tag:12s} {r['status']:7s} p50 {r['p50_ms']} p99 "
          f"{r['p99_ms']} "
          f"p99.9 {r['p99.9_ms']} ms  gen CPU {r['generator_cpu']}  {r['reason']}", flush=True)
    return r


async def main(quick: bool) -> dict:
    inv = load_inventory(tb.generated_inventory_path())
    base = BenchSpec(mode="host", size="small", rate=1000, duration_s=5 if quick else 10, warmup_s=2)
    out: dict = {"calibration": {}, "generator_max": None, "fractions": {}, "sampler_cost": {}}
    async with Fleet(inv) as fleet:
        for mode in MODES:
            async with mode_endpoint(fleet, mode) as ep:
                for size in SIZES:
                    print(f"calibrating {mode}/{size}", flush=True)
                    res = await calibrate(fleet, ep, replace(base, mode=mode, size=size), 10.0)
                    save_calibration(inv.name, mode, size, res)
                    out["calibration"][f"{mode}/{size}"] = {k: res[k]
                                                            for k in ("max_rate", "saturation_rate",
                                                                      "saturation_generator_cpu")}
                    print(f"  max {res['max_rate']:.0f} req/s, saturation {res['saturation_rate']} req/s", flush=True)
                if mode == "host":
                    print("h2load's maximum (closed loop, 16 connections x 32 in flight, one core)", flush=True)
                    rec = await run_bench(fleet, ep,
                                          replace(base, closed_loop=True, pipeline=32, duration_s=5, generator="h2load",
                                                  connections=16), run_id="bench/host/small/genmax/rep1")
                    out["generator_max"] = {"achieved": rec["achieved_rate"], "generator_cpu": rec["generator_cpu"]}
                    print(f"  {rec['achieved_rate']:.0f} req/s at generator CPU {rec['generator_cpu']}", flush=True)
        for mode in MODES:
            async with mode_endpoint(fleet, mode) as ep:
                for size in SIZES:
                    host_max = out["calibration"][f"host/{size}"]["max_rate"]
                    for f in FRACTIONS:
                        out["fractions"][f"{mode}/{size}/{f:g}"] = await once(fleet, ep,
                                                                              replace(base, mode=mode, size=size,
                                                                                      rate=round(f * host_max)),
                                                                              f"{int(f * 100)}%")
                if mode == "host":
                    rate = round(0.4 * out["calibration"]["host/small"]["max_rate"])
                    for rep in range(2):
                        for metrics in (True, False):
                            out["sampler_cost"].setdefault("with" if metrics else "without", []).append(
                                await once(fleet, ep, replace(base, rate=rate, metrics=metrics),
                                           f"metrics={'on' if metrics else 'off'}"))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s windows instead of 10 s")
    args = ap.parse_args()
    tb.down()
    tb.up()
    try:
        result = asyncio.run(main(args.quick))
    finally:
        tb.down()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    print()
