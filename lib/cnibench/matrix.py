"""The run matrix of a study, its seeded randomized order, and what is left to do (pure).

Order: one block per repetition k (holding every point that gets at least k repetitions).
Inside a block the modes come in a seeded random order, and inside each mode the (size, load)
cells do too, so slow drift of the machine cannot pass for a difference between modes. Each
block draws from its own generator seeded with (seed, k): adding repetitions never reorders
the blocks already run. A mode is set up once per (repetition, mode) block.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Mapping

from .errors import PlanError
from .results import run_id
from .study import Study


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    study: str
    mode: str
    size: str
    load: float  # as the study wrote it: a fraction or requests/s
    target_rate: float  # requests/s
    load_fraction: float | None
    repetition: int
    order: int  # 0-based position in the executed sequence


@dataclass(frozen=True)
class Block:
    """Runs of one mode inside one repetition: the mode is set up once for all of them."""

    repetition: int
    mode: str
    runs: tuple[PlannedRun, ...]


def block_order(study: Study) -> list[tuple[int, str, list[tuple[str, float]]]]:
    """[(repetition, mode, [(size, load), ...]), ...] in execution order."""
    max_reps = max(study.repetitions_at(x) for x in study.loads)
    out = []
    for k in range(1, max_reps + 1):
        rng = random.Random(f"{study.seed}/rep{k}")
        modes = list(study.modes)
        rng.shuffle(modes)
        for mode in modes:
            cells = [(s, x) for s in study.sizes for x in study.loads if study.repetitions_at(x) >= k]
            rng.shuffle(cells)
            out.append((k, mode, cells))
    return out


def target_rate(study: Study, size: str, load: float, max_rates: Mapping[str, float] | None) -> tuple[float, float | None]:
    """(requests/s, fraction of the reference maximum or None) for one point."""
    if not study.uses_fractions:
        fraction = None
        if max_rates and max_rates.get(size):
            fraction = load / max_rates[size]
        return float(load), fraction
    if not max_rates or not max_rates.get(size):
        raise PlanError(f"study {study.name}: loads are fractions but there is no calibrated maximum rate of '{study.reference}' for size '{size}'. Run the calibration first (run-all does it when missing).")
    return float(max(1, round(load * max_rates[size]))), load


def plan(study: Study, max_rates: Mapping[str, float] | None = None) -> list[PlannedRun]:
    """Every run of the study, in execution order, with its id and target rate."""
    runs: list[PlannedRun] = []
    for k, mode, cells in block_order(study):
        for size, load in cells:
            rate, fraction = target_rate(study, size, load, max_rates)
            rid = run_id(study.name, mode, size, rate, k)
            runs.append(PlannedRun(rid, study.name, mode, size, load, rate, fraction, k, len(runs)))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PlanError(f"study {study.name}: two loads give the same run {dup}; the calibrated maximum is too small to tell the fractions apart. Use fewer, more distant fractions or absolute rates.")
    return runs


def blocks(runs: Iterable[PlannedRun]) -> list[Block]:
    """Consecutive runs sharing (repetition, mode), in order."""
    out: list[Block] = []
    current: list[PlannedRun] = []
    for r in runs:
        if current and (current[-1].repetition, current[-1].mode) != (r.repetition, r.mode):
            out.append(Block(current[0].repetition, current[0].mode, tuple(current)))
            current = []
        current.append(r)
    if current:
        out.append(Block(current[0].repetition, current[0].mode, tuple(current)))
    return out


def pending(runs: Iterable[PlannedRun], complete: Iterable[str]) -> list[PlannedRun]:
    """The runs still to do, in planned order: those without a complete record."""
    done = set(complete)
    return [r for r in runs if r.run_id not in done]


def completion(runs: Iterable[PlannedRun], statuses: Mapping[str, str]) -> list[dict]:
    """One row per (mode, size): planned, ok, invalid, failed and missing counts."""
    rows: dict[tuple[str, str], dict] = {}
    for r in runs:
        row = rows.setdefault((r.mode, r.size), {"mode": r.mode, "size": r.size, "planned": 0, "ok": 0, "invalid": 0, "failed": 0, "missing": 0})
        row["planned"] += 1
        row[statuses.get(r.run_id, "missing")] += 1
    return list(rows.values())
