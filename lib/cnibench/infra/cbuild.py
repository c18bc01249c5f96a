"""The project's own C programs, built on each host from the project's own source.

    HICCUP = CSource(__package__, "hiccup.c", "hiccup")            # the source, its hash, its path
    path = await ensure_built(host, "hiccup", HICCUP.read())        # /run/cnibench/bin/hiccup-<hash>
    path = await ensure_built(host, "cnib-openloop", source, ("-O2", "-pthread"), ("-lm",))
    state = await built_state(host, "hiccup", source)               # for hosts.check
    version = await compiler_version(host)                          # for the records

The source is copied to the host and compiled there with the host's C compiler (`cc`: Debian's
build-essential), so the binary matches the host's libc and CPU. Nothing is downloaded. The
binary's name carries the first 16 hex digits of the source's SHA-256: a changed source builds
anew, an unchanged one is built once per host (per boot: the binaries live under the project's
run directory, tmpfs, which `invoke clean` sweeps). A build goes to a temporary name that is
renamed into place, so two builds at once (the testbed's hosts share one file system) never
leave half a file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..catalog import PREFIX
from ..errors import HostError
from .config import RUN_DIR

BIN_DIR = f"{RUN_DIR}/bin"
CFLAGS = ("-O2", "-Wall")
COMPILER = "cc"


def source_hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:16]


def binary_path(name: str, source: bytes, suffix: str = "") -> str:
    return f"{BIN_DIR}/{name}-{source_hash(source)}{suffix}"


@dataclass(frozen=True)
class CSource:
    """One of the project's C programs: its source file (read from the package that ships it,
    so it is found in a wheel as in a checkout), the source's hash and the binary's path."""

    package: str  # the package holding the file (its __package__)
    file: str  # e.g. "hiccup.c"
    binary: str  # the binary's name before the hash, e.g. "cnib-openloop"
    suffix: str = ""  # e.g. ".o" for a BPF object

    def read(self) -> bytes:
        return resources.files(self.package).joinpath(self.file).read_bytes()

    def sha256(self) -> str:
        """The full SHA-256 of the source (records and manifests carry it)."""
        return hashlib.sha256(self.read()).hexdigest()

    def path(self) -> str:
        """Where the binary built from this source lives on a host (a pure function of it)."""
        return binary_path(self.binary, self.read(), self.suffix)

    def file_path(self) -> Path:
        """The source file on this machine (e.g. to compile it locally in a test)."""
        return Path(str(resources.files(self.package).joinpath(self.file)))


def build_script(cflags=CFLAGS, libs=(), compiler: str = COMPILER, package: str = "build-essential") -> str:
    """sh script: $1 output path, $2 source path; compiles unless the output is there
    (libraries after the source, so they resolve). Flags are the project's constants, never
    input: they may hold a $(...) the host's shell expands (the BPF build's include path)."""
    return (
        'set -e; b=$1; s=$2; [ -s "$b" ] && exit 0\n'
        f'command -v {compiler} >/dev/null || '
        f'{{ echo "no compiler ({compiler}): apt-get install -y {package}" >&2; exit 3; }}\n'
        f't="$b.tmp.$$"; {compiler} {" ".join(cflags)} -o "$t" "$s" {" ".join(libs)} && mv -f "$t" "$b"\n'
    )


# Which Debian 12 package ships a missing system header, by the header's name (a prefix): the
# kernel's headers, libbpf's, else the C library's (stdio.h, pthread.h, sys/...: libc6-dev).
HEADER_PACKAGES = (("linux/", "linux-libc-dev"), ("asm/", "linux-libc-dev"), ("asm-generic/", "linux-libc-dev"),
                   ("bpf/", "libbpf-dev"))
LIBC_PACKAGE = "libc6-dev"


def header_package(header: str) -> str:
    """The Debian package that ships a system header (pure)."""
    return next((pkg for prefix, pkg in HEADER_PACKAGES if header.startswith(prefix)), LIBC_PACKAGE)


def build_failure(output: str, exit_status: int) -> str:
    """One line saying why a build failed (pure): the compiler's first `error:` line (not its
    closing "compilation terminated."), and for a missing system header the package to install."""
    lines = [ln.strip() for ln in (output or "").splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error:" in ln), None)
    if first is None:
        return lines[-1] if lines else f"exit {exit_status}"
    if "No such file or directory" in first and "fatal error:" in first:
        header = first.split("fatal error:", 1)[1].split(":", 1)[0].strip()
        return f"{first}; install it: apt-get install -y {header_package(header)}"
    return first


async def ensure_built(host, name: str, source: bytes, cflags=CFLAGS, libs=(), *, compiler: str = COMPILER,
                       package: str = "build-essential", suffix: str = "") -> str:
    """The binary's (or object's) path on `host`, compiled there first when missing. HostError
    when it cannot be."""
    path = binary_path(name, source, suffix)
    r = await host.run(["test", "-s", path], check=False, timeout=10)
    if r.exit_status == 0:
        return path
    src = f"{path}.{host.name}.c"
    await host.write_file(src, source)
    script = build_script(cflags, libs, compiler, package)
    r = await host.run(["sh", "-c", script, f"{PREFIX}-build", path, src], check=False, timeout=120)
    await host.run(["rm", "-f", "--", src], check=False, timeout=10)
    if r.exit_status != 0:
        why = build_failure(f"{r.stderr}\n{r.stdout}", r.exit_status)
        raise HostError(host.name, f"could not build {name} ({why})")
    return path


async def built_state(host, name: str, source: bytes) -> str:
    """'built <path>', 'not built yet (<path>)' or 'no C compiler: ...' (read only)."""
    path = binary_path(name, source)
    r = await host.run(["sh", "-c",
                        f'test -x "$1" && echo built || '
                        f'{{ command -v {COMPILER} >/dev/null && echo missing || echo nocc; }}',
                        f"{PREFIX}", path], check=False, timeout=10)
    state = r.stdout.strip()
    if state == "built":
        return f"built {path}"
    if state == "missing":
        return f"not built yet ({path}; built on first use)"
    return "no C compiler: apt-get install -y build-essential"


async def compiler_version(host, compiler: str = COMPILER) -> str | None:
    """The first line of the host's `<compiler> --version` (None: no such compiler)."""
    r = await host.run(["sh", "-c", f'command -v {compiler} >/dev/null && {compiler} --version'], check=False,
                       timeout=15)
    return r.stdout.splitlines()[0].strip() if r.ok and r.stdout.strip() else None
