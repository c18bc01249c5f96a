"""A BenchSpec from a study's plain fields (YAML/JSON gives lists and dicts where it wants tuples/objects)."""

from __future__ import annotations

from typing import Any, Mapping

from .bench import BenchSpec
from .defaults import with_defaults
from .guards import GuardLimits


def bench_spec(fields: Mapping[str, Any]) -> BenchSpec:
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in with_defaults(fields).items()}
    if isinstance(kw.get("guard"), dict):
        kw["guard"] = GuardLimits(**kw["guard"])
    return BenchSpec(**kw)
