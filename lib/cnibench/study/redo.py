"""The redo phase of a study session (issue 25): after every planned run, each disturbed
repetition is measured again as a whole (attempts.next_redo decides which, and in what order),
while the study's `budget_s` lasts. The decisions are attempts.py's and budget_left's (pure);
this module only walks them with the session's own block runner (study_run.StudyRun)."""

from __future__ import annotations

import time

from . import attempts, matrix
from .spec import Study


def budget_left(study: Study, elapsed_s: float, after_s: float) -> float | None:
    """Seconds the budget leaves for more redos: budget_s less the session's wall time so far
    and what still follows it (`after_s`: notebooks, analysis); None when there is no cap."""
    if study.budget_s is None:
        return None
    return study.budget_s - elapsed_s - after_s


def quiet_wait_cap(study: Study, elapsed_s: float, rest_s: float, after_s: float) -> float | None:
    """The longest quiet-machine wait the budget still allows (pure; None: no budget): budget_s
    less the wall time so far, the planned runs still to measure (`rest_s`) and what follows the
    matrix. Waits and redos share that room; once it is used up a check looks once and measures
    (on a machine that stays busy, 30 s waits before each repetition cost a noisy lab study
    280 s, over its budget)."""
    left = budget_left(study, elapsed_s, after_s)
    return None if left is None else max(0.0, left - rest_s)


def redo_allowed(study: Study, todo: list, elapsed_s: float, after_s: float,
                 costs: matrix.Costs = matrix.Costs()) -> tuple[bool, float, float | None]:
    """(start it?, its estimated seconds, seconds the budget leaves) for one redo (pure)."""
    cost = matrix.cost_s(study, todo, costs)
    left = budget_left(study, elapsed_s, after_s)
    return left is None or cost <= left, cost, left


async def redo_disturbed(study: Study, runs: list, store, counters, bar, run_block, check_interrupt) -> None:
    """Redo disturbed repetitions, whole, until none is left, attempts run out or the budget
    would be exceeded. The session's parts: its RecordStore, Counters and Progress, its block
    runner `run_block(block)` and `check_interrupt()` (raises once a signal arrived)."""
    max_attempts = study.redo["max_attempts"]
    after = matrix.after_matrix_s(study, len(runs))
    while True:
        check_interrupt()
        nxt = attempts.next_redo(study, runs, store.all_attempts(), max_attempts)
        if nxt is None:
            return
        k, a, todo = nxt
        ok, cost, left = redo_allowed(study, todo, time.monotonic() - counters.started, after)
        what = f"repetition {k} (attempt {a}, {len(todo)} runs, ~{cost:.0f} s)"
        if not ok:
            counters.budget_stop = (f"{what} not redone: it would exceed budget_s {study.budget_s:.0f} s "
                                    f"({max(0.0, left):.0f} s left)")
            bar.line(f"budget: {counters.budget_stop}")
            return
        bar.line(f"redo: {what}, every arm, a repetition of which a run was disturbed")
        bar.extend(len(todo))
        counters.redone_repetitions.append([k, a])
        for block in matrix.blocks(todo):
            check_interrupt()
            await run_block(block)
