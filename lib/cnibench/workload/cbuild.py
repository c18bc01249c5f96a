"""Small C programs of the project, built on each host from the project's own source.

    path = await ensure_built(host, "hiccup", source)   # /var/lib/cnibench/bin/hiccup-<hash>
    state = await built_state(host, "hiccup", source)    # for hosts.check

The binary's name carries the first 16 hex digits of the source's sha256, so a changed source
is a new binary and an unchanged one is built once per host. Built with the host's own `cc`
(Debian's gcc; `apt-get install -y gcc` when missing), into a temporary name renamed into
place, so two builds at once (the testbed's hosts share a file system) never leave half a file.
Nothing is downloaded.
"""

from __future__ import annotations

import hashlib

from ..errors import HostError

BIN_DIR = "/var/lib/cnibench/bin"
CFLAGS = ("-O2", "-Wall")


def source_hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()[:16]


def binary_path(name: str, source: bytes) -> str:
    return f"{BIN_DIR}/{name}-{source_hash(source)}"


def build_script() -> str:
    """sh script: $1 binary path, $2 source path; compiles unless the binary is there."""
    flags = " ".join(CFLAGS)
    return (
        'set -e; b=$1; s=$2; [ -x "$b" ] && exit 0\n'
        'command -v cc >/dev/null || { echo "no C compiler (cc): apt-get install -y gcc" >&2; exit 3; }\n'
        f't="$b.tmp.$$"; cc {flags} -o "$t" "$s" && mv -f "$t" "$b"\n'
    )


async def ensure_built(host, name: str, source: bytes) -> str:
    """The binary's path on `host`, compiled there first when missing. HostError when it cannot be."""
    path = binary_path(name, source)
    r = await host.run(["test", "-x", path], check=False, timeout=10)
    if r.exit_status == 0:
        return path
    src = f"{path}.c"
    await host.write_file(src, source)
    r = await host.run(["sh", "-c", build_script(), "cnib-build", path, src], check=False, timeout=120)
    if r.exit_status != 0:
        why = (r.stderr or r.stdout).strip().splitlines()
        raise HostError(host.name, f"could not build {name} ({why[-1] if why else f'exit {r.exit_status}'})")
    return path


async def built_state(host, name: str, source: bytes) -> str:
    """'built <path>', 'not built yet (<path>)' or 'no C compiler: ...' (read only)."""
    path = binary_path(name, source)
    r = await host.run(["sh", "-c", 'test -x "$1" && echo built || { command -v cc >/dev/null && echo missing || echo nocc; }',
                        "cnib", path], check=False, timeout=10)
    state = r.stdout.strip()
    if state == "built":
        return f"built {path}"
    if state == "missing":
        return f"not built yet ({path}; built on first use)"
    return "no C compiler: apt-get install -y gcc"
