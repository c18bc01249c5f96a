"""A BenchSpec from a study's plain fields (YAML/JSON gives lists and dicts where it wants tuples/objects)."""

from __future__ import annotations

from typing import Any, Mapping

from .bench import BenchSpec
from .defaults import with_defaults
from .guards import GuardLimits


def bench_spec(fields: Mapping[str, Any]) -> BenchSpec:
    if "cpus" in fields:  # the study's placement; study/precheck.py turns it into client/server_cpus
        _check_cpus(fields["cpus"])
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in with_defaults(fields).items() if k != "cpus"}
    if isinstance(kw.get("guard"), dict):
        kw["guard"] = GuardLimits(**kw["guard"])
    return BenchSpec(**kw)


def _check_cpus(value) -> None:
    from ..errors import ConfigError, PlanError
    from ..infra.topology import parse_cpus_setting

    try:
        parse_cpus_setting(list(value) if isinstance(value, tuple) else value)
    except PlanError as exc:
        problem = str(exc).split(": ", 1)[1]
        raise ConfigError("bench", "cpus", problem.split(". ", 1)[0], problem.split(". ", 1)[1]) from None
