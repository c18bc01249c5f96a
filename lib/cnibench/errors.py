"""One exception hierarchy. Every message says what went wrong and what to do next."""

from __future__ import annotations


class CnibenchError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(CnibenchError):
    """A config file (inventory, study) is wrong: names the file, the key and the fix."""

    def __init__(self, path, key: str, problem: str, fix: str):
        self.path, self.key, self.problem, self.fix = str(path), key, problem, fix
        super().__init__(f"{self.path}: {key}: {problem}. {fix}")


class HostError(CnibenchError):
    """Something about one host."""

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"{host}: {message}")


class HostUnreachable(HostError):
    pass


class AuthenticationFailed(HostError):
    pass


class HostKeyError(HostError):
    """The host key is unknown or has changed: never connect silently."""


class CommandFailed(HostError):
    def __init__(self, result):
        self.result = result
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-5:])
        super().__init__(
            result.host,
            f"command failed with exit status {result.exit_status}: {result.command}"
            + (f"\n  stderr: {tail}" if tail else ""),
        )


class CommandTimeout(HostError):
    def __init__(self, host: str, command: str, timeout: float):
        self.command, self.timeout = command, timeout
        super().__init__(host, f"command timed out after {timeout:g} s: {command}")


class FleetError(CnibenchError):
    """One or more hosts failed; `errors` maps host name to its exception."""

    def __init__(self, action: str, errors: dict[str, BaseException]):
        self.errors = errors
        lines = [f"{action} failed on {len(errors)} host(s):"]
        lines += [f"  {name}: {err}" for name, err in sorted(errors.items())]
        super().__init__("\n".join(lines))


class UnsupportedFeature(CnibenchError):
    """The kernel or a host lacks something a mode or workload needs."""


class PlanError(CnibenchError):
    """Settings cannot produce a valid plan (overlapping CIDRs, names too long, ...)."""


class TestbedError(CnibenchError):
    pass
