"""Calibration: the maximum sustainable rate of a (mode, size), and the saturation throughput.

Maximum sustainable rate: the highest constant rate whose run is valid (guards.py) with p99
under a bound. Found with short runs: a ramp (x2 per step) until a run fails the test, then
bisection between the last good and the first bad rate until they are within `tolerance`.
The search is a pure function (`next_rate`) of the probes so far.

Saturation throughput: a closed-loop run (one request in flight per connection, no rate):
what the server answers when the client sends as fast as it is answered. It is a second
figure, not a latency-bounded one.

Stored per (inventory, mode, size) as JSON under data/calibration/, so a study can express
load as a fraction of the reference mode's maximum.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..config import DATA
from ..results import atomic_write_text
from ..errors import CnibenchError
from .bench import BenchSession, BenchSpec

CALIBRATION = DATA / "calibration"


def next_rate(probes: list[tuple[float, bool]], start: float = 2000, factor: float = 2.0, max_rate: float = 400_000,
              min_rate: float = 100, tolerance: float = 0.05, max_probes: int = 14) -> float | None:
    """The next rate to try, or None when the search is over (pure)."""
    if len(probes) >= max_probes:
        return None
    if not probes:
        return float(start)
    good = [r for r, ok in probes if ok]
    lo = max(good) if good else None
    above = [r for r, ok in probes if not ok and (lo is None or r > lo)]
    hi = min(above) if above else None
    if hi is None:  # everything so far passed: keep ramping up
        return None if lo >= max_rate else float(min(lo * factor, max_rate))
    if lo is None:  # even the first rate failed: ramp down
        nxt = hi / factor
        return None if nxt < min_rate else float(round(nxt))
    if (hi - lo) / lo <= tolerance:
        return None
    return float(round((lo + hi) / 2))


def probe_ok(rec: dict, p99_bound_ms: float) -> bool:
    p99 = ((rec.get("latency") or {}).get("percentiles") or {}).get("99")
    return rec["status"] == "ok" and p99 is not None and p99 <= p99_bound_ms * 1000


async def calibrate(fleet, endpoint, spec_template: BenchSpec, p99_bound_ms: float = 10.0, *, start_rate: float = 2000,
                    max_rate: float = 400_000, tolerance: float = 0.05, run_s: float = 3.0, warmup_s: float = 1.0,
                    progress: Callable[[dict], None] | None = None) -> dict:
    """Ramp, bisect, then one closed-loop run. About 1-2 minutes on the testbed."""
    probes: list[tuple[float, bool]] = []
    log: list[dict] = []
    base = replace(spec_template, duration_s=run_s, warmup_s=warmup_s, metrics=False, closed_loop=False)
    async with BenchSession(fleet, endpoint) as session:  # one nginx for all the probes
        return await _search(session, base, probes, log, p99_bound_ms, start_rate, max_rate, tolerance, progress)


class CalibrationFailed(CnibenchError):
    """No probed rate was valid: there is no maximum rate to express a study's load against."""


def no_valid_rate_message(base: BenchSpec, log: list[dict], p99_bound_ms: float) -> str:
    """Why a calibration found nothing: the probes' own reasons (pure)."""
    tried = "; ".join(
        f"{e['rate']:g} req/s: {e['reason'] or e['status']}" + ("" if e["p99_us"] is None else f", p99 {e['p99_us'] / 1000:.2f} ms")
        for e in log[:4]) or "no probe ran"
    return (f"calibration of {base.mode}/{base.size} found no valid rate with p99 <= {p99_bound_ms:g} ms ({tried}). "
            "Check the mode (invoke mode.verify) and the hosts; or lower calibration start_rate, or raise p99_bound_ms.")


async def _search(session, base, probes, log, p99_bound_ms, start_rate, max_rate, tolerance, progress) -> dict:
    while (rate := next_rate(probes, start_rate, 2.0, max_rate, tolerance=tolerance)) is not None:
        rec = await session.run(replace(base, rate=rate), run_id=f"calibration/{base.mode}/{base.size}/{int(rate)}/rep1")
        ok = probe_ok(rec, p99_bound_ms)
        probes.append((rate, ok))
        entry = {"rate": rate, "ok": ok, "status": rec["status"], "reason": rec["reason"], "achieved": rec["achieved_rate"],
                 "p99_us": ((rec["latency"] or {}).get("percentiles") or {}).get("99"), "generator_cpu": rec["generator_cpu"]}
        log.append(entry)
        if progress:
            progress(entry)
        if rec["status"] == "failed" and not any(ok for _, ok in probes):
            break  # a broken setup, not a rate: stop here (the reason is in the log)
    good = [r for r, ok in probes if ok]
    if not good:  # fail here, clearly, not later as "no calibrated maximum rate"
        raise CalibrationFailed(no_valid_rate_message(base, log, p99_bound_ms))
    sat = await session.run(replace(base, closed_loop=True, pipeline=1, generator="h2load", connections=base.n_connections), run_id=f"calibration/{base.mode}/{base.size}/saturation/rep1")
    result = {
        "mode": base.mode, "size": base.size,
        "max_rate": max(good),
        "p99_bound_ms": p99_bound_ms,
        "saturation_rate": sat["achieved_rate"] if sat["status"] != "failed" else None,
        "saturation_generator_cpu": sat["generator_cpu"],
        "saturation_p99_us": ((sat["latency"] or {}).get("percentiles") or {}).get("99"),
        "probes": log,
        "spec": {k: v for k, v in asdict(base).items() if k not in ("rate", "guard")},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if progress:
        progress({"saturation": result["saturation_rate"]})
    return result


def calibration_path(inventory_name: str, mode: str, size: str) -> Path:
    return CALIBRATION / inventory_name / mode / f"{size}.json"


def save_calibration(inventory_name: str, mode: str, size: str, result: dict) -> Path:
    if not float(result.get("max_rate") or 0) > 0:  # a useless calibration is never saved
        raise CalibrationFailed(f"calibration of {mode}/{size} has no maximum rate; not saved")
    path = calibration_path(inventory_name, mode, size)
    atomic_write_text(path, json.dumps({**result, "inventory": inventory_name}, indent=2, sort_keys=True))
    return path


def load_calibration(inventory_name: str, mode: str, size: str) -> dict | None:
    try:
        return json.loads(calibration_path(inventory_name, mode, size).read_text())
    except (OSError, ValueError):
        return None
