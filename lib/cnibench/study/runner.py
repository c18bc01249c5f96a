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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import asyncssh

from . import policy as study_policy
from ..infra.config import RAW, load_inventory
from ..errors import CnibenchError, UnsupportedFeature
from .attempts import REDO_KEY
from .implementations import implementation_of, plugin_version
from .matrix import PlannedRun
from .provenance import manifest_ref
from ..results import failed_record, now_iso, validate_record
from .spec import Study
from . import variants
from .store import RecordStore
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


def finish_record(rec: dict, run: PlannedRun, provenance: str | None, mode_details: Mapping | None = None) -> dict:
    """The workload's record with the study's bookkeeping: arm, order and provenance link."""
    rec = dict(rec)
    rec["arm"] = run.arm
    rec["implementation"] = implementation_of(run.arm, run.mode)
    if plugin_version(mode_details):
        rec["implementation_version"] = plugin_version(mode_details)
    rec.setdefault("load_fraction", run.load_fraction)
    rec["order"] = run.order
    rec["provenance"] = provenance
    return rec


def mark_attempt(rec: dict, run: PlannedRun) -> dict:
    """A redone repetition's run says which attempt it is (attempts.py), failed or not."""
    if run.attempt > 1:
        rec[REDO_KEY] = run.attempt
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


def mode_settings(study: Study, mode: str, arm: str | None = None):
    raw = {**study.mode_settings.get(mode, {}), **variants.settings_of(study.variants, mode, arm)}
    if not raw:
        return None
    from ..modes import mode_settings as settings_of

    return settings_of(mode, raw)


@dataclass
class RunContext:
    """What measuring a planned run needs, made once per study session and passed down (the
    study, the store, the fleet: never reloaded or reopened per run). The block's fields
    (endpoint, bench) change per block; `counters` is study_run.Session."""

    study: Study
    store: RecordStore
    fleet: Any = None
    ref: str | None = None  # the manifest's path relative to data/raw (provenance)
    limits: Any = None  # the hosts' limits, probed once per session
    endpoint: Any = None
    bench: Any = None  # the block's workload.session.BenchSession (nginx kept up between runs)
    bar: Any = None
    counters: Any = None
    notebooks: str = "warm"
    book: Any = None  # the RunBook when the notebooks measure
    inventory_path: Path | None = None
    runs_dir: Path | None = None
    mode_details: Any = None  # what the block's mode recorded when it went up (e.g. the CNI plugins' versions)
    client_cpus: Any = None  # several clients: {client: its generator CPUs} (precheck.StudyFit.client_cpus)


async def measure(ctx: RunContext, run: PlannedRun, fields: Mapping[str, Any]) -> dict:
    """Run the workload for one planned run and return its finished record (not yet written).
    Any failure becomes a failed record with the reason; cancellation passes through. The spec
    was validated once, when the study was planned (check_runs)."""
    started = now_iso()
    try:
        from ..workload.session import run_bench

        spec = bench_spec(fields)
        kw = dict(run_id=run.run_id, study=run.study, repetition=run.repetition, load_fraction=run.load_fraction,
                  validated=True)
        if ctx.client_cpus and len(ctx.client_cpus) > 1 and ctx.bench is not None:  # several clients (issue 28)
            from ..workload.multiclient import run_clients

            kw.pop("validated")
            rec = await run_clients(ctx.bench, spec, list(ctx.client_cpus), client_cpus=ctx.client_cpus, **kw)
        elif ctx.bench is not None:
            rec = await ctx.bench.run(spec, **kw)
        else:
            rec = await run_bench(ctx.fleet, ctx.endpoint, spec, limits=ctx.limits, **kw)
        rec = finish_record(rec, run, ctx.ref, ctx.mode_details)
        # the node it ran on (variants.py); a notebook's own run (measure_and_record) has no study
        arm_settings = mode_settings(ctx.study, run.mode, run.arm) if ctx.study is not None else None
        rec["node"] = arm_settings.node if arm_settings is not None else rec.get("node", "bare")
        problems = validate_record(rec)
        if problems:
            return failed_record(run, incomplete_why(rec, problems), fields, started, now_iso(), ctx.ref)
        return rec
    except RUN_FAILURES as exc:  # a failed run is a result; the study goes on (a bug is not: it propagates)
        log.debug("run %s failed", run.run_id, exc_info=True)
        return failed_record(run, reason_of(exc), fields, started, now_iso(), ctx.ref)


def incomplete_why(rec: dict, problems: list[str]) -> str:
    """A failed run's reason when the workload's record is incomplete, in the user's terms: what
    the generator counted, and where to look (pure)."""
    c = rec.get("counts") or {}
    if any(p.startswith("no latency histogram") for p in problems):
        said = f"; the workload said: {rec['reason']}" if rec.get("reason") else ""
        notes = f"; notes: {'; '.join(map(str, rec['notes']))}" if rec.get("notes") else ""
        return (f"failed: no latency was measured at {float(rec.get('target_rate') or 0):,.0f} req/s: "
                f"{c.get('ok', 0):,} of {c.get('requests', 0):,} requests answered ({c.get('errors', 0):,} errors, "
                f"{c.get('timeouts', 0):,} timeouts){said}{notes}. If the hosts cannot carry this load, "
                "`invoke hosts.check --study <study>` says which limit it exceeds")
    return f"failed: the workload returned an incomplete record ({'; '.join(problems)})"


async def measure_and_record(inventory: str | None, endpoint: Mapping, spec: Mapping, run: Mapping,
                             raw_dir: str | Path | None = None) -> Path:
    """The run notebook's `measure` path: one run over its own connections, record written."""
    from ..infra.hosts import Fleet
    from ..modes import Endpoint

    planned = PlannedRun(
        run["run_id"], run["study"], spec["mode"], spec["size"], float(spec["rate"]), float(spec["rate"]),
        run.get("load_fraction"), int(run["repetition"]), int(run.get("order") or 0), run.get("arm") or "",
    )
    store = RecordStore(Path(raw_dir) if raw_dir else RAW, planned.study)
    async with Fleet(load_inventory(inventory or None)) as fleet:
        ctx = RunContext(study=None, store=store, fleet=fleet, ref=manifest_ref(planned.study),
                         endpoint=Endpoint.from_dict(endpoint))
        rec = await measure(ctx, planned, dict(spec))
    return store.write(rec)


async def measure_run(ctx: RunContext, run: PlannedRun) -> dict:
    """The one way a study measures a planned run: in-process (or through its notebook with
    `notebooks: measure`, for first attempts), its record written once by the store. Never
    redone here: a disturbed repetition is redone as a whole at the end (attempts.py)."""
    fields = spec_fields(ctx.study, run)
    if ctx.notebooks == "measure" and run.attempt == 1:
        from .run_notebooks import measure_in_notebook

        return await measure_in_notebook(ctx, run, fields)
    rec = mark_attempt(await measure(ctx, run, fields), run)
    ctx.store.write(rec)
    return rec


def check_requirements(study: Study, hosts: Mapping[str, Mapping]) -> None:
    """The study's `require:` against each host's recorded tuning; one clear error listing every
    mismatch, before any run (the hosts are not changed)."""
    problems = [p for name, facts in hosts.items()
                for p in study_policy.tuning_mismatches(study.require, (facts or {}).get("tuning"), name)]
    if problems:
        raise RequirementsNotMet(f"the hosts do not meet {study.path}'s 'require': " + "; ".join(problems)
                                 + ". Tune them (e.g. cpupower frequency-set -g performance), or relax 'require'.")


def check_runs(study: Study, runs, limits=None) -> None:
    """Validate every planned run's spec, once (against the hosts' limits when given); a
    ConfigError naming the study file and key. The runs are not validated again."""
    from ..errors import ConfigError
    from ..workload.bench import validate_spec

    for run in runs:
        fields = spec_fields(study, run)
        try:
            validate_spec(bench_spec(fields), limits)
        except ConfigError as exc:
            raise ConfigError(study.path, f"run {run.run_id}: {exc.key}", exc.problem, exc.fix) from None
        except TypeError as exc:  # e.g. a guard key BenchSpec does not know
            raise ConfigError(study.path, "workload", f"cannot make a run of it ({exc})",
                              "Check the workload keys against BenchSpec's fields.") from None
