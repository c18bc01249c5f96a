"""What `invoke bench` and `invoke calibrate` do (the tasks only parse options)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from ..errors import CnibenchError
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


def bench_help(mode_help: str) -> dict[str, str]:
    """The help text of `invoke bench`'s options (and calibrate's share of them)."""
    return {
        "mode": mode_help + "; brought up if needed and down afterwards",
        "size": "small (350 B on the wire) or large (4096 B body)",
        "rate": "constant request rate, requests/s over all connections",
        "duration": "measurement window, seconds",
        "warmup": "load before the window, seconds (default 2)",
        "connections": "connections (default: one per 100 req/s, at least 10: max(10, ceil(rate/100)))",
        "generator": "openloop (default: the project's open-loop generator), h2load (cross-check, closed loop) "
                     "or tcpkali",
        "threads": "generator threads (default 1)",
        "pipeline": "requests in flight per connection (default 0: the generator's own; openloop: a second's "
                    "worth, >= 32)",
        "arrival": "openloop: uniform (default, constant rate) or poisson",
        "no_pin": "do not pin nginx and the generator to CPUs",
        "no_metrics": "no system-metrics sampler",
        "inventory": "inventory file (default: the local testbed)",
    }


def bench_spec(mode, size, rate, duration, warmup, connections, generator, threads, pipeline, no_pin, no_metrics,
               arrival="uniform") -> BenchSpec:
    """The spec of the command line's options, validated (bounds included) before any host is
    touched. connections None: the default for each run's rate (workload/defaults.py)."""
    try:
        float(rate), float(duration), float(warmup), int(threads), int(pipeline)
        connections = None if connections in (None, "", 0, "0") else int(connections)
    except ValueError as exc:
        raise CnibenchError(f"bench: a number was expected ({exc}). Example: --rate 5000 --duration 10") from None
    spec = BenchSpec(mode=mode, size=size, rate=float(rate), duration_s=float(duration), warmup_s=float(warmup),
                     connections=connections, generator=generator, threads=int(threads), pipeline=int(pipeline) or None,
                     arrival=arrival, pin=not no_pin, metrics=not no_metrics)
    validate_spec(spec)
    return spec


def calibration_line(pct: str):
    """A progress printer for `invoke calibrate`: one line per probe, then the saturation."""
    def line(e: dict) -> None:
        if "saturation" in e:
            print(f"  saturation {e['saturation']:.0f} req/s")
        else:
            print(f"  {e['rate']:.0f} req/s: {'ok' if e['ok'] else 'too much'} ({pct} {e['latency_us']} us; "
                  f"{e['reason'] or e['status']})")
    return line
