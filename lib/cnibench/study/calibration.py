"""Calibration glue of a study run: the reference mode's (or every mode's) maximum sustainable
rate, from the study's manifest, a saved calibration that passes its check probe, or a new
calibration (workload/calibrate.py does the measuring)."""

from __future__ import annotations

import json
from typing import Mapping

from .progress import Progress
from .runner import mode_settings
from ..workload.specfields import bench_spec
from .spec import Study


async def calibrated_max_rates(fleet, study: Study, inventory_name: str, manifest: dict | None,
                               progress: Progress | None, out=print) -> dict | None:
    """{"reference", "max_rates": {size: rps}, "details", ["modes": {mode: {size: rps}}]}; None
    for absolute-rate studies that do not calibrate every mode.

    A study keeps the calibration it started with (in its manifest) so its run ids stay the same
    across resumes; otherwise a saved calibration of the inventory is used after one check probe
    at its maximum passes (workload/calibrate.check_probe), else the mode is calibrated. With
    `calibration: {modes: all}` (a sweep study) every mode is, so each has a measured maximum.
    """
    if manifest and manifest.get("calibration"):
        return manifest["calibration"]
    every = study.calibration.get("modes") == "all"
    if not study.uses_fractions and not every:
        return None
    found = await _calibrate_mode(fleet, study, inventory_name, study.reference, progress, out)
    result = {
        "reference": study.reference,
        "max_rates": {s: float(found[s]["max_rate"]) for s in study.sizes},
        "details": {s: _jsonable(found[s]) for s in study.sizes},
    }
    if every:
        result["modes"] = {study.reference: dict(result["max_rates"])}
        for mode in study.modes:
            if mode != study.reference:
                f = await _calibrate_mode(fleet, study, inventory_name, mode, progress, out)
                result["modes"][mode] = {s: float(f[s]["max_rate"]) for s in study.sizes}
                result.setdefault("mode_details", {})[mode] = {s: _jsonable(f[s]) for s in study.sizes}
    return result


def calibrate_kwargs(study: Study) -> dict:
    """The study's calibration settings as calibrate() keywords ('modes' is the runner's)."""
    return {k: v for k, v in study.calibration.items() if k != "modes"}


async def _calibrate_mode(fleet, study: Study, inventory_name: str, mode: str, progress, out) -> dict[str, dict]:
    """{size: calibration} of one mode: saved ones that pass their check probe, the rest calibrated."""
    calibrate, load_calibration, save_calibration = calibration_api()
    from ..workload.calibrate import check_probe

    saved = {}
    for size in study.sizes:
        cal = load_calibration(inventory_name, mode, size)
        if cal and cal.get("max_rate"):
            saved[size] = cal
    found: dict[str, dict] = {}
    from ..modes import mode_down, mode_up

    kw = calibrate_kwargs(study)
    settings = mode_settings(study, mode)
    if progress:
        progress.status(f"calibration of {mode}")
    endpoint = await mode_up(fleet, mode, settings)
    try:
        for size in study.sizes:
            template = bench_spec({**study.workload, "mode": mode, "size": size, "rate": 1})
            if size in saved:
                chk = await check_probe(fleet, endpoint, template, float(saved[size]["max_rate"]), **kw)
                if chk["ok"]:
                    found[size] = {"source": "saved", **saved[size], "check": chk}
                    continue
                out(f"the saved maximum of {mode}/{size} ({saved[size]['max_rate']:.0f} req/s) failed its check probe: "
                    "calibrating again")
            out(f"calibrating {mode}/{size}: probes of {kw.get('run_s', 3):g} s, bisection to 2 % (1-2 minutes)")
            result = await calibrate(fleet, endpoint, template, **kw, progress=_probe_printer(out, mode, size))
            save_calibration(inventory_name, mode, size, result)
            out(f"calibrated {mode}/{size}: maximum sustainable rate {result['max_rate']:.0f} req/s "
                f"({len(result['probes'])} probes)")
            found[size] = {"source": "calibrated", **result}
    finally:
        await mode_down(fleet, mode, settings)
    return found


def _probe_printer(out, mode: str, size: str):
    """One line per calibration probe, so a study's first minutes are not silent."""
    def show(e: dict) -> None:
        if "saturation" in e:
            out(f"  {mode}/{size}: closed-loop saturation {e['saturation'] or 0:.0f} req/s")
            return
        lat = "-" if e.get("latency_us") is None else f"{e['latency_us'] / 1000:.2f} ms"
        if e.get("disturbed"):
            verdict = f"disturbed ({e['disturbed_by']}), again" if e.get("disturbed_by") else "disturbed, again"
        else:
            verdict = "ok" if e["ok"] else "too much"
        out(f"  {mode}/{size}: {e['rate']:.0f} req/s: p{e.get('percentile', 90):g} {lat}: {verdict}")
    return show


def calibration_api():
    """(calibrate, load_calibration, save_calibration) from workload/calibrate.py."""
    from ..workload import calibrate as mod
    return mod.calibrate, mod.load_calibration, mod.save_calibration


def _jsonable(d: Mapping) -> dict:
    return json.loads(json.dumps(d, default=str))
