"""Build the project's own C programs on a host: compiled from source at set-up, never downloaded.

    path = await ensure_built(host, "openloop")   # -> /run/cnibench/bin/cnib-openloop-<hash>

The source ships in this package (`<name>.c`). It is copied to the host and compiled there
with the host's C compiler (Debian's gcc: `apt-get install -y build-essential`), so the binary
matches the host's libc and CPU. The binary's name carries the first 12 hex digits of the
source's SHA-256: a changed source builds anew, an unchanged one is reused. It lives under the
project's run directory (tmpfs, swept by `invoke clean`). A build goes to a temporary name and
is renamed into place, so two hosts of the testbed (one file system) never see half a binary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from ...config import RUN_DIR
from ...errors import CnibenchError

SOURCES = {"openloop": ["-O2", "-pthread", "-lm"]}  # program: compiler flags
BIN_DIR = f"{RUN_DIR}/bin"
COMPILER = "cc"


class BuildError(CnibenchError):
    pass


def source(name: str) -> bytes:
    return resources.files(__package__).joinpath(f"{name}.c").read_bytes()


def source_hash(name: str) -> str:
    return hashlib.sha256(source(name)).hexdigest()


def binary_path(name: str) -> str:
    return f"{BIN_DIR}/cnib-{name}-{source_hash(name)[:12]}"


def build_argv(name: str, src: str, out: str) -> list[str]:
    """The compile command (pure): flags after the source, so -l libraries resolve."""
    flags = SOURCES[name]
    cflags = [f for f in flags if not f.startswith("-l")]
    libs = [f for f in flags if f.startswith("-l")]
    return [COMPILER, *cflags, "-Wall", "-o", out, src, *libs]


@dataclass(frozen=True)
class Built:
    name: str
    path: str
    source_sha256: str
    compiler: str  # the compiler's first --version line

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "source_sha256": self.source_sha256, "compiler": self.compiler}


async def compiler_version(host) -> str | None:
    r = await host.run(["sh", "-c", 'command -v "$1" >/dev/null && "$1" --version', "sh", COMPILER], check=False, timeout=15)
    return r.stdout.splitlines()[0].strip() if r.ok and r.stdout.strip() else None


async def ensure_built(host, name: str) -> Built:
    """The program's binary on `host`, compiled there if it is not there yet."""
    path = binary_path(name)
    digest = source_hash(name)
    version = await compiler_version(host)
    if version is None:
        raise BuildError(f"{host.name}: no C compiler ('{COMPILER}') to build cnib-{name}. "
                         f"Install one there: apt-get install -y build-essential")
    present = await host.run(["test", "-x", path], check=False, timeout=15)
    if present.ok:
        return Built(name, path, digest, version)
    tmp = f"{path}.tmp-{host.name}"
    src = f"{tmp}.c"
    await host.run(["mkdir", "-p", BIN_DIR], timeout=15)
    await host.write_file(src, source(name), mode=0o644)
    r = await host.run(build_argv(name, src, tmp), check=False, timeout=120)
    await host.run(["rm", "-f", "--", src], check=False, timeout=15)
    if not r.ok:
        await host.run(["rm", "-f", "--", tmp], check=False, timeout=15)
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-4:])
        raise BuildError(f"{host.name}: building cnib-{name} failed (exit {r.exit_status}): {tail}")
    await host.run(["mv", "-f", "--", tmp, path], timeout=15)
    return Built(name, path, digest, version)
