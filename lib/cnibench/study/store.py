"""The records of one study on disk (data/raw/<study>/): the one writer of run records in study/.

    store = RecordStore(raw_dir, "lab")
    store.write(rec)                 # write-once, atomic (results.write_record)
    store.set_aside(rec)             # a disturbed attempt moved to attempts/ (policy.attempt_path)
    store.statuses()                 # {run_id: status} of every complete record
    store.clear_stale(out)           # temporary files removed, torn records put aside

A run killed halfway leaves at most a temporary file (removed by clear_stale on the next start)
and its run is redone. Every other module of study/ reads and writes records through this one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Mapping

from . import policy
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
        """Store a finished run's record once (FileExistsError if it has one)."""
        return write_record(self.raw_dir, rec)

    def records(self) -> Iterator[dict]:
        return iter_records(self.raw_dir, self.study)

    def statuses(self) -> dict[str, str]:
        return {rec["run_id"]: rec["status"] for rec in self.records()}

    def redo_ids(self, max_attempts: int) -> set[str]:
        return policy.redo_ids(self.records(), max_attempts)

    def set_aside(self, rec: Mapping) -> dict:
        """Move a run's record unchanged to its attempt path; what the next attempt lists about it."""
        src = self.path(rec["run_id"])
        dest = policy.attempt_path(src, policy.attempt_of(rec))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            raise FileExistsError(f"{dest} exists: attempts are write-once")
        src.replace(dest)
        return policy.attempt_entry(rec, dest)

    def earlier_attempts(self, run_id: str) -> list[dict]:
        """A disturbed run left by an earlier session, set aside now that it is redone: the
        attempts its next record lists ([] when the run has no record)."""
        old = self.read(run_id)
        if old is None:
            return []
        return list(old.get("earlier_attempts") or []) + [self.set_aside(old)]

    def stale(self) -> tuple[list[Path], list[Path]]:
        """(temporary files a killed write left, record files that are torn or incomplete)."""
        if not self.folder.exists():
            return [], []
        # results' temp-file writer names them .<file>.<random>.tmp: records and the manifest alike
        temps = sorted(self.folder.rglob(".*.json.*.tmp"))
        torn = sorted(p for p in self.folder.rglob("rep*.json") if read_record(p) is None)
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
