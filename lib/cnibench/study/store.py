"""The records of one study on disk (data/raw/<study>/): the one writer of run records in study/.

    store = RecordStore(raw_dir, "lab")
    store.write(rec)                 # write-once, atomic (results.write_record); a redone
                                     # repetition's attempt to attempts/redo<a>-rep<k>.json
    store.statuses()                 # {run_id: status} of every complete first attempt
    store.all_attempts()             # first attempts and every redo attempt (attempts.py)
    store.analysis_paths()           # the files of each repetition's chosen attempt
    store.clear_stale(out)           # temporary files removed, torn records put aside

A run killed halfway leaves at most a temporary file (removed by clear_stale on the next start)
and its run is redone. Every other module of study/ reads and writes records through this one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Mapping

from . import attempts, policy
from ..results import iter_records, read_record, record_path, write_record


class RecordStore:
    def __init__(self, raw_dir: Path, study: str) -> None:
        self.raw_dir = Path(raw_dir)
        self.study = study

    @property
    def folder(self) -> Path:
        return self.raw_dir / self.study

    def path(self, run_id: str) -> Path:
        return record_path(self.raw_dir, run_id)

    def read(self, run_id: str) -> dict | None:
        return read_record(self.path(run_id))

    def write(self, rec: dict) -> Path:
        """Store a finished run's record once (FileExistsError if it has one); an attempt >= 2
        of a redone repetition goes to its redo path (attempts.redo_path)."""
        return write_record(self.raw_dir, rec, path=self.redo_path(rec) if attempts.attempt_of(rec) > 1 else None)

    def records(self) -> Iterator[dict]:
        return iter_records(self.raw_dir, self.study)

    def statuses(self) -> dict[str, str]:
        return {rec["run_id"]: rec["status"] for rec in self.records()}

    def redo_path(self, rec: Mapping) -> Path:
        return attempts.redo_path(self.path(rec["run_id"]), attempts.attempt_of(rec))

    def redo_records(self) -> Iterator[dict]:
        """Every stored attempt >= 2 of a redone repetition."""
        if not self.folder.exists():
            return
        for p in sorted(self.folder.rglob(f"{policy.ATTEMPTS_DIR}/redo*-rep*.json")):
            rec = read_record(p)
            if rec is not None:
                yield rec

    def all_attempts(self) -> list[dict]:
        return list(self.records()) + list(self.redo_records())

    def analysis_paths(self) -> list[Path]:
        """The record files the analysis reads: for every repetition, its chosen attempt's
        (attempts.choose: the first complete undisturbed one, else the first), one per run."""
        return sorted(self.path(r["run_id"]) if attempts.attempt_of(r) == 1 else self.redo_path(r)
                      for r in attempts.choose(self.all_attempts()))

    def stale(self) -> tuple[list[Path], list[Path]]:
        """(temporary files a killed write left, record files that are torn or incomplete)."""
        if not self.folder.exists():
            return [], []
        # results' temp-file writer names them .<file>.<random>.tmp: records and the manifest alike
        temps = sorted(self.folder.rglob(".*.json.*.tmp"))
        torn = sorted(p for pat in ("rep*.json", "redo*-rep*.json") for p in self.folder.rglob(pat)
                      if read_record(p) is None)
        return temps, torn

    def clear_stale(self, out=print) -> None:
        """Remove half-written files so their runs are redone; keep torn records aside for a look."""
        temps, torn = self.stale()
        for p in temps:
            p.unlink(missing_ok=True)
        for p in torn:
            aside = p.with_name(p.name + f".torn-{int(time.time())}")
            p.replace(aside)
            out(f"moved an unreadable record aside, its run will be redone: {aside}")


def stale_files(study_raw: Path) -> tuple[list[Path], list[Path]]:
    """RecordStore.stale of the study folder `study_raw`."""
    study_raw = Path(study_raw)
    return RecordStore(study_raw.parent, study_raw.name).stale()


def clear_stale(study_raw: Path, out=print) -> None:
    study_raw = Path(study_raw)
    RecordStore(study_raw.parent, study_raw.name).clear_stale(out)
