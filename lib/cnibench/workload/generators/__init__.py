"""Load generators behind one interface (see base.py), in the project's one registry style
(modes/registry.py's Registry: registered once at import, looked up by name).

An unknown name raises KeyError naming the known ones: the workload's validation
(bench.validate_spec) refuses an unknown generator first, so reaching it is a bug.
"""

from __future__ import annotations

from ...catalog import PREFIX
from ...infra.cbuild import COMPILER
from ...modes.registry import Registry
from .base import Generator, LoadResult, LoadSpec, accounted, parse_accounting
from .h2load import GENERATOR as H2LOAD
from .openloop import GENERATOR as OPENLOOP
from .tcpkali import GENERATOR as TCPKALI

GENERATORS: Registry[Generator] = Registry("load generator", KeyError)
for _gen in (OPENLOOP, H2LOAD, TCPKALI):
    GENERATORS.register(_gen)
DEFAULT_GENERATOR = OPENLOOP.name


def get_generator(name: str) -> Generator:
    return GENERATORS.get(name)


async def available(host) -> dict[str, bool]:
    """Which generators a host can run: installed ones (`command -v`), and ours when the host
    has a C compiler to build it (or it is built already)."""
    out = {}
    for gen in GENERATORS.all():
        name = gen.name
        binary = COMPILER if getattr(gen, "prepare", None) else gen.binary
        r = await host.run(["sh", "-c", 'command -v "$1"', f"{PREFIX}", binary], check=False, timeout=15)
        out[name] = r.exit_status == 0
    return out


__all__ = ["DEFAULT_GENERATOR", "GENERATORS", "Generator", "LoadResult", "LoadSpec", "accounted", "available",
           "get_generator", "parse_accounting"]
