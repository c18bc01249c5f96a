"""The counters and timings of one study session (what run_study returns as its summary)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Counters:
    """Counters and timings of one run_study call (the summary it returns)."""

    study: str
    planned: int = 0
    already_done: int = 0
    executed: int = 0
    statuses: dict = field(default_factory=lambda: {"ok": 0, "invalid": 0, "failed": 0})
    measure_s: float = 0.0  # inside measurement windows
    warmup_s: float = 0.0  # load running, before the window
    runs_s: float = 0.0  # wall time of the runs themselves (incl. per-run setup)
    notebooks_s: float = 0.0
    modes_s: float = 0.0  # mode up + down
    calibration_s: float = 0.0
    redone: int = 0  # runs measured again in redone repetitions (attempts.py)
    redone_repetitions: list = field(default_factory=list)  # [[repetition, attempt], ...] redone this session
    redo_measure_s: float = 0.0  # the part of measure_s inside redone repetitions' windows
    budget_stop: str | None = None  # why a redo was not started (budget_s), if one was not
    interrupted_by: str | None = None  # SIGINT / SIGTERM received: no new run starts
    started: float = field(default_factory=time.monotonic)
    ended: str = "complete"
    first_failure: str | None = None  # the reason of the first failed run (for "every run failed")

    def summary(self, **extra) -> dict:
        wall = time.monotonic() - self.started
        return {
            "study": self.study, "planned": self.planned, "already_done": self.already_done,
            "executed": self.executed, **self.statuses, "redone": self.redone, "ended": self.ended,
            "redone_repetitions": list(self.redone_repetitions), "budget_stop": self.budget_stop,
            "redo_measure_s": round(self.redo_measure_s, 2),
            "wall_s": round(wall, 2), "measure_s": round(self.measure_s, 2), "warmup_s": round(self.warmup_s, 2),
            "runs_s": round(self.runs_s, 2), "notebooks_s": round(self.notebooks_s, 2),
            "modes_s": round(self.modes_s, 2), "calibration_s": round(self.calibration_s, 2),
            "measure_fraction": round(self.measure_s / wall, 4) if wall > 0 else 0.0,
            "measure_fraction_first": round((self.measure_s - self.redo_measure_s) / wall, 4) if wall > 0 else 0.0,
            "first_failure": self.first_failure,
            **extra,
        }
