"""The run matrix of a study, its seeded randomized order, and what is left to do (pure).

Order: one block per repetition k (holding every point that gets at least k repetitions).
Inside a block the modes come in a seeded random order, and inside each mode the (size, load)
cells do too, so slow drift of the machine cannot pass for a difference between modes. Each
block draws from its own generator seeded with (seed, k): adding repetitions never reorders
the blocks already run. A mode is set up once per (repetition, mode) block.

The block is the unit the statistics replicate (stats.py): every repetition holds every mode, so
modes are compared with the reference pairwise by repetition. With `load: {rotate: true}` a
repetition runs one load (both sizes) instead of all of them, the loads taking turns in a seeded
order per cycle of len(loads) repetitions: the same runs make twice the blocks (12 instead of
6 for two loads), which narrows the intervals more than more loads per block would.

Arms. What the analysis compares is an arm, not a mode: each mode is an arm under its own
name, and with the study key `twin` the reference runs a second time in every block as its A/A
twin (arm "host·A/A", mode host), shuffled into the block's order like the other arms (a study
without a twin keeps its order). An arm's runs live under its path-safe name (arm_path) where
the mode's name is for the other arms, so the layout of existing arms is unchanged.

`estimate` is the wall time a plan will take, from measured per-run and per-block costs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from ..errors import PlanError
from ..results import run_id
from .spec import Study


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
    arm: str = ""  # the label the analysis compares; "" means the mode's name

    def __post_init__(self) -> None:
        if not self.arm:
            object.__setattr__(self, "arm", self.mode)


@dataclass(frozen=True)
class Block:
    """Runs of one arm inside one repetition: its mode is set up once for all of them."""

    repetition: int
    mode: str
    runs: tuple[PlannedRun, ...]
    arm: str = ""

    def __post_init__(self) -> None:
        if not self.arm:
            object.__setattr__(self, "arm", self.mode)


def arm_path(arm: str) -> str:
    """An arm as a path part: a mode's name as it is, anything else with each run of characters
    outside [A-Za-z0-9._-] made one '-' ("host·A/A" -> "host-A-A")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", arm)


def block_order(study: Study) -> list[tuple[int, tuple[str, str], list[tuple[str, float]]]]:
    """[(repetition, (arm, mode), [(size, load), ...]), ...] in execution order."""
    max_reps = max(study.repetitions_at(x) for x in study.loads)
    out = []
    for k in range(1, max_reps + 1):
        rng = random.Random(f"{study.seed}/rep{k}")
        arms = list(study.arms)
        rng.shuffle(arms)
        loads = loads_of_repetition(study, k)
        for arm in arms:
            cells = [(s, x) for s in study.sizes for x in loads]
            rng.shuffle(cells)
            out.append((k, arm, cells))
    return out


def loads_of_repetition(study: Study, k: int) -> tuple[float, ...]:
    """The loads repetition k runs: all that get k repetitions, or with rotation one of them
    (each cycle of len(loads) repetitions runs every load once, in a seeded order)."""
    if not study.rotate_loads:
        return tuple(x for x in study.loads if study.repetitions_at(x) >= k)
    n = len(study.loads)
    order = list(study.loads)
    random.Random(f"{study.seed}/loads{(k - 1) // n}").shuffle(order)
    return (order[(k - 1) % n],)


def target_rate(study: Study, size: str, load: float,
                max_rates: Mapping[str, float] | None) -> tuple[float, float | None]:
    """(requests/s, fraction of the reference maximum or None) for one point."""
    if not study.uses_fractions:
        fraction = None
        if max_rates and max_rates.get(size):
            fraction = load / max_rates[size]
        return float(load), fraction
    if not max_rates or not max_rates.get(size):
        raise PlanError(f"study {study.name}: loads are fractions but there is no calibrated maximum rate of "
                        f"'{study.reference}' for size '{size}'. Run the calibration first (run-all does it when "
                        "missing).")
    return float(max(1, round(load * max_rates[size]))), load


def plan(study: Study, max_rates: Mapping[str, float] | None = None) -> list[PlannedRun]:
    """Every run of the study, in execution order, with its id and target rate."""
    runs: list[PlannedRun] = []
    for k, (arm, mode), cells in block_order(study):
        for size, load in cells:
            rate, fraction = target_rate(study, size, load, max_rates)
            rid = run_id(study.name, arm_path(arm), size, rate, k)
            runs.append(PlannedRun(rid, study.name, mode, size, load, rate, fraction, k, len(runs), arm))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise PlanError(f"study {study.name}: two loads give the same run {dup}; the calibrated maximum is too small "
                        "to tell the fractions apart. Use fewer, more distant fractions or absolute rates.")
    return runs


def blocks(runs: Iterable[PlannedRun]) -> list[Block]:
    """Consecutive runs sharing (repetition, arm), in order."""
    out: list[Block] = []
    current: list[PlannedRun] = []
    for r in runs:
        if current and (current[-1].repetition, current[-1].arm) != (r.repetition, r.arm):
            out.append(Block(current[0].repetition, current[0].mode, tuple(current), current[0].arm))
            current = []
        current.append(r)
    if current:
        out.append(Block(current[0].repetition, current[0].mode, tuple(current), current[0].arm))
    return out


def pending(runs: Iterable[PlannedRun], complete: Iterable[str]) -> list[PlannedRun]:
    """The runs still to do, in planned order: those without a complete record."""
    done = set(complete)
    return [r for r in runs if r.run_id not in done]


def completion(runs: Iterable[PlannedRun], statuses: Mapping[str, str]) -> list[dict]:
    """One row per (arm, size): planned, ok, invalid, failed and missing counts ("mode" is the
    arm's label, as the status table shows it)."""
    rows: dict[tuple[str, str], dict] = {}
    for r in runs:
        row = rows.setdefault((r.arm, r.size),
                              {"mode": r.arm, "size": r.size, "planned": 0, "ok": 0, "invalid": 0, "failed": 0,
                               "missing": 0})
        row["planned"] += 1
        row[statuses.get(r.run_id, "missing")] += 1
    return list(rows.values())


@dataclass(frozen=True)
class Costs:
    """Seconds a study spends outside its measurement windows, measured on this 2-core machine
    with the compiled open-loop generator: lab.yml from a fresh clone, 2026-11-28 (run B of
    issue 11: 192 runs and 136 redone attempts in 1,831 s, their notebooks in 107 s). Re-measure
    when the generator or the runner changes."""

    per_run_s: float = 0.5  # health check, samplers, hiccup meters, log fetch and parse, record write
    notebook_s: float = 0.55  # its run notebook, rendered after the matrix (warm / fresh)
    measure_notebook_s: float = 1.5  # notebooks: measure (a kernel per run)
    per_block_s: float = 0.3  # mode up + down, nginx start
    calibration_per_size_s: float = 65.0  # the reference's calibration (p90 bound, votes), when none is saved
    fixed_s: float = 10.0  # testbed up, precheck, host facts, quiet-machine check, manifest
    analysis_s: float = 15.0  # dataset, statistics, figures, report
    redo_share: float = 0.15  # attempts redone per run when the study redoes disturbed runs (this VM, lab.yml's guards)


def estimate(study: Study, runs: Iterable[PlannedRun], calibrate_sizes: int = 0, costs: Costs = Costs()) -> dict:
    """Estimated wall time of running `runs` (seconds), the part inside measurement windows and
    its fraction; `calibrate_sizes`: how many sizes still need the reference's calibration.
    Redone attempts are expected time too, but their windows do not count as measurement."""
    runs = list(runs)
    window = float(study.workload.get("duration_s") or 0)
    warmup = float(study.workload.get("warmup_s") or 0)
    notebook = {"warm": costs.notebook_s, "fresh": costs.notebook_s,
                "measure": costs.measure_notebook_s}.get(study.notebooks, 0.0)
    n_blocks = len(blocks(runs))
    redo = costs.redo_share if int((study.redo or {}).get("max_attempts") or 1) > 1 else 0.0
    parts = {
        "windows": len(runs) * window,
        "warmup": len(runs) * warmup,
        "per_run": len(runs) * (costs.per_run_s + notebook),
        "redo": len(runs) * redo * (window + warmup + costs.per_run_s),
        "modes": n_blocks * costs.per_block_s,
        "calibration": calibrate_sizes * costs.calibration_per_size_s,
        "fixed": costs.fixed_s + costs.analysis_s,
    }
    total = sum(parts.values())
    return {"runs": len(runs), "blocks": n_blocks, "seconds": total, "measure_s": parts["windows"],
            "measure_fraction": parts["windows"] / total if total else 0.0, "parts": parts}


def format_estimate(est: dict) -> str:
    return (f"estimated duration: {est['seconds'] / 60:.1f} min for {est['runs']} runs in {est['blocks']} blocks "
            f"({100 * est['measure_fraction']:.0f} % inside measurement windows"
            + (f"; calibration {est['parts']['calibration']:.0f} s" if est["parts"]["calibration"] else "") + ")")
