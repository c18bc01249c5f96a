"""The keys a study file may set, asked of the packages that own them (modes, workload), so the
study parser never keeps a copy that could drift."""

from __future__ import annotations

import dataclasses
import inspect

from ..modes import REFERENCE, mode_names, setting_keys  # noqa: F401  (REFERENCE re-exported)

MODES = mode_names()  # the registry's fixed order (tables, legends, colours)

# Fields the runner fills in per run; a study cannot set them.
_PER_RUN_KEYS = ("mode", "size", "rate", "closed_loop")


def known_modes() -> tuple[str, ...]:
    return MODES


def workload_keys() -> tuple[str, ...]:
    """BenchSpec fields a study may set."""
    from ..workload.bench import BenchSpec

    return tuple(f.name for f in dataclasses.fields(BenchSpec) if f.name not in _PER_RUN_KEYS)


def calibration_keys() -> tuple[str, ...]:
    """Keyword arguments of the workload's calibrate() a study may set."""
    from ..workload.calibrate import calibrate

    skip = {"fleet", "endpoint", "spec_template", "progress"}
    return tuple(n for n, p in inspect.signature(calibrate).parameters.items() if n not in skip
                 and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def mode_setting_keys() -> tuple[str, ...]:
    """Settings a study may set per mode (every kind's)."""
    return setting_keys()
