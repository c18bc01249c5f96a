"""Setup cost and HTTP round trip per network mode, on the local testbed (root).

Per mode: setup and teardown time (median of 5 up/down cycles), commands and kernel objects,
and the HTTP round trip client container -> server (median of 1,000 sequential requests on
one keep-alive connection, through the verify server). Prints a table; writes JSON to
benchmarks/results/modes-<time>.json (git-ignored).

    flock /run/cnibench-dev.lock python3 benchmarks/modes_bench.py [--reps 5] [--requests 1000] [mode ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from cnibench.infra import testbed as tb
from cnibench.infra.config import load_inventory
from cnibench.errors import UnsupportedFeature
from cnibench.infra.hosts import Fleet
from cnibench.modes import MODES, mode_down, mode_up
from cnibench.modes.engine.apply import down
from cnibench.modes.engine.state import current_state
from cnibench.modes.engine.verify import requests, start_server

RESULTS = Path(__file__).resolve().parent / "results"


async def bench_mode(fleet, name: str, reps: int, n: int) -> dict:
    setups, teardowns, cost = [], [], {}
    for _ in range(reps):
        t = time.monotonic()
        endpoint = await mode_up(fleet, name)
        setups.append(time.monotonic() - t)
        state = await current_state(fleet)
        cost = {k: state[k] for k in ("commands", "kernel_objects")}
        t = time.monotonic()
        await down(fleet, name)
        teardowns.append(time.monotonic() - t)
    endpoint = await mode_up(fleet, name)
    try:
        server = await start_server(fleet, endpoint)
        try:
            res = await requests(fleet, endpoint, n, wait=5.0)
        finally:
            await server.stop(grace=2)
    finally:
        await mode_down(fleet, name)
    if res.get("ok") != n:
        raise RuntimeError(f"{name}: {res.get('ok')}/{n} requests succeeded: {res.get('error')}")
    us = sorted(res["us"])
    return {"mode": name, **cost, "setup_s_median": statistics.median(setups),
            "teardown_s_median": statistics.median(teardowns), "setup_s": setups, "teardown_s": teardowns,
            "rtt_us_median": statistics.median(us), "rtt_us_p99": us[int(0.99 * (len(us) - 1))], "requests": n}


async def main(modes, reps, n) -> list[dict]:
    rows = []
    async with Fleet(load_inventory(tb.generated_inventory_path())) as fleet:
        for name in modes:
            try:
                rows.append(await bench_mode(fleet, name, reps, n))
            except UnsupportedFeature as exc:
                rows.append({"mode": name, "unsupported": str(exc)})
    return rows


def table(rows) -> str:
    lines = [f"{'mode':<16} {'cmds':>5} {'objs':>5} {'setup ms':>9} {'down ms':>8} {'RTT us p50':>11} {'p99':>7}"]
    for r in rows:
        if "unsupported" in r:
            lines.append(f"{r['mode']:<16} unsupported on this kernel")
            continue
        lines.append(f"{r['mode']:<16} {r['commands']:>5} {r['kernel_objects']:>5} {r['setup_s_median'] * 1000:>9.0f} "
                     f"{r['teardown_s_median'] * 1000:>8.0f} {r['rtt_us_median']:>11.0f} {r['rtt_us_p99']:>7.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modes", nargs="*", default=list(MODES))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    was_up = tb.status()["up"]
    tb.up()
    try:
        rows = asyncio.run(main(args.modes, args.reps, args.requests))
    finally:
        if not was_up:
            tb.down()
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"modes-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"reps": args.reps, "requests": args.requests, "rows": rows}, indent=1))
    print(f"wrote {out}")
