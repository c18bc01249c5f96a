"""The hiccup meter: a tiny C program (hiccup.c) on each host that sleeps 1 ms at a time and
records its oversleep, as jHiccup does. Started before the warm-up, stopped after the window;
its summary goes into the run record and the hiccup guard (guards.py) judges it.

Where it runs: unpinned by default (`BenchSpec.hiccup = "on"`): the scheduler puts it on an idle
core, where it sees what stalls the whole machine (a VM descheduled by its host: the 50-160 ms
stalls seen on the testbed) at no cost to the pinned cores but one wake-up per ms wherever it
lands. `"pinned"`: one meter per pinned core, pinned to it, sees stalls of exactly the cores
under test (a CPU hog there included) but takes its wake-ups from them; `"off"`: no meter.
benchmarks/hygiene_bench.py measures what each costs the p50.
"""

from __future__ import annotations

import asyncio

from ...infra.cbuild import CSource, ensure_built

SOURCE = CSource(__package__, "hiccup.c", "hiccup")
SOURCE_PATH = SOURCE.file_path()
INTERVAL_US = 1000
EVENT_US = 500  # oversleeps from this size up are listed with their time
EVENTS_KEPT = 50  # the largest events kept in the record (a record stays under 64 KB)


def source() -> bytes:
    return SOURCE.read()


def path() -> str:
    return SOURCE.path()


def parse(text: str) -> dict | None:
    """The meter's summary as {"samples", "span_s", "max_us", "over": {threshold: [count, sum_us]},
    "events": [[epoch_us, us], ...] (largest EVENTS_KEPT, in time order)}; None when there is none."""
    lines = (text or "").splitlines()
    if not lines or lines[0].strip() != "hiccup 1" or "end" not in (ln.strip() for ln in lines):
        return None
    out: dict = {"over": {}, "events": []}
    try:
        for line in lines[1:]:
            parts = line.split()
            if not parts:
                continue
            key = parts[0]
            if key == "samples":
                out["samples"] = int(parts[1])
            elif key == "span_us":
                out["span_s"] = round(int(parts[1]) / 1e6, 3)
            elif key == "max_us":
                out["max_us"] = int(parts[1])
            elif key == "interval_us":
                out["interval_us"] = int(parts[1])
            elif key == "over":
                out["over"][parts[1]] = [int(parts[2]), int(parts[3])]
            elif key == "event":
                out["events"].append([int(parts[1]), int(parts[2])])
    except (IndexError, ValueError):
        return None
    if "max_us" not in out:
        return None
    out["events"] = sorted(sorted(out["events"], key=lambda e: -e[1])[:EVENTS_KEPT])
    return out


def stall_total_us(summary: dict, threshold_us: int) -> int:
    """Sum of the oversleeps of at least `threshold_us` (the nearest recorded threshold below it
    counts only events of that size, from the event list when thresholds differ)."""
    over = (summary or {}).get("over") or {}
    if str(threshold_us) in over:
        return int(over[str(threshold_us)][1])
    return sum(e[1] for e in (summary or {}).get("events") or [] if e[1] >= threshold_us)


def meter_argv(binary: str, cpu: int | None) -> list[str]:
    argv = [binary, str(INTERVAL_US), str(EVENT_US)]
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


class Meters:
    """The hiccup meters of one run: start on each host, stop all, parse (never raises on stop)."""

    def __init__(self):
        self.running: list[tuple[str, int | None, object]] = []  # (host name, cpu, Background)
        self.notes: list[str] = []

    async def start(self, host, cpus: list[int | None]) -> list[int]:
        """Start a meter per entry of `cpus` (None: unpinned) on `host`; their pids (for the
        sampler's accounting). A host without a compiler gets none and a note, not an error."""
        try:
            binary = await ensure_built(host, "hiccup", source())
        except Exception as exc:  # noqa: BLE001 - the meter is a guard, not the measurement
            self.notes.append(f"hiccup meter not started on {host.name}: {exc}")
            return []
        pids = []
        for cpu in cpus:
            bg = await host.start(meter_argv(binary, cpu))
            self.running.append((host.name, cpu, bg))
            pids.append(bg.pid)
        return pids

    async def stop(self) -> dict[str, list[dict]]:
        """{host: [summary with "cpu", ...]} of every meter started."""
        items, self.running = self.running, []
        results = await asyncio.gather(*(bg.stop(grace=3) for _, _, bg in items), return_exceptions=True)
        out: dict[str, list[dict]] = {}
        for (name, cpu, _), res in zip(items, results):
            if isinstance(res, asyncio.CancelledError):
                raise res
            summary = None if isinstance(res, BaseException) else parse(res.stdout)
            if summary is None:
                self.notes.append(f"hiccup meter on {name} gave no summary "
                                  f"({res if isinstance(res, BaseException) else res.exit_status})")
                continue
            out.setdefault(name, []).append({"cpu": cpu, **summary})
        return out
