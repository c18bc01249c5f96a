"""One run of a study: its spec from the study, its measurement (workload/session.py) and its
record, plus the checks and bookkeeping around it (stale files, statuses on disk, the study's
`require:`). The study as a whole is study_run.py.

A run's record is written atomically once it is complete; a run killed halfway leaves at most a
temporary file, removed on the next start, and the run is redone. Only failures of the hosts,
the network or the workload are a run's reason (RUN_FAILURES); anything else (a TypeError, a
KeyError: a bug) stops the study loudly. Missing workload keys take the documented defaults of
workload/defaults.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import asyncssh

from . import policy as study_policy
from ..infra.config import RAW, load_inventory
from ..errors import CnibenchError, UnsupportedFeature
from .matrix import PlannedRun
from .provenance import manifest_ref
from ..results import failed_record, iter_records, now_iso, read_record, record_path, validate_record, write_record
from .runview import summary_line
from .spec import Study
from ..workload.specfields import bench_spec

log = logging.getLogger(__name__)

# What may fail a run (recorded as its reason); any other exception is a bug and propagates.
RUN_FAILURES = (CnibenchError, OSError, asyncio.TimeoutError, asyncssh.Error)


class StudyStopped(CnibenchError):
    """stop_on_failure: a run failed, the study stopped after tearing its mode down."""


class RequirementsNotMet(CnibenchError):
    """The study's `require:` (host tuning) does not hold on some host."""


def spec_fields(study: Study, run: PlannedRun) -> dict[str, Any]:
    """The BenchSpec of one run, as plain fields (the study's workload + the run's point)."""
    from ..workload.defaults import with_defaults

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in study.workload.items()}
    return with_defaults({**fields, "mode": run.mode, "size": run.size, "rate": run.target_rate})


def finish_record(rec: dict, run: PlannedRun, provenance: str | None) -> dict:
    """The workload's record with the study's bookkeeping: order and provenance link."""
    rec = dict(rec)
    rec.setdefault("load_fraction", run.load_fraction)
    rec["order"] = run.order
    rec["provenance"] = provenance
    return rec


def reason_of(exc: BaseException) -> str:
    kind = "unsupported" if isinstance(exc, UnsupportedFeature) else "failed"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return f"{kind}: {text}" if isinstance(exc, CnibenchError) else f"{kind}: {exc.__class__.__name__}: {text}"


def window_seconds(rec: dict) -> tuple[float, float]:
    """(measurement window, warm-up) seconds a record's load covered; (0, 0) when it failed."""
    if rec.get("status") == "failed":
        return 0.0, 0.0
    s = rec.get("settings") or {}
    return float(s.get("duration_s") or 0), float(s.get("warmup_s") or 0)


def stale_files(study_raw: Path) -> tuple[list[Path], list[Path]]:
    """(temporary files a killed write left, record files that are torn or incomplete)."""
    if not study_raw.exists():
        return [], []
    # results' temp-file writer names them .<file>.<random>.tmp: records and the manifest alike
    temps = sorted(p for p in study_raw.rglob(".*.json.*.tmp"))
    torn = sorted(p for p in study_raw.rglob("rep*.json") if read_record(p) is None)
    return temps, torn


def clear_stale(study_raw: Path, out=print) -> None:
    """Remove half-written files so their runs are redone; keep torn records aside for a look."""
    temps, torn = stale_files(study_raw)
    for p in temps:
        p.unlink(missing_ok=True)
    for p in torn:
        aside = p.with_name(p.name + f".torn-{int(time.time())}")
        p.replace(aside)
        out(f"moved an unreadable record aside, its run will be redone: {aside}")


def complete_statuses(raw_dir: Path, study: str) -> dict[str, str]:
    return {rec["run_id"]: rec["status"] for rec in iter_records(raw_dir, study)}


def mode_settings(study: Study, mode: str):
    raw = study.mode_settings.get(mode)
    if not raw:
        return None
    from ..modes import mode_settings as settings_of

    return settings_of(mode, raw)


async def measure(fleet, endpoint, study_name: str, run: PlannedRun, fields: Mapping[str, Any], provenance: str | None, limits=None, session=None) -> dict:
    """Run the workload for one planned run and return its finished record (not yet written).
    Any failure becomes a failed record with the reason; cancellation passes through.
    `limits`: the hosts' limits probed once per session (None: run_bench probes them).
    `session`: the block's workload.session.BenchSession (nginx kept up between runs); None: a
    session of its own for this one run."""
    started = now_iso()
    try:
        from ..workload.bench import validate_spec
        from ..workload.session import run_bench

        spec = bench_spec(fields)
        validate_spec(spec)
        kw = dict(run_id=run.run_id, study=study_name, repetition=run.repetition, load_fraction=run.load_fraction)
        if session is not None:
            rec = await session.run(spec, **kw)
        else:
            rec = await run_bench(fleet, endpoint, spec, limits=limits, **kw)
        rec = finish_record(rec, run, provenance)
        problems = validate_record(rec)
        if problems:
            return failed_record(run, f"failed: the workload returned an incomplete record ({'; '.join(problems)})", fields, started, now_iso(), provenance)
        return rec
    except RUN_FAILURES as exc:  # a failed run is a result; the study goes on (a bug is not: it propagates)
        log.debug("run %s failed", run.run_id, exc_info=True)
        return failed_record(run, reason_of(exc), fields, started, now_iso(), provenance)


async def measure_and_record(inventory: str | None, endpoint: Mapping, spec: Mapping, run: Mapping, raw_dir: str | Path | None = None) -> Path:
    """The run notebook's `measure` path: one run over its own connections, record written."""
    from ..infra.hosts import Fleet
    from ..modes import Endpoint

    planned = PlannedRun(
        run["run_id"], run["study"], spec["mode"], spec["size"], float(spec["rate"]), float(spec["rate"]),
        run.get("load_fraction"), int(run["repetition"]), int(run.get("order") or 0),
    )
    raw = Path(raw_dir) if raw_dir else RAW
    async with Fleet(load_inventory(inventory or None)) as fleet:
        rec = await measure(fleet, Endpoint.from_dict(endpoint), planned.study, planned, dict(spec), manifest_ref(planned.study))
    return write_record(raw, rec)


async def measure_with_redo(fleet, endpoint, study, run, fields, ref, limits, bench, raw_dir, bar, session) -> dict:
    """Measure a run and write its record; a disturbed run is run again while the study's redo
    policy allows (policy.py): earlier attempts are moved to attempts/, the last one is the run's."""
    path = record_path(raw_dir, run.run_id)
    earlier: list[dict] = []
    old = read_record(path)
    if old is not None:  # a disturbed run left by an earlier session: redone now
        earlier = list(old.get("earlier_attempts") or []) + [study_policy.set_aside(path, old)]
    while True:
        rec = await measure(fleet, endpoint, study.name, run, fields, ref, limits, session=bench)
        if earlier:
            rec = study_policy.next_attempt(rec, earlier)
        write_record(raw_dir, rec)
        if not study_policy.should_redo(rec, study.redo["max_attempts"]):
            return rec
        session.redone += 1
        bar.line(summary_line(rec, None) + f"  (disturbed: attempt {study_policy.attempt_of(rec) + 1} of {study.redo['max_attempts']} follows)")
        earlier = earlier + [study_policy.set_aside(path, rec)]


def check_requirements(study: Study, hosts: Mapping[str, Mapping]) -> None:
    """The study's `require:` against each host's recorded tuning; one clear error listing every
    mismatch, before any run (the hosts are not changed)."""
    problems = [p for name, facts in hosts.items() for p in study_policy.tuning_mismatches(study.require, (facts or {}).get("tuning"), name)]
    if problems:
        raise RequirementsNotMet(f"the hosts do not meet {study.path}'s 'require': " + "; ".join(problems)
                                 + ". Tune them (e.g. cpupower frequency-set -g performance), or relax 'require'.")


def check_runs(study: Study, runs) -> None:
    """Validate every planned run's spec (pure); ConfigError naming the study file and key."""
    from ..errors import ConfigError
    from ..workload.bench import validate_spec

    for run in runs:
        fields = spec_fields(study, run)
        try:
            validate_spec(bench_spec(fields))
        except ConfigError as exc:
            raise ConfigError(study.path, f"run {run.run_id}: {exc.key}", exc.problem, exc.fix) from None
        except TypeError as exc:  # e.g. a guard key BenchSpec does not know
            raise ConfigError(study.path, "workload", f"cannot make a run of it ({exc})", "Check the workload keys against BenchSpec's fields.") from None
