"""Run a study: calibrate when needed, walk the matrix block by block, record, resume.

    summary = run_study("studies/lab.yml")          # what `invoke run-all` calls
    rows = study_status("studies/lab.yml")          # what `invoke status` prints

Where the measurement happens. Papermill starts a kernel per notebook (about 1.2 s here, plus
the imports and a fresh SSH connection per run), so a kernel per run would eat the lab study's
budget. The runner therefore measures in its own process, over one SSH connection per host,
with each mode set up once per block and nginx kept up for the block's runs (bench.BenchSession;
each run still health-checks it), and writes the record. `notebooks/run.ipynb` is then executed
by papermill as the lab-notebook view of each saved record, after the matrix (no measurement
runs then), with two warm kernels at once (runbook.py): 0.31 s per notebook instead of 0.56 s
inline, and none of it between runs. Any record without a notebook (e.g. from an interrupted
session) gets one at the end of the next session. Study key `notebooks`: warm (default) | fresh
| measure (the notebook does the measurement itself, a kernel per run: the slow, literal
design) | none. The numbers behind this choice come from benchmarks/pipeline_bench.py.

Robustness. A run's record is written atomically once it is complete; a run killed halfway
leaves at most a temporary file, removed on the next start, and the run is redone. Ctrl-C or
SIGTERM cancel the study: the current mode is torn down in a `finally` and finished records stay.
After SIGKILL nothing can run, so the next start tears down whatever mode the hosts say is up.
A failed run is recorded (status "failed" with its reason) and the study goes on, unless
stop_on_failure. Only failures of the hosts, the network or the workload are a run's reason
(RUN_FAILURES); anything else (a TypeError, a KeyError: a bug) stops the study loudly.
Every run's spec is validated before the first mode goes up, so a bad value stops the study
with one message and nothing changed. Missing workload keys take the documented defaults of
workload/defaults.py. A session in which every run failed is reported by pipeline.run_all,
which then exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import matrix
from . import policy as study_policy
from .config import RAW, RUNS, load_inventory
from .errors import CnibenchError, UnsupportedFeature

import asyncssh

from .matrix import PlannedRun
from .progress import Progress
from .provenance import (
    add_session,
    driver_facts,
    gather_host_facts,
    git_state,
    manifest_path,
    manifest_ref,
    new_manifest,
    new_session,
    now_iso,
    read_manifest,
    write_manifest,
)
from .results import SCHEMA_VERSION, iter_records, read_record, record_path, validate_record, write_record
from .runview import summary_line
from .study import Study, load_study
from .workload.specfields import bench_spec

# What may fail a run (recorded as its reason); any other exception is a bug and propagates.
RUN_FAILURES = (CnibenchError, OSError, asyncio.TimeoutError, asyncssh.Error)

log = logging.getLogger(__name__)


class StudyStopped(CnibenchError):
    """stop_on_failure: a run failed, the study stopped after tearing its mode down."""


class RequirementsNotMet(CnibenchError):
    """The study's `require:` (host tuning) does not hold on some host."""


# --- pure pieces -------------------------------------------------------------------------

def spec_fields(study: Study, run: PlannedRun) -> dict[str, Any]:
    """The BenchSpec of one run, as plain fields (the study's workload + the run's point)."""
    from .workload.defaults import with_defaults

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in study.workload.items()}
    return with_defaults({**fields, "mode": run.mode, "size": run.size, "rate": run.target_rate})


def failed_record(run: PlannedRun, reason: str, settings: Mapping[str, Any], started_at: str, ended_at: str, provenance: str | None) -> dict:
    """The record of a run that produced no measurement: its reason is the result."""
    return {
        "schema": SCHEMA_VERSION, "run_id": run.run_id, "study": run.study, "mode": run.mode,
        "size": run.size, "target_rate": run.target_rate, "load_fraction": run.load_fraction,
        "repetition": run.repetition, "generator": settings.get("generator", "h2load"),
        "settings": dict(settings), "status": "failed", "reason": reason,
        "started_at": started_at, "ended_at": ended_at, "achieved_rate": 0.0,
        "counts": {"requests": 0, "ok": 0, "errors": 0, "timeouts": 0}, "generator_cpu": None,
        "latency": {"unit": "us", "histogram": None, "histogram_uncorrected": None, "percentiles": {}},
        "timeline": [], "metrics": {}, "provenance": provenance, "order": run.order,
    }


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
    temps = sorted(p for p in study_raw.rglob(".rep*.json.*.tmp"))
    torn = sorted(p for p in study_raw.rglob("rep*.json") if read_record(p) is None)
    return temps, torn


# --- the study's records on disk ------------------------------------------------------------

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


# --- calibration ----------------------------------------------------------------------------

async def calibrated_max_rates(fleet, study: Study, inventory_name: str, manifest: dict | None, progress: Progress | None, out=print) -> dict | None:
    """{"reference", "max_rates": {size: rps}, "details", ["modes": {mode: {size: rps}}]}; None
    for absolute-rate studies that do not calibrate every mode.

    A study keeps the calibration it started with (in its manifest) so its run ids stay the same
    across resumes; otherwise a saved calibration of the inventory is used after one check probe
    at its maximum passes (workload/calibrate.check_probe), else the mode is calibrated. With
    `calibration: {modes: all}` (a sweep study) every mode is, so each has a measured maximum.
    """
    if manifest and manifest.get("calibration"):
        return manifest["calibration"]
    every = study.calibration.get("modes") == "all"
    if not study.uses_fractions and not every:
        return None
    found = await _calibrate_mode(fleet, study, inventory_name, study.reference, progress, out)
    result = {
        "reference": study.reference,
        "max_rates": {s: float(found[s]["max_rate"]) for s in study.sizes},
        "details": {s: _jsonable(found[s]) for s in study.sizes},
    }
    if every:
        result["modes"] = {study.reference: dict(result["max_rates"])}
        for mode in study.modes:
            if mode != study.reference:
                f = await _calibrate_mode(fleet, study, inventory_name, mode, progress, out)
                result["modes"][mode] = {s: float(f[s]["max_rate"]) for s in study.sizes}
                result.setdefault("mode_details", {})[mode] = {s: _jsonable(f[s]) for s in study.sizes}
    return result


def calibrate_kwargs(study: Study) -> dict:
    """The study's calibration settings as calibrate() keywords ('modes' is the runner's)."""
    return {k: v for k, v in study.calibration.items() if k != "modes"}


async def _calibrate_mode(fleet, study: Study, inventory_name: str, mode: str, progress, out) -> dict[str, dict]:
    """{size: calibration} of one mode: saved ones that pass their check probe, the rest calibrated."""
    calibrate, load_calibration, save_calibration = _calibration_api()
    from .workload.calibrate import check_probe

    saved = {}
    for size in study.sizes:
        cal = load_calibration(inventory_name, mode, size)
        if cal and cal.get("max_rate"):
            saved[size] = cal
    found: dict[str, dict] = {}
    from .modes import mode_down, mode_up

    kw = calibrate_kwargs(study)
    settings = mode_settings(study, mode)
    if progress:
        progress.status(f"calibration of {mode}")
    endpoint = await mode_up(fleet, mode, settings)
    try:
        for size in study.sizes:
            template = bench_spec({**study.workload, "mode": mode, "size": size, "rate": 1})
            if size in saved:
                chk = await check_probe(fleet, endpoint, template, float(saved[size]["max_rate"]), **kw)
                if chk["ok"]:
                    found[size] = {"source": "saved", **saved[size], "check": chk}
                    continue
                out(f"the saved maximum of {mode}/{size} ({saved[size]['max_rate']:.0f} req/s) failed its check probe: calibrating again")
            out(f"calibrating {mode}/{size}: probes of {kw.get('run_s', 3):g} s, bisection to 2 % (1-2 minutes)")
            result = await calibrate(fleet, endpoint, template, **kw, progress=_probe_printer(out, mode, size))
            save_calibration(inventory_name, mode, size, result)
            out(f"calibrated {mode}/{size}: maximum sustainable rate {result['max_rate']:.0f} req/s "
                f"({len(result['probes'])} probes)")
            found[size] = {"source": "calibrated", **result}
    finally:
        await mode_down(fleet, mode, settings)
    return found


def _probe_printer(out, mode: str, size: str):
    """One line per calibration probe, so a study's first minutes are not silent."""
    def show(e: dict) -> None:
        if "saturation" in e:
            out(f"  {mode}/{size}: closed-loop saturation {e['saturation'] or 0:.0f} req/s")
            return
        lat = "-" if e.get("latency_us") is None else f"{e['latency_us'] / 1000:.2f} ms"
        verdict = "disturbed, again" if e.get("disturbed") else ("ok" if e["ok"] else "too much")
        out(f"  {mode}/{size}: {e['rate']:.0f} req/s: p{e.get('percentile', 90):g} {lat}: {verdict}")
    return show


def _calibration_api():
    """(calibrate, load_calibration, save_calibration) from the workload (calibrate.py per the design)."""
    try:
        from .workload import calibrate as mod
    except ImportError:
        from .workload import bench as mod
    return mod.calibrate, mod.load_calibration, mod.save_calibration


def mode_settings(study: Study, mode: str):
    raw = study.mode_settings.get(mode)
    if not raw:
        return None
    from .modes import ModeSettings

    return ModeSettings(**raw)


def _jsonable(d: Mapping) -> dict:
    import json

    return json.loads(json.dumps(d, default=str))


# --- one run ------------------------------------------------------------------------------

async def measure(fleet, endpoint, study_name: str, run: PlannedRun, fields: Mapping[str, Any], provenance: str | None, limits=None, session=None) -> dict:
    """Run the workload for one planned run and return its finished record (not yet written).
    Any failure becomes a failed record with the reason; cancellation passes through.
    `limits`: the hosts' limits probed once per session (None: run_bench probes them).
    `session`: the block's workload.bench.BenchSession (nginx kept up between runs); None: a
    session of its own for this one run."""
    started = now_iso()
    try:
        from .workload.bench import run_bench, validate_spec

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
    from .hosts import Fleet
    from .modes import Endpoint

    planned = PlannedRun(
        run["run_id"], run["study"], spec["mode"], spec["size"], float(spec["rate"]), float(spec["rate"]),
        run.get("load_fraction"), int(run["repetition"]), int(run.get("order") or 0),
    )
    raw = Path(raw_dir) if raw_dir else RAW
    async with Fleet(load_inventory(inventory or None)) as fleet:
        rec = await measure(fleet, Endpoint.from_dict(endpoint), planned.study, planned, dict(spec), manifest_ref(planned.study))
    return write_record(raw, rec)


# --- the study ----------------------------------------------------------------------------

@dataclass
class Session:
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
    redone: int = 0  # attempts that were disturbed and run again
    interrupted_by: str | None = None  # SIGINT / SIGTERM received: no new run starts
    started: float = field(default_factory=time.monotonic)
    ended: str = "complete"
    first_failure: str | None = None  # the reason of the first failed run (for "every run failed")

    def summary(self, **extra) -> dict:
        wall = time.monotonic() - self.started
        return {
            "study": self.study, "planned": self.planned, "already_done": self.already_done,
            "executed": self.executed, **self.statuses, "redone": self.redone, "ended": self.ended,
            "wall_s": round(wall, 2), "measure_s": round(self.measure_s, 2), "warmup_s": round(self.warmup_s, 2),
            "runs_s": round(self.runs_s, 2), "notebooks_s": round(self.notebooks_s, 2),
            "modes_s": round(self.modes_s, 2), "calibration_s": round(self.calibration_s, 2),
            "measure_fraction": round(self.measure_s / wall, 4) if wall > 0 else 0.0,
            "first_failure": self.first_failure,
            **extra,
        }


async def run_study_async(
    study: Study,
    inventory_path: Path | None = None,
    *,
    stop_on_failure: bool = False,
    progress: bool = True,
    raw_dir: Path = RAW,
    runs_dir: Path = RUNS,
    notebooks: str | None = None,
    out=print,
) -> dict:
    from .hosts import Fleet
    from .modes import mode_down, mode_up

    inventory_path = Path(inventory_path or study.inventory)
    inventory = load_inventory(inventory_path)
    policy = notebooks or study.notebooks
    session = Session(study.name)
    raw_dir, runs_dir = Path(raw_dir), Path(runs_dir)
    mpath = manifest_path(raw_dir, study.name)
    ref = manifest_ref(study.name)
    clear_stale(raw_dir / study.name, out)

    book = None
    if policy in ("warm", "fresh"):
        from .runbook import RunBook

        book = RunBook(policy)
    elif policy == "measure":
        from .runbook import RunBook

        book = RunBook("fresh")

    # Ctrl-C and SIGTERM end the study: cancel, tear the mode down, keep the records. The signal
    # is also remembered and checked before every run, because a cancellation can be absorbed on
    # its way up (Python 3.11's asyncio.wait_for drops one that arrives as its inner await
    # completes): the study then stops at the next run instead of running to the end.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal(name: str) -> None:
        session.interrupted_by = name
        task.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig.name)
    except (NotImplementedError, RuntimeError):
        signals = ()

    manifest = read_manifest(mpath)
    bar: Progress | None = None
    sess: dict | None = None
    try:
        async with Fleet(inventory) as fleet:
            # Whatever an earlier, killed session left up goes first (idempotent when nothing is):
            # its nginx (still holding the port after a SIGKILL), then its mode.
            from .clean import sweep_workload

            for line in sum((await fleet.gather("sweep", sweep_workload)).values(), []):
                out(f"cleaned a leftover of an earlier session: {line}")
            await mode_down(fleet)
            from .workload.quiet import wait_quiet

            first_quiet = await wait_quiet(fleet, study.quiet, out, where="the study")
            t = time.monotonic()
            calibration = await calibrated_max_rates(fleet, study, inventory.name, manifest, None, out)
            session.calibration_s = time.monotonic() - t
            runs = matrix.plan(study, (calibration or {}).get("max_rates"))
            check_runs(study, runs)  # a bad value stops the study here, before any mode goes up
            if manifest is None:
                manifest = new_manifest(study, inventory, [r.run_id for r in runs], calibration)
            elif manifest.get("study_sha256") != study.digest:
                out(f"note: {study.path} changed since this study began; runs already recorded are kept, the rest follow the new file")
                manifest["order"] = [r.run_id for r in runs]
            manifest["calibration"] = calibration
            sess = new_session(study, inventory, git_state(), driver_facts(), await gather_host_facts(fleet))
            sess["quiet"] = [first_quiet]
            add_session(manifest, sess)
            write_manifest(mpath, manifest)
            check_requirements(study, sess["hosts"])

            from .workload.bench import probe_limits

            limits = await probe_limits(fleet)
            done = complete_statuses(raw_dir, study.name)
            redo = study_policy.redo_ids(iter_records(raw_dir, study.name), study.redo["max_attempts"])
            todo = matrix.pending(runs, set(done) - redo)  # disturbed runs with attempts left are redone
            session.planned, session.already_done = len(runs), len(runs) - len(todo)
            bar = Progress(len(runs), session.already_done, enabled=progress, label=study.name)
            if session.already_done:
                bar.line(f"{study.name}: {session.already_done} of {len(runs)} runs already recorded, {len(todo)} to go")

            for block in matrix.blocks(todo):
                if session.interrupted_by:
                    raise asyncio.CancelledError(f"{session.interrupted_by} received")
                await _run_block(fleet, study, block, inventory_path, book, policy, bar, session, sess, manifest, mpath, raw_dir, runs_dir, ref, stop_on_failure, mode_up, mode_down, limits)
        if session.interrupted_by:
            raise asyncio.CancelledError(f"{session.interrupted_by} received")
        if policy in ("warm", "fresh"):
            # The run notebooks are views of saved records: rendered once no measurement runs
            # (rendering between runs put ~0.6 s of non-measuring wall time into every run).
            t = time.monotonic()
            bar.status("run notebooks")
            first, book = book, None  # render_notebooks closes it
            await render_notebooks(policy, [r.run_id for r in runs], raw_dir, runs_dir, bar, first=first)
            session.notebooks_s += time.monotonic() - t
    except (asyncio.CancelledError, KeyboardInterrupt):
        session.ended = "interrupted"
        raise
    except StudyStopped:
        session.ended = "stopped-on-failure"
        raise
    except BaseException:
        session.ended = "crashed"
        raise
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if bar is not None:
            bar.close()
        if book is not None:
            book.close()
        if sess is not None and manifest is not None:
            sess["ended_at"], sess["ended"] = now_iso(), session.ended
            sess["summary"] = session.summary()
            write_manifest(mpath, manifest)
    return session.summary(manifest=str(mpath), raw_dir=str(raw_dir / study.name), runs_dir=str(runs_dir / study.name))


async def _mode_details(fleet) -> dict | None:
    """What the mode recorded in its state when it went up (modes/apply.py), or None."""
    try:
        from .modes.state import current_state

        return ((await current_state(fleet)) or {}).get("details") or None
    except Exception:  # a fake fleet in tests, an unreadable state: the manifest just lacks it
        return None


async def _run_block(fleet, study, block, inventory_path, book, policy, bar, session, sess, manifest, mpath, raw_dir, runs_dir, ref, stop_on_failure, mode_up, mode_down, limits) -> None:
    """One mode, set up once, for all its runs in one repetition; always torn down."""
    settings = mode_settings(study, block.mode)
    entry = {"repetition": block.repetition, "mode": block.mode, "runs": len(block.runs), "up_s": None, "down_s": None, "error": None}
    sess["mode_blocks"].append(entry)
    from .workload.quiet import wait_quiet

    bar.status(f"quiet-machine check before {block.mode}")
    entry["quiet"] = await wait_quiet(fleet, study.quiet, bar.line, where=f"{block.mode} (rep {block.repetition})")
    bar.status(f"{block.mode} up (rep {block.repetition})")
    t = time.monotonic()
    try:
        endpoint = await mode_up(fleet, block.mode, settings)
    except RUN_FAILURES as exc:  # unsupported here or broken: every run of the block records why
        session.modes_s += time.monotonic() - t
        entry["error"] = reason_of(exc)
        # Make sure nothing half-made stays (mode_up undoes its own steps; this is belt and braces).
        try:
            await mode_down(fleet, block.mode, settings)
        except Exception as down_exc:
            log.debug("mode_down after failed mode_up: %s", down_exc)
        for run in block.runs:
            now = now_iso()
            rec = failed_record(run, entry["error"], spec_fields(study, run), now, now, ref)
            _store(rec, 0.0, raw_dir, bar, session, sess, manifest, mpath)
        if stop_on_failure:
            raise StudyStopped(f"mode {block.mode} could not be set up ({entry['error']}); stopped as asked (--stop-on-failure)")
        return
    entry["up_s"] = round(time.monotonic() - t, 3)
    session.modes_s += time.monotonic() - t
    details = await _mode_details(fleet)
    if details:
        entry["details"] = details  # ebpf-redirect: the BPF object's source hash, clang, kernel
    from .workload.bench import BenchSession

    bench = BenchSession(fleet, endpoint, limits)  # nginx up once for the block's runs
    try:
        for run in block.runs:
            if session.interrupted_by:
                raise asyncio.CancelledError(f"{session.interrupted_by} received")
            bar.status(f"{block.mode} rep {block.repetition}")
            fields = spec_fields(study, run)
            t = time.monotonic()
            if policy == "measure":
                rec = await _measure_in_notebook(book, inventory_path, endpoint, fields, run, raw_dir, runs_dir, ref)
                took = time.monotonic() - t
            else:
                rec = await _measure_with_redo(fleet, endpoint, study, run, fields, ref, limits, bench, raw_dir, bar, session)
                took = time.monotonic() - t
            session.runs_s += took
            _store(rec, took, raw_dir, bar, session, sess, manifest, mpath, written=True)
            if stop_on_failure and rec["status"] == "failed":
                raise StudyStopped(f"run {rec['run_id']} failed ({rec['reason']}); stopped as asked (--stop-on-failure)")
    finally:
        t = time.monotonic()
        bar.status(f"{block.mode} down")
        await bench.close()  # bounded, never raises: the mode still goes down
        session.runs_s += time.monotonic() - t
        t = time.monotonic()
        await mode_down(fleet, block.mode, settings)
        entry["down_s"] = round(time.monotonic() - t, 3)
        session.modes_s += time.monotonic() - t


async def _measure_with_redo(fleet, endpoint, study, run, fields, ref, limits, bench, raw_dir, bar, session) -> dict:
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


def _store(rec, took, raw_dir, bar, session, sess, manifest, mpath, written=False) -> None:
    if not written:
        write_record(raw_dir, rec)
    window, warm = window_seconds(rec)
    session.measure_s += window
    session.warmup_s += warm
    session.executed += 1
    session.statuses[rec["status"]] = session.statuses.get(rec["status"], 0) + 1
    if rec["status"] == "failed" and session.first_failure is None:
        session.first_failure = f"{rec['run_id']}: {rec.get('reason')}"
    sess["executed"].append(rec["run_id"])
    write_manifest(mpath, manifest)
    bar.line(summary_line(rec, took or None))
    bar.advance()


NOTEBOOK_WORKERS = 2  # one kernel per core of the 2-core testbed: 0.31 s per notebook instead of 0.56


def notebooks_to_render(run_ids, raw_dir: Path, runs_dir: Path) -> list[str]:
    """Runs that measured something (a complete record, not failed: a failed run has nothing to
    plot, its reason is in the record and the summary line) and have no notebook, or one older
    than the record (a redone run)."""
    from .runbook import notebook_path

    out = []
    for rid in run_ids:
        path = record_path(raw_dir, rid)
        if not path.exists():
            continue
        nb = notebook_path(runs_dir, rid)
        if nb.exists() and nb.stat().st_mtime >= path.stat().st_mtime:
            continue
        rec = read_record(path)
        if rec is not None and rec.get("status") != "failed":
            out.append(rid)
    return out


async def render_notebooks(policy: str, run_ids, raw_dir: Path, runs_dir: Path, bar=None, workers: int = NOTEBOOK_WORKERS, first=None) -> int:
    """Render the missing run notebooks with `workers` kernels at once; returns how many.
    `first`: an already started RunBook to use as one of the workers. Every book is closed."""
    from .runbook import RunBook

    todo = notebooks_to_render(run_ids, raw_dir, runs_dir)
    books = [first] if first is not None else []
    if not todo:
        for b in books:
            b.close()
        return 0
    books += [RunBook(policy) for _ in range(max(1, min(workers, len(todo))) - len(books))]
    queue = list(reversed(todo))

    async def worker(book):
        while queue:
            await _render(book, runs_dir, raw_dir, queue.pop(), bar)

    try:
        await asyncio.gather(*(worker(b) for b in books))
    finally:
        for b in books:
            b.close()
    return len(todo)


async def _render(book, runs_dir, raw_dir, rid, bar) -> None:
    """The run's lab-notebook entry; a notebook error never fails the run (the record is the data)."""
    from .runbook import notebook_path

    try:
        await book.render(notebook_path(runs_dir, rid), {"record_path": str(record_path(raw_dir, rid))})
    except Exception as exc:
        if bar is not None:
                bar.line(f"  warning: the notebook of {rid} failed ({exc.__class__.__name__}); it is saved for a look, the record is fine")


async def _measure_in_notebook(book, inventory_path, endpoint, fields, run, raw_dir, runs_dir, ref) -> dict:
    """`notebooks: measure`: papermill executes run.ipynb, which measures and writes the record."""
    from .runbook import notebook_path

    started = now_iso()
    params = {
        "measure": True, "inventory": str(inventory_path), "endpoint": endpoint.to_dict(), "spec": dict(fields),
        "run": {"run_id": run.run_id, "study": run.study, "repetition": run.repetition, "load_fraction": run.load_fraction, "order": run.order},
        "raw_dir": str(raw_dir), "record_path": str(record_path(raw_dir, run.run_id)),
    }
    try:
        await book.render(notebook_path(runs_dir, run.run_id), params)
    except Exception as exc:
        rec = read_record(record_path(raw_dir, run.run_id))
        if rec is not None:
            return rec
        rec = failed_record(run, f"failed: the run notebook raised {exc.__class__.__name__}", fields, started, now_iso(), ref)
        write_record(raw_dir, rec)
        return rec
    rec = read_record(record_path(raw_dir, run.run_id))
    if rec is None:
        rec = failed_record(run, "failed: the run notebook wrote no record", fields, started, now_iso(), ref)
        write_record(raw_dir, rec)
    return rec


def run_study(study_path: Path | str, inventory_path: Path | str | None = None, stop_on_failure: bool = False, progress: bool = True, **kw) -> dict:
    """Run (or resume) a study; returns its summary. Ctrl-C / SIGTERM raise KeyboardInterrupt
    after the current mode is torn down; finished records stay. The hosts are leased for the
    session (lease.py): a second session on them is refused, naming this one."""
    from .lease import session_lease

    study = load_study(study_path)
    inv = Path(inventory_path) if inventory_path else None
    try:
        with session_lease(load_inventory(inv or study.inventory), f"run-study {study.name}"):
            return asyncio.run(run_study_async(study, inv, stop_on_failure=stop_on_failure, progress=progress, **kw))
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def check_runs(study: Study, runs) -> None:
    """Validate every planned run's spec (pure); ConfigError naming the study file and key."""
    from .errors import ConfigError
    from .workload.bench import validate_spec

    for run in runs:
        fields = spec_fields(study, run)
        try:
            validate_spec(bench_spec(fields))
        except ConfigError as exc:
            raise ConfigError(study.path, f"run {run.run_id}: {exc.key}", exc.problem, exc.fix) from None
        except TypeError as exc:  # e.g. a guard key BenchSpec does not know
            raise ConfigError(study.path, "workload", f"cannot make a run of it ({exc})", "Check the workload keys against BenchSpec's fields.") from None


# --- estimate -----------------------------------------------------------------------------

def estimate_study(study: Study, inventory_path: Path | None = None, raw_dir: Path = RAW) -> dict:
    """matrix.estimate for what is left of a study: its pending runs, and the reference's
    calibration unless the manifest or the inventory has one saved (no hosts are contacted)."""
    manifest = read_manifest(manifest_path(raw_dir, study.name))
    max_rates = ((manifest or {}).get("calibration") or {}).get("max_rates")
    need = 0
    if study.uses_fractions and not max_rates:
        saved = {}
        try:
            name = load_inventory(inventory_path or study.inventory).name
            load_calibration = _calibration_api()[1]
            saved = {s: float(c["max_rate"]) for s in study.sizes
                     if (c := load_calibration(name, study.reference, s)) and c.get("max_rate")}
        except CnibenchError:
            pass  # inventory not readable yet: count every size as to calibrate
        need = len(study.sizes) - len(saved)
        max_rates = {s: saved.get(s, 1e9) for s in study.sizes}  # placeholder ids: only counts matter
    runs = matrix.plan(study, max_rates)
    return matrix.estimate(study, matrix.pending(runs, complete_statuses(raw_dir, study.name)), need)


# --- status -------------------------------------------------------------------------------

def study_status(study_path: Path | str, raw_dir: Path = RAW) -> list[dict]:
    """Completion per (mode, size): planned, ok, invalid, failed, missing (no hosts needed).

    Run ids of a fraction study depend on its calibration; before one exists the rows count
    planned runs and nothing is recorded yet."""
    study = load_study(study_path)
    manifest = read_manifest(manifest_path(raw_dir, study.name))
    max_rates = ((manifest or {}).get("calibration") or {}).get("max_rates")
    if study.uses_fractions and not max_rates:
        max_rates = {s: 1e9 for s in study.sizes}  # placeholder ids: only the counts matter
    runs = matrix.plan(study, max_rates)
    rows = matrix.completion(runs, complete_statuses(raw_dir, study.name))
    records = list(iter_records(raw_dir, study.name))
    for row in rows:  # redo bookkeeping (study_policy.redo_counts): runs redone, still disturbed, flagged
        c = study_policy.redo_counts(r for r in records if (r["mode"], r["size"]) == (row["mode"], row["size"]))
        row.update(redone=c["redone"], disturbed=c["disturbed"], flagged=c["flagged_runs"])
    return sorted(rows, key=lambda r: (study.modes.index(r["mode"]), study.sizes.index(r["size"])))


def format_status(rows: list[dict]) -> str:
    cols = ("mode", "size", "planned", "ok", "invalid", "failed", "missing", "redone", "disturbed", "flagged")
    total = {c: sum(r.get(c, 0) for r in rows) for c in cols[2:]}
    lines = [f"{'mode':<18}{'size':<7}" + "".join(f"{c:>9}" for c in cols[2:])]
    for r in rows:
        lines.append(f"{r['mode']:<18}{r['size']:<7}" + "".join(f"{r.get(c, 0):>9}" for c in cols[2:]))
    lines.append(f"{'total':<25}" + "".join(f"{total[c]:>9}" for c in cols[2:]))
    done = total["ok"] + total["invalid"] + total["failed"]
    lines.append(f"{done} of {total['planned']} runs recorded ({100 * done / max(1, total['planned']):.0f} %)")
    return "\n".join(lines)
