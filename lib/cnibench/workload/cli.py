"""What `invoke bench` and `invoke calibrate` do (the tasks only parse options)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from ..infra import config
from ..infra.hosts import Fleet
from ..infra.config import RAW
from ..results import record_path, run_id, write_record
from .bench import BenchSpec, validate_spec
from .session import run_bench, summary
from .calibrate import calibrate, save_calibration


@asynccontextmanager
async def mode_endpoint(fleet, mode: str):
    """The endpoint of `mode`: the one already up, or bring it up now and down afterwards."""
    from ..modes import current_endpoint, mode_down, mode_up

    ep = await current_endpoint(fleet)
    if ep is not None and ep.mode == mode:
        yield ep
        return
    ep = await mode_up(fleet, mode)
    try:
        yield ep
    finally:
        await mode_down(fleet, mode)


def next_repetition(study: str, mode: str, size: str, rate: float) -> int:
    rep = 1
    while record_path(RAW, run_id(study, mode, size, rate, rep)).exists():
        rep += 1
    return rep


async def bench(spec: BenchSpec, inventory=None, study: str = "adhoc") -> tuple[dict, str]:
    validate_spec(spec)  # bad input: one message before any host is touched (not after mode up)
    inv = config.load_inventory(inventory)
    async with Fleet(inv) as fleet:
        async with mode_endpoint(fleet, spec.mode) as ep:
            rep = next_repetition(study, spec.mode, spec.size, spec.rate)
            rec = await run_bench(fleet, ep, spec, run_id=run_id(study, spec.mode, spec.size, spec.rate, rep),
                                  study=study, repetition=rep)
    return rec, str(write_record(RAW, rec))  # failed and invalid runs are kept too


async def calibrate_cli(spec: BenchSpec, bound_ms: float, percentile: float, inventory=None,
                        progress=None) -> tuple[dict, str]:
    validate_spec(spec)
    inv = config.load_inventory(inventory)
    async with Fleet(inv) as fleet:
        async with mode_endpoint(fleet, spec.mode) as ep:
            result = await calibrate(fleet, ep, spec, bound_ms, percentile=percentile, progress=progress)
    return result, str(save_calibration(inv.name, spec.mode, spec.size, result))


__all__ = ["bench", "calibrate_cli", "mode_endpoint", "summary"]
