"""Whole-repetition redo (issue 25): which repetitions are redone, in what order, and which
attempt of each repetition the analysis uses (pure; store.py and study_run.py do the I/O).

A repetition is *disturbed* when any of its runs is (policy.is_disturbed: a noise guard of the
generator's core made it invalid). A disturbed repetition is redone as a whole at the end of
the study, after every planned run, while the study's `budget_s` lasts and up to
`redo: {max_attempts}` attempts of it: every arm of that repetition, in a fresh seeded order
(`redo_runs`). A single run is never redone on its own, in place or out of its repetition:
keeping the quieter of two attempts of one run, beside its neighbours' first attempts, selects
on the outcome (issue 25).

Records. Attempt 1 is the planned run's record (<rate>/rep<k>.json). Attempt a >= 2 of the same
run is written once to <rate>/attempts/redo<a>-rep<k>.json (`redo_path`; the name does not start
with "rep", so a reader of rep*.json never sees it) with `repetition_attempt: a`. A session
killed during a redo leaves that attempt incomplete; the next session finishes it (the runs it
lacks, in the same seeded order) before deciding anything else, so no run is lost or repeated.

The analysis uses, for every repetition, exactly one complete attempt: the first undisturbed
one, else attempt 1 (`chosen_attempts`, `choose`; store.RecordStore.analysis_paths gives the
files). An incomplete attempt is never used.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

from . import policy
from .matrix import PlannedRun
from .spec import Study

REDO_KEY = "repetition_attempt"  # the record's attempt of its repetition (absent: 1)


def attempt_of(rec: Mapping) -> int:
    return int(rec.get(REDO_KEY) or 1)


def redo_path(record_file: Path, attempt: int) -> Path:
    """Where attempt `attempt` (>= 2) of a run's repetition is stored."""
    record_file = Path(record_file)
    return record_file.parent / policy.ATTEMPTS_DIR / f"redo{attempt}-{record_file.name}"


def table(records: Iterable[Mapping]) -> dict[int, dict[int, dict[str, Mapping]]]:
    """{repetition: {attempt: {run_id: record}}}."""
    out: dict[int, dict[int, dict[str, Mapping]]] = {}
    for r in records:
        out.setdefault(int(r["repetition"]), {}).setdefault(attempt_of(r), {})[r["run_id"]] = r
    return out


def disturbed(recs: Iterable[Mapping]) -> bool:
    return any(policy.is_disturbed(r) for r in recs)


def _chosen(attempts: Mapping[int, Mapping[str, Mapping]], expected: set[str]) -> int | None:
    """The first complete, undisturbed attempt (None: none is)."""
    for a in sorted(attempts):
        recs = attempts[a]
        if expected <= set(recs) and not disturbed(recs.values()):
            return a
    return None


def chosen_attempts(records: Iterable[Mapping]) -> dict[int, int]:
    """{repetition: the attempt the analysis uses}: the first complete undisturbed attempt, else 1.
    A repetition's runs are those of its attempt 1 (the plan)."""
    out = {}
    for k, attempts in table(records).items():
        expected = set(attempts.get(1, {}))
        out[k] = (_chosen(attempts, expected) or 1) if expected else min(attempts)
    return out


def choose(records: Iterable[Mapping]) -> list[Mapping]:
    """THE hook of the analysis: of all attempts' records, those of each repetition's chosen
    attempt (one record per planned run), in the order given."""
    records = list(records)
    pick = chosen_attempts(records)
    return [r for r in records if attempt_of(r) == pick[int(r["repetition"])]]


def redo_runs(study: Study, runs: Iterable[PlannedRun], k: int, attempt: int) -> list[PlannedRun]:
    """Every run of repetition k as attempt `attempt`: the arms in a fresh order seeded with
    (seed, k, attempt), each arm's cells too (pure)."""
    mine = [r for r in runs if r.repetition == k]
    rng = random.Random(f"{study.seed}/rep{k}/attempt{attempt}")
    arms = list(dict.fromkeys(r.arm for r in mine))
    rng.shuffle(arms)
    out = []
    for arm in arms:
        cells = [r for r in mine if r.arm == arm]
        rng.shuffle(cells)
        out.extend(cells)
    return [replace(r, attempt=attempt) for r in out]


def next_redo(study: Study, runs: list[PlannedRun], records: Iterable[Mapping],
              max_attempts: int) -> tuple[int, int, list[PlannedRun]] | None:
    """(repetition, attempt, runs still to measure) of the next redo, or None when nothing is
    left to redo (pure). An attempt a session left incomplete comes first, its missing runs in
    its seeded order; else the first disturbed repetition with attempts left, as a whole."""
    tab = table(records)
    reps = sorted({r.repetition for r in runs})
    for k in reps:
        expected = {r.run_id for r in runs if r.repetition == k}
        attempts = tab.get(k, {})
        last = max(attempts, default=1)
        if last > 1 and not expected <= set(attempts[last]):
            todo = [r for r in redo_runs(study, runs, k, last) if r.run_id not in attempts[last]]
            return k, last, todo
    for k in reps:
        expected = {r.run_id for r in runs if r.repetition == k}
        attempts = tab.get(k, {})
        if not expected <= set(attempts.get(1, {})) or _chosen(attempts, expected) is not None:
            continue
        last = max(attempts)
        if last < max_attempts:
            return k, last + 1, redo_runs(study, runs, k, last + 1)
    return None


def redo_counts(records: Iterable[Mapping]) -> dict[str, dict]:
    """{arm: {"redone": repetitions with a redo of this arm, "redo_runs": redo records,
    "disturbed": disturbed records, all attempts}} for `invoke status` and the report."""
    out: dict[str, dict] = {}
    for r in records:
        row = out.setdefault(r.get("arm") or r.get("mode"), {"redone": set(), "redo_runs": 0, "disturbed": 0})
        if attempt_of(r) > 1:
            row["redone"].add(int(r["repetition"]))
            row["redo_runs"] += 1
        row["disturbed"] += policy.is_disturbed(r)
    return {a: {**v, "redone": len(v["redone"])} for a, v in out.items()}
