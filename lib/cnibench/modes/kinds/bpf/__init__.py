"""The project's own BPF programs (`<name>.c` here) and their build on a host; datapath.py holds
the redirect program's names and map encodings, checks.py what ebpf-redirect probes and verifies.

    built = await ensure_object(host, "redirect")   # -> /run/cnibench/bin/cnib-redirect-<hash>.o

Compiled on each host by infra/cbuild.py, like the load generator: the source is copied to
the host and compiled there (clang -O2 -g -target bpf -c; Debian's clang, and libbpf-dev for
<bpf/bpf_helpers.h>), so the object matches the host's kernel headers; nothing is downloaded.
The object's name carries the source's hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from ....catalog import PREFIX
from ....errors import HostError
from ....infra import cbuild

COMPILER = "clang"
PACKAGES = "clang libbpf-dev bpftool"  # what a host needs to build and load them (Debian)
# <linux/bpf.h> includes <asm/types.h>, which Debian keeps in the multiarch directory that
# `-target bpf` does not search; the host's shell expands the $(...) (a constant, not input).
CFLAGS = ("-O2", "-g", "-Wall", "-target", "bpf", f"-I/usr/include/$({COMPILER} -print-multiarch)", "-c")


def program(name: str) -> cbuild.CSource:
    """`<name>.c` here, built to `cnib-<name>-<hash>.o`."""
    return cbuild.CSource(__package__, f"{name}.c", f"{PREFIX}-{name}", ".o")


def source(name: str) -> bytes:
    return program(name).read()


def source_hash(name: str) -> str:
    return program(name).sha256()


def object_path(name: str) -> str:
    return program(name).path()


def build_argv(src: str, out: str, multiarch: str | None) -> list[str]:
    """The compile command the host runs, as an argv with the include path resolved (tests, docs)."""
    flags = [f for f in CFLAGS if not f.startswith("-I")] + ([f"-I/usr/include/{multiarch}"] if multiarch else [])
    return [COMPILER, *flags, "-o", out, src]


@dataclass(frozen=True)
class Built:
    name: str
    path: str
    source_sha256: str
    clang: str  # clang's first --version line
    kernel: str  # uname -r of the host that loads it

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "source_sha256": self.source_sha256, "clang": self.clang,
                "kernel": self.kernel}


class BuildError(HostError):
    pass


async def ensure_object(host, name: str) -> Built:
    """The program's object on `host`, compiled there if it is not there yet."""
    version = await cbuild.compiler_version(host, COMPILER)
    if version is None:
        raise BuildError(host.name,
                         f"no clang to build the BPF programs ({PREFIX}-{name}). "
                         f"Install: apt-get install -y {PACKAGES}")
    kernel = (await host.run(["uname", "-r"], timeout=15)).stdout.strip()
    try:
        path = await cbuild.ensure_built(host, f"{PREFIX}-{name}", source(name), CFLAGS, compiler=COMPILER,
                                         package=PACKAGES, suffix=".o")
    except HostError as exc:
        hint = f" (missing headers? apt-get install -y {PACKAGES})" if "file not found" in str(exc) else ""
        raise BuildError(host.name, f"building {PREFIX}-{name} failed: {exc}{hint}") from None
    return Built(name, path, source_hash(name), version, kernel)
