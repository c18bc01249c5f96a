"""cnib-openloop's source (openloop.c, the project's own load generator) and its build on a host.

    built = await ensure_built(host, "openloop")   # -> Built(path=/run/cnibench/bin/cnib-openloop-<hash>, ...)

Compiled on the client host by workload/cbuild.py (the host's cc; nothing downloaded). The
binary's path is a pure function of the source, so a generator's command is too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ...infra import cbuild
from ...catalog import PREFIX

SOURCES = {"openloop": (("-O2", "-Wall", "-pthread"), ("-lm",))}  # program: (compiler flags, libraries)
PROGRAMS = {name: cbuild.CSource(__package__, f"{name}.c", f"{PREFIX}-{name}") for name in SOURCES}


BREAK_PACING_ENV = "CNIBENCH_BREAK_PACING"  # "1": build the deliberately broken generator


def source(name: str) -> bytes:
    """The program's source. With CNIBENCH_BREAK_PACING=1 (the tests of the tests only, never a
    study), openloop.c is built with CNIB_BREAK_PACING: it sleeps 300 us every 10 ms of its
    schedule, a fault of its own that the pacing tests must catch. The define is part of the
    source, so that build has its own hash, binary and `source_sha256`."""
    text = PROGRAMS[name].read()
    if name == "openloop" and os.environ.get(BREAK_PACING_ENV) == "1":
        text = b"#define CNIB_BREAK_PACING 1\n" + text
    return text


def source_hash(name: str) -> str:
    """The full SHA-256 of the source (the manifest and records carry it)."""
    return hashlib.sha256(source(name)).hexdigest()


def binary_path(name: str) -> str:
    return cbuild.binary_path(PROGRAMS[name].binary, source(name))


def build_argv(name: str, src: str, out: str) -> list[str]:
    """The compile command as an argv (what cbuild's script runs), for documentation and tests."""
    cflags, libs = SOURCES[name]
    return [cbuild.COMPILER, *cflags, "-o", out, src, *libs]


@dataclass(frozen=True)
class Built:
    name: str
    path: str
    source_sha256: str
    compiler: str | None  # the compiler's first --version line

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "source_sha256": self.source_sha256, "compiler": self.compiler}


async def ensure_built(host, name: str) -> Built:
    """The program's binary on `host`, compiled there if it is not there yet."""
    cflags, libs = SOURCES[name]
    path = await cbuild.ensure_built(host, PROGRAMS[name].binary, source(name), cflags, libs)
    return Built(name, path, source_hash(name), await cbuild.compiler_version(host))
