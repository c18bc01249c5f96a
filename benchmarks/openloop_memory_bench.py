"""cnib-openloop memory and processing benchmark on the local testbed, host mode (needs root; brings
the testbed up and down; ~80 s a run).

    flock /run/cnibench-dev.lock python3 benchmarks/openloop_memory_bench.py [--rate 40000] [--duration 60] \
        [--paths histograms]

One run through BenchSession with the record from the generator's histograms (cnib-openloop 6,
BenchSpec.openloop_histograms; the sampled log off), and prints (issue 27's acceptance 2):
  - the generator's peak resident memory (VmHWM, as it reports it at exit);
  - processing from the generator's exit to the record: reading its files from the client,
    parsing them and filling the record (the run's own read, then the parse and fill repeated
    3 times on the same files: the median);
  - the record's size (its JSON, as written).
--paths log,histograms,sampled: the same run on the per-request log path first, for comparison, and
last with the default sampled log (defaults.sampled_log_every). Memory and processing
do not depend on the machine's noise (steal), so any run counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from cnibench.infra import testbed as tb
from cnibench.infra.config import load_inventory
from cnibench.infra.hosts import Fleet
from cnibench.workload import session as session_mod
from cnibench.workload.bench import BenchSpec
from cnibench.workload.cli import mode_endpoint
from cnibench.workload.generators.openloop import GENERATOR
from cnibench.workload.session import BenchSession


class Timed:
    """Times the session's read of the generator's files and its parse of them (bench-only)."""

    def __init__(self):
        self.read_s, self.files, self.args = 0.0, {}, None
        self._read, self._parse = BenchSession._read_outputs, GENERATOR.parse

    def install(self):
        timed = self

        async def read(self_, run):
            t = time.perf_counter()
            out = await timed._read(self_, run)
            timed.read_s, timed.files = time.perf_counter() - t, out
            return out

        def parse(spec, stdout, stderr, status, files):
            timed.args = (spec, stdout, stderr, status, files)
            return timed._parse(spec, stdout, stderr, status, files)

        BenchSession._read_outputs = read
        GENERATOR.parse = parse

    def processing_s(self, spec: BenchSpec, rec: dict) -> float:
        """The run's read plus parse and fill of a record, the median of 3."""
        times = []
        for _ in range(3):
            t = time.perf_counter()
            result = self._parse(*self.args)
            copy = {**rec, "settings": dict(rec["settings"])}
            session_mod._fill(copy, spec, result)
            json.dumps(copy)
            times.append(time.perf_counter() - t)
        return self.read_s + statistics.median(times)


async def one(s: BenchSession, timed: Timed, spec: BenchSpec, tag: str) -> dict:
    rec = await s.run(spec, run_id=f"bench/host/small/{int(spec.rate)}/{tag}")
    info = rec["settings"].get("generator_info") or {}
    out = {"path": tag, "status": rec["status"], "reason": rec["reason"],
           "peak_rss_mb": round((info.get("peak_rss_kb") or -1024) / 1024, 1),
           "processing_s": round(timed.processing_s(spec, rec), 3), "read_s": round(timed.read_s, 3),
           "files_bytes": {k: len(v) for k, v in timed.files.items()}, "record_bytes": len(json.dumps(rec)),
           "record_parts_bytes": {k: len(json.dumps(v)) for k, v in rec.items() if len(json.dumps(v)) > 1000}}
    print(json.dumps(out), flush=True)
    return out


# The record's sources: the per-request log (before issue 27), the histograms with the sampled log
# off (acceptance 2's figure), the histograms with the default sampled log (at most 100,000 kept).
PATHS = {"log": {"openloop_histograms": False}, "histograms": {"openloop_log_every": 0}, "sampled": {}}


async def main(rate: float, duration: float, paths: list[str]) -> list[dict]:
    inv = load_inventory(tb.generated_inventory_path())
    timed = Timed()
    timed.install()
    out = []
    async with Fleet(inv) as fleet, mode_endpoint(fleet, "host") as ep, BenchSession(fleet, ep) as s:
        for path in paths:
            spec = BenchSpec("host", "small", rate, duration, 1.0, **PATHS[path])
            out.append(await one(s, timed, spec, path))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=40000)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--paths", default="histograms", help="comma-separated, run in that order: log, histograms "
                    "(sampled log off), sampled (the default sampled log)")
    a = ap.parse_args()
    tb.down()  # the testbed up for this benchmark only, down at the end (as the tests' fixture)
    try:
        tb.up()
        asyncio.run(main(a.rate, a.duration, [p for p in a.paths.split(",") if p in PATHS]))
    finally:
        tb.down()
