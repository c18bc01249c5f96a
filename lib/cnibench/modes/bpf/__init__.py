"""Build the project's own BPF programs on a host: compiled from source at set-up, never downloaded.

    built = await ensure_object(host, "redirect")   # -> /run/cnibench/bin/cnib-redirect-<hash>.o

As for the load generator (workload/loadgen): the C source ships in this package, is copied to
the host and compiled there (clang -O2 -g -target bpf -c, Debian's clang and libbpf-dev for
<bpf/bpf_helpers.h>), so the object matches the host's kernel headers. The object's name
carries the first 12 hex digits of the source's SHA-256: a changed source builds anew, an
unchanged one is reused. A build goes to a temporary name and is renamed into place, so two
testbed hosts (one file system) never load half an object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from ...errors import CnibenchError
from ...workload.loadgen import BIN_DIR

COMPILER = "clang"
PACKAGES = "clang libbpf-dev bpftool"  # what a host needs to build and load them (Debian)


class BuildError(CnibenchError):
    pass


def source(name: str) -> bytes:
    return resources.files(__package__).joinpath(f"{name}.c").read_bytes()


def source_hash(name: str) -> str:
    return hashlib.sha256(source(name)).hexdigest()


def object_path(name: str) -> str:
    return f"{BIN_DIR}/cnib-{name}-{source_hash(name)[:12]}.o"


def build_argv(src: str, out: str, multiarch: str | None) -> list[str]:
    """The compile command (pure). <linux/bpf.h> includes <asm/types.h>, which Debian keeps in
    the multiarch directory that `-target bpf` does not search."""
    inc = [f"-I/usr/include/{multiarch}"] if multiarch else []
    return [COMPILER, "-O2", "-g", "-Wall", "-target", "bpf", *inc, "-c", src, "-o", out]


@dataclass(frozen=True)
class Built:
    name: str
    path: str
    source_sha256: str
    clang: str  # clang's first --version line
    kernel: str  # uname -r of the host that loads it

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "source_sha256": self.source_sha256, "clang": self.clang, "kernel": self.kernel}


async def _first_line(host, argv) -> str | None:
    r = await host.run(["sh", "-c", 'command -v "$1" >/dev/null && "$@"', "sh", *argv], check=False, timeout=15)
    return r.stdout.splitlines()[0].strip() if r.ok and r.stdout.strip() else None


async def ensure_object(host, name: str) -> Built:
    """The program's object on `host`, compiled there if it is not there yet."""
    path, digest = object_path(name), source_hash(name)
    version = await _first_line(host, [COMPILER, "--version"])
    if version is None:
        raise BuildError(f"{host.name}: no clang to build the BPF programs (cnib-{name}). Install: apt-get install -y {PACKAGES}")
    kernel = (await host.run(["uname", "-r"], timeout=15)).stdout.strip()
    if (await host.run(["test", "-s", path], check=False, timeout=15)).ok:
        return Built(name, path, digest, version, kernel)
    multiarch = await _first_line(host, [COMPILER, "-print-multiarch"])
    tmp = f"{path}.tmp-{host.name}"
    src = f"{tmp}.c"
    await host.run(["mkdir", "-p", BIN_DIR], timeout=15)
    await host.write_file(src, source(name), mode=0o644)
    r = await host.run(build_argv(src, tmp, multiarch), check=False, timeout=120)
    await host.run(["rm", "-f", "--", src], check=False, timeout=15)
    if not r.ok:
        await host.run(["rm", "-f", "--", tmp], check=False, timeout=15)
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-4:])
        hint = f" (missing headers? apt-get install -y {PACKAGES})" if "file not found" in tail else ""
        raise BuildError(f"{host.name}: building cnib-{name} failed (exit {r.exit_status}): {tail}{hint}")
    await host.run(["mv", "-f", "--", tmp, path], timeout=15)
    return Built(name, path, digest, version, kernel)
