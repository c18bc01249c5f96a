"""Study key `implementations`: more than one implementation of a mode, each its own arm.

    modes: [host, macvlan, flannel-vxlan]
    implementations: {macvlan: [cni], flannel-vxlan: [cni]}

adds the arms "macvlan·cni" and "flannel-vxlan·cni" (mode macvlan, implementation cni) next to
"macvlan" and "flannel-vxlan" (the project's own plan, as always): one study holds both, in the
same blocks, and the analysis can pair them (analysis/pairs.py). An arm's implementation is read
back from its label (`implementation_of`), so a run record and the manifest name it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..modes import MODES, cnidiff
from ..modes.registry import DEFAULT

SEP = "·"  # between a mode and its implementation in an arm's label: "macvlan·cni"


def parse(data: Any, path: Path, modes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """{mode: (implementation, ...)} beyond the project's own; one clear ConfigError otherwise."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "implementations", "must be a mapping of mode -> list of implementations",
                          "Write e.g. 'implementations: {macvlan: [cni]}'.")
    out: dict[str, tuple[str, ...]] = {}
    for mode, impls in data.items():
        if mode not in modes:
            raise ConfigError(path, f"implementations.{mode}", "is not one of this study's modes",
                              f"Use one of: {', '.join(modes)}.")
        impls = [impls] if isinstance(impls, str) else impls
        known = [i for i in MODES.implementations(mode) if i != DEFAULT]
        if not isinstance(impls, list) or not impls:
            raise ConfigError(path, f"implementations.{mode}", "must be a non-empty list",
                              f"Write e.g. '{mode}: [{(known or ['cni'])[0]}]'.")
        for impl in impls:
            if impl not in known:
                raise ConfigError(path, f"implementations.{mode}", f"'{impl}' is not an implementation of {mode}",
                                  f"Known besides the project's own: {', '.join(known) or 'none'}.")
        out[str(mode)] = tuple(dict.fromkeys(impls))
    return out


def arms(modes: tuple[str, ...], implementations: Mapping[str, tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    """(arm, mode): each mode as itself, then each of its other implementations."""
    return tuple(a for m in modes for a in ((m, m), *((f"{m}{SEP}{i}", m) for i in implementations.get(m, ()))))


def implementation_of(arm: str, mode: str) -> str:
    """The implementation an arm runs: its label's suffix where that names one of the mode's
    implementations (so the A/A twin "host·A/A" is the project's), else the project's."""
    prefix, _, impl = arm.partition(SEP)
    return impl if prefix == mode and impl in MODES.implementations(mode) else DEFAULT


def plugin_version(details: Mapping | None) -> str | None:
    """The CNI plugins' package version a mode's state recorded (cnisteps.require: host ->
    versions), the hosts' distinct versions joined; None for a mode without plugins (pure)."""
    found = sorted({str(v.get("version")) for v in ((details or {}).get("cni") or {}).values()})
    return ", ".join(found) or None


def predicted_sign(version: str | None, mode: str) -> str | None:
    """The latency sign the differences list (modes/cni_differences.yml) predicts for the pair
    "<mode>·cni" vs "<mode>", written before the run; None when the version is not listed."""
    return cnidiff.predicted_sign(version, mode)


def listed_versions() -> tuple[str, ...]:
    return tuple(cnidiff.load())
