"""Load generators behind one interface (see base.py)."""

from __future__ import annotations

from .base import Generator, LoadResult, LoadSpec, accounted, parse_accounting, pipeline_depth
from .h2load import GENERATOR as H2LOAD
from .tcpkali import GENERATOR as TCPKALI

GENERATORS: dict[str, Generator] = {g.name: g for g in (H2LOAD, TCPKALI)}


def get_generator(name: str) -> Generator:
    return GENERATORS[name]


async def available(host) -> dict[str, bool]:
    """Which generators are installed on a host (one `command -v` per generator)."""
    out = {}
    for name, gen in GENERATORS.items():
        r = await host.run(["sh", "-c", 'command -v "$1"', "cnib", gen.binary], check=False, timeout=15)
        out[name] = r.exit_status == 0
    return out


__all__ = ["GENERATORS", "Generator", "LoadResult", "LoadSpec", "accounted", "available", "get_generator", "parse_accounting", "pipeline_depth"]
