"""What is left of a study, without hosts: its estimate (`invoke estimate`) and its completion
per mode and size (`invoke status`), from the study file, its manifest and its records."""

from __future__ import annotations

from pathlib import Path

from . import attempts, matrix
from . import policy as study_policy
from ..infra.config import RAW, load_inventory
from ..errors import CnibenchError
from .provenance import manifest_path, read_manifest
from .store import RecordStore
from .spec import Study, load_study
from .calibration import calibration_api


def estimate_study(study: Study, inventory_path: Path | None = None, raw_dir: Path = RAW, inventory=None) -> dict:
    """matrix.estimate for what is left of a study: its pending runs, and the reference's
    calibration unless the manifest or the inventory has one saved (no hosts are contacted)."""
    manifest = read_manifest(manifest_path(raw_dir, study.name))
    max_rates = ((manifest or {}).get("calibration") or {}).get("max_rates")
    need = check = 0
    if study.uses_fractions and not max_rates:
        saved = {}
        try:
            name = (inventory or load_inventory(inventory_path or study.inventory)).name
            load_calibration = calibration_api()[1]
            saved = {s: float(c["max_rate"]) for s in study.sizes
                     if (c := load_calibration(name, study.reference, s)) and c.get("max_rate")}
        except CnibenchError:
            pass  # inventory not readable yet: count every size as to calibrate
        need, check = len(study.sizes) - len(saved), len(saved)  # a saved maximum costs its check probe
        max_rates = {s: saved.get(s, 1e9) for s in study.sizes}  # placeholder ids: only counts matter
    runs = matrix.plan(study, max_rates)
    return matrix.estimate(study, matrix.pending(runs, RecordStore(raw_dir, study.name).statuses()), need,
                           check_sizes=check)


def study_status(study_path: Path | str, raw_dir: Path = RAW) -> list[dict]:
    """Completion per (mode, size): planned, ok, invalid, failed, missing (first attempts), and
    redo counts by arm: repetitions redone, their runs, disturbed and flagged runs of the attempts
    the analysis uses (no hosts needed).

    Run ids of a fraction study depend on its calibration; before one exists the rows count
    planned runs and nothing is recorded yet."""
    study = load_study(study_path)
    manifest = read_manifest(manifest_path(raw_dir, study.name))
    max_rates = ((manifest or {}).get("calibration") or {}).get("max_rates")
    if study.uses_fractions and not max_rates:
        max_rates = {s: 1e9 for s in study.sizes}  # placeholder ids: only the counts matter
    runs = matrix.plan(study, max_rates)
    store = RecordStore(raw_dir, study.name)
    rows = matrix.completion(runs, store.statuses())
    records = store.all_attempts()
    chosen = attempts.choose(records)
    for row in rows:  # redo bookkeeping: repetitions redone (attempts.redo_counts), disturbed and flagged runs
        mine = [r for r in records if (r["arm"], r["size"]) == (row["mode"], row["size"])]
        redo = attempts.redo_counts(mine).get(row["mode"], {})
        used = study_policy.redo_counts(r for r in chosen if (r["arm"], r["size"]) == (row["mode"], row["size"]))
        row.update(redone=redo.get("redone", 0), redo_runs=redo.get("redo_runs", 0), disturbed=used["disturbed"],
                   flagged=used["flagged_runs"])
    arms = [a for a, _ in study.arms]
    return sorted(rows, key=lambda r: (arms.index(r["mode"]), study.sizes.index(r["size"])))


def format_status(rows: list[dict]) -> str:
    cols = ("mode", "size", "planned", "ok", "invalid", "failed", "missing", "redone", "redo_runs", "disturbed",
            "flagged")
    total = {c: sum(r.get(c, 0) for r in rows) for c in cols[2:]}
    lines = [f"{'mode':<18}{'size':<7}" + "".join(f"{c:>9}" for c in cols[2:])]
    for r in rows:
        lines.append(f"{r['mode']:<18}{r['size']:<7}" + "".join(f"{r.get(c, 0):>9}" for c in cols[2:]))
    lines.append(f"{'total':<25}" + "".join(f"{total[c]:>9}" for c in cols[2:]))
    done = total["ok"] + total["invalid"] + total["failed"]
    lines.append(f"{done} of {total['planned']} runs recorded ({100 * done / max(1, total['planned']):.0f} %)")
    lines.append("redone: repetitions of the arm measured again as a whole (a run of theirs was disturbed), "
                 "redo_runs: their runs; disturbed, flagged: in the attempts the analysis uses")
    return "\n".join(lines)


def require_records(name: str) -> None:
    """Refuse an analysis of a study with no run records, saying how to make them."""
    from ..errors import CnibenchError
    from ..infra import config

    if not (config.RAW / name).is_dir():
        raise CnibenchError(f"no run records for study '{name}' in {config.RAW / name}: run "
                            f"`invoke run-all --study {name}` first")
