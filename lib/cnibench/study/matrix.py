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

`estimate` is the wall time a plan will take, from measured per-run, per-block and
per-repetition costs (Costs); `cost_s` the part of one set of runs (a redone repetition).
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
    attempt: int = 1  # the attempt of its repetition (attempts.py: > 1 in a redone repetition)

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
    """Seconds a study spends outside its measurement windows, measured from the records'
    timestamps and the manifest of a fresh clone's lab.yml on this 2-core machine (R1,
    2026-12-03: 180 runs of 4 s + 0.5 s warm-up in 90 blocks, 1,283 s). Re-measure when the
    generator or the runner changes (how: lab.yml's comment)."""

    # the record's span less window and warm-up (mean 0.30: health check, samplers, log fetch,
    # parse) + the gap to the next run of its block (median 0.007)
    per_run_s: float = 0.31
    notebook_s: float = 0.35  # its run notebook, rendered after the matrix (warm; 62.6 s for 180)
    measure_notebook_s: float = 1.5  # notebooks: measure (a kernel per run; not re-measured)
    per_block_s: float = 0.48  # gap between blocks (mean 0.98) less the quiet check: mode down 0.10, up 0.34, nginx
    quiet_check_s: float = 0.5  # the quiet-machine check before each repetition (its window_s; 0.50 in R1)
    calibration_per_size_s: float = 121.0  # the reference's, when none is saved (242.4 s for two sizes)
    check_probe_per_size_s: float = 4.3  # a saved maximum's check: 3 s + 1 s warm-up + 0.3 s (derived, not timed)
    fixed_s: float = 10.0  # testbed up, precheck, host facts, manifest  } 22 s together in R1 (run-all's wall
    analysis_s: float = 12.0  # dataset, statistics, figures, report     } less calibration and the session)


def cost_s(study: Study, runs: Iterable[PlannedRun], costs: Costs = Costs()) -> float:
    """Estimated wall time of measuring `runs` block by block (no calibration, no analysis)."""
    runs = list(runs)
    window = float(study.workload.get("duration_s") or 0)
    warmup = float(study.workload.get("warmup_s") or 0)
    notebook = costs.measure_notebook_s if study.notebooks == "measure" else 0.0
    reps = len({(r.repetition, r.attempt) for r in runs})
    return (len(runs) * (window + warmup + costs.per_run_s + notebook) + len(blocks(runs)) * costs.per_block_s
            + reps * costs.quiet_check_s)


def after_matrix_s(study: Study, n_runs: int, costs: Costs = Costs()) -> float:
    """What follows the last run in `run-all`: notebooks rendered then (warm/fresh), the analysis."""
    notebook = costs.notebook_s if study.notebooks in ("warm", "fresh") else 0.0
    return n_runs * notebook + costs.analysis_s


def estimate(study: Study, runs: Iterable[PlannedRun], calibrate_sizes: int = 0, costs: Costs = Costs(),
             check_sizes: int = 0) -> dict:
    """Estimated wall time of running `runs` (seconds), the part inside measurement windows and
    its fraction; `calibrate_sizes`: how many sizes still need the reference's calibration,
    `check_sizes`: how many have a saved one to check. With `budget_s`, what it leaves for
    redone repetitions ("redo_room_s", negative: the plan alone is over)."""
    runs = list(runs)
    window = float(study.workload.get("duration_s") or 0)
    warmup = float(study.workload.get("warmup_s") or 0)
    n_blocks = len(blocks(runs))
    measuring = cost_s(study, runs, costs)
    parts = {
        "windows": len(runs) * window,
        "warmup": len(runs) * warmup,
        "per_run": measuring - len(runs) * (window + warmup) - n_blocks * costs.per_block_s,
        "modes": n_blocks * costs.per_block_s,
        "notebooks": after_matrix_s(study, len(runs), costs) - costs.analysis_s,
        "calibration": calibrate_sizes * costs.calibration_per_size_s + check_sizes * costs.check_probe_per_size_s,
        "fixed": costs.fixed_s + costs.analysis_s,
    }
    total = sum(parts.values())
    out = {"runs": len(runs), "blocks": n_blocks, "seconds": total, "measure_s": parts["windows"],
           "measure_fraction": parts["windows"] / total if total else 0.0, "parts": parts,
           "budget_s": study.budget_s}
    if study.budget_s is not None:
        out["redo_room_s"] = study.budget_s - total
    return out


def format_estimate(est: dict) -> str:
    line = (f"estimated duration: {est['seconds'] / 60:.1f} min for {est['runs']} runs in {est['blocks']} blocks "
            f"({100 * est['measure_fraction']:.0f} % inside measurement windows"
            + (f"; calibration {est['parts']['calibration']:.0f} s" if est["parts"]["calibration"] else "") + ")")
    if est.get("budget_s") is None:
        return line
    room = est["redo_room_s"]
    budget = f"; budget {est['budget_s'] / 60:.1f} min"
    return line + (f"{budget} leaves {room:.0f} s for redoing disturbed repetitions" if room >= 0
                   else f"{budget}: over by {-room:.0f} s, no repetition will be redone")
