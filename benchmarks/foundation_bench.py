"""Testbed up/down time (median of 5) and SSH command round trip (median of 100).

Run as root:  flock /run/cnibench-dev.lock python3 benchmarks/foundation_bench.py
Writes benchmarks/results/foundation.json and prints a table.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from cnibench.infra import testbed
from cnibench.infra.config import load_inventory
from cnibench.infra.hosts import Fleet

RESULTS = Path(__file__).resolve().parent / "results"


async def ssh_round_trips(n: int = 100) -> dict:
    async with Fleet(load_inventory(testbed.generated_inventory_path())) as fleet:
        out = {}
        for host in fleet:
            await host.run(["true"])  # warm the connection
            times = []
            for _ in range(n):
                t = time.perf_counter()
                await host.run(["true"])
                times.append(time.perf_counter() - t)
            out[host.name] = times
        t = time.perf_counter()
        await host.connect()
        fresh = Fleet(fleet.inventory)
        t = time.perf_counter()
        await fresh.connect()
        connect = time.perf_counter() - t
        await fresh.close()
        return {"per_host": out, "connect_both_s": connect}


def main() -> None:
    testbed.down()
    ups, downs = [], []
    for _ in range(5):
        t = time.perf_counter()
        testbed.up()
        ups.append(time.perf_counter() - t)
        t = time.perf_counter()
        testbed.down()
        downs.append(time.perf_counter() - t)
    testbed.up()
    try:
        rtt = asyncio.run(ssh_round_trips())
    finally:
        testbed.down()
    res = {
        "testbed_up_s": {"median": statistics.median(ups), "all": ups},
        "testbed_down_s": {"median": statistics.median(downs), "all": downs},
        "ssh_rtt_ms": {h: {"median": statistics.median(v) * 1e3, "p90": sorted(v)[89] * 1e3}
                       for h, v in rtt["per_host"].items()},
        "ssh_connect_both_hosts_s": rtt["connect_both_s"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "foundation.json").write_text(json.dumps(res, indent=2))
    print(f"testbed up    median of 5: {res['testbed_up_s']['median'] * 1e3:7.1f} ms")
    print(f"testbed down  median of 5: {res['testbed_down_s']['median'] * 1e3:7.1f} ms")
    for h, v in res["ssh_rtt_ms"].items():
        print(f"ssh 'true' on {h:<7} median of 100: {v['median']:6.2f} ms (p90 {v['p90']:.2f} ms)")
    print(f"ssh connect to both hosts: {res['ssh_connect_both_hosts_s'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
