"""Load generators behind one interface (see base.py)."""

from __future__ import annotations

from ...catalog import PREFIX
from .base import Generator, LoadResult, LoadSpec, accounted, parse_accounting
from .h2load import GENERATOR as H2LOAD
from .openloop import GENERATOR as OPENLOOP
from .tcpkali import GENERATOR as TCPKALI

GENERATORS: dict[str, Generator] = {g.name: g for g in (OPENLOOP, H2LOAD, TCPKALI)}
DEFAULT_GENERATOR = OPENLOOP.name


def get_generator(name: str) -> Generator:
    return GENERATORS[name]


async def available(host) -> dict[str, bool]:
    """Which generators a host can run: installed ones (`command -v`), and ours when the host
    has a C compiler to build it (or it is built already)."""
    from ...infra.cbuild import COMPILER

    out = {}
    for name, gen in GENERATORS.items():
        binary = COMPILER if getattr(gen, "prepare", None) else gen.binary
        r = await host.run(["sh", "-c", 'command -v "$1"', f"{PREFIX}", binary], check=False, timeout=15)
        out[name] = r.exit_status == 0
    return out


__all__ = ["DEFAULT_GENERATOR", "GENERATORS", "Generator", "LoadResult", "LoadSpec", "accounted", "available", "get_generator", "parse_accounting"]
