"""The study file's load section and its repetitions (fractions or rates, rotation, focus), and
the checks every section parser of the study file uses (spec.py parses the rest)."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import ConfigError
from ..infra.config import did_you_mean
from ..workload.defaults import MAX_RATE


def parse_loads(data: dict, path: Path) -> tuple[str, tuple[float, ...], bool]:
    load = data.get("load")
    if not isinstance(load, dict):
        raise ConfigError(path, "load", "must be a mapping with 'fractions' or 'rates'",
                          "Write 'load: {fractions: [0.3, 0.4, 0.5]}' or 'load: {rates: [50000, 100000]}'.")
    no_unknown(load, ("fractions", "rates", "rotate"), path, "load.", "load key")
    rotate = load.get("rotate", False)
    if not isinstance(rotate, bool):
        raise ConfigError(path, "load.rotate", f"'{rotate}' is not true or false",
                          "Write 'rotate: true' (one load per repetition, in turn) or leave it out.")
    if ("fractions" in load) == ("rates" in load):
        raise ConfigError(path, "load", "needs exactly one of 'fractions' and 'rates'",
                          "Use fractions of the reference mode's calibrated maximum, or absolute requests per second, "
                          "not both.")
    kind = "fraction" if "fractions" in load else "rate"
    key = "fractions" if kind == "fraction" else "rates"
    raw = load[key]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, f"load.{key}", "must be a non-empty list of numbers",
                          f"Write e.g. 'load: {{{key}: [{'0.3, 0.5' if kind == 'fraction' else '50000, 100000'}]}}'.")
    values: list[float] = []
    for i, v in enumerate(raw):
        if not is_number(v) or not math.isfinite(v) or v <= 0:
            raise ConfigError(path, f"load.{key}[{i}]", f"'{v}' is not a positive number",
                              "Loads are positive numbers.")
        if kind == "rate" and v > MAX_RATE:
            raise ConfigError(path, f"load.{key}[{i}]", f"{v:g} requests/s is more than {MAX_RATE:g}",
                              "That is far beyond one client host; check the number.")
        if kind == "fraction" and v > 1.5:
            raise ConfigError(path, f"load.{key}[{i}]", f"{v} is more than 1.5 times the calibrated maximum",
                              "Fractions are of the maximum rate: 0.4 means 40 %. Use 'rates' for requests per second.")
        if v in values:
            raise ConfigError(path, f"load.{key}[{i}]", f"{v} appears twice",
                              "List each load once; use 'repetitions' or 'focus' to repeat it.")
        values.append(float(v))
    return kind, tuple(sorted(values)), rotate


def parse_repetitions(data: dict, path: Path, loads, load_kind: str,
                      rotate: bool) -> tuple[int, tuple[float, float] | None, int]:
    """The repetitions, the focus range and its repetitions, checked against the loads and their rotation."""
    repetitions = data.get("repetitions", 1)
    if not is_int(repetitions) or repetitions < 1:
        raise ConfigError(path, "repetitions", f"'{repetitions}' is not a whole number >= 1",
                          "Write e.g. 'repetitions: 1'.")
    focus_range, focus_reps = parse_focus(data, path, loads, load_kind)
    if rotate and focus_range:
        raise ConfigError(path, "load.rotate", "cannot be combined with 'focus'",
                          "Rotation runs one load per repetition; focus adds repetitions to some loads. Use one of the "
                          "two.")
    if rotate and repetitions % len(loads):
        raise ConfigError(path, "repetitions", f"{repetitions} is not a multiple of the {len(loads)} rotated loads",
                          f"Use a multiple of {len(loads)}, so every load gets the same number of repetition blocks.")
    return repetitions, focus_range, focus_reps


def parse_focus(data: dict, path: Path, loads, kind) -> tuple[tuple[float, float] | None, int]:
    focus = data.get("focus")
    if focus is None:
        return None, 0
    if not isinstance(focus, dict):
        raise ConfigError(path, "focus", "must be a mapping with 'range' and 'repetitions'",
                          "Write 'focus: {range: [0.3, 0.5], repetitions: 3}'.")
    no_unknown(focus, ("range", "repetitions"), path, "focus.", "focus key")
    rng = focus.get("range")
    if not (isinstance(rng, list) and len(rng) == 2 and all(is_number(x) for x in rng) and rng[0] <= rng[1]):
        raise ConfigError(path, "focus.range", f"'{rng}' is not [low, high]",
                          "Write two loads in the study's unit, low first, e.g. 'range: [0.3, 0.5]'.")
    reps = focus.get("repetitions")
    if not is_int(reps) or reps < 1:
        raise ConfigError(path, "focus.repetitions", f"'{reps}' is not a whole number >= 1",
                          "Write e.g. 'repetitions: 3'.")
    if not any(rng[0] <= x <= rng[1] for x in loads):
        unit = "fractions" if kind == "fraction" else "rates"
        raise ConfigError(path, "focus.range", f"no load in {rng} (the {unit} are {list(loads)})",
                          "Put the range around some of the loads, in the same unit.")
    return (float(rng[0]), float(rng[1])), int(reps)


def no_unknown(data: dict, known, path: Path, prefix: str, what: str) -> None:
    for k in data:
        if k not in known:
            raise ConfigError(path, f"{prefix}{k}", f"is not a known {what}{did_you_mean(str(k), known)}",
                              f"Known: {', '.join(known)}.")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
