"""Run a study (`run_study("studies/lab.yml")`, what `invoke run-all` calls): calibrate when
needed, walk the matrix block by block, record, resume.

Where the measurement happens. Papermill starts a kernel per notebook (~1.2 s here), so the
runner measures in its own process, over one SSH connection per host, each mode set up once per
block and nginx kept up for the block's runs (workload/session.BenchSession; each run still
health-checks it), and writes the record. `notebooks/run.ipynb` is then executed by papermill as
the lab-notebook view of each saved record, after the matrix, with two warm kernels at once
(runbook.py: 0.31 s per notebook instead of 0.56 s inline; benchmarks/pipeline_bench.py); a record
without one gets it at the end of the next session. Study key `notebooks`: warm (default) | fresh
| measure (the notebook measures, a kernel per run: the slow, literal design) | none. After the
matrix, each disturbed repetition is redone whole while budget_s lasts (redo.py), which also caps
the quiet-machine waits.

Robustness. A run's record is written atomically once complete; a run killed halfway leaves at
most a temporary file, removed on the next start, and is redone. Ctrl-C or SIGTERM cancel the
study: the current mode is torn down in a `finally` and finished records stay. After SIGKILL the
next start tears down whatever mode the hosts say is up. A failed run is recorded (status
"failed" with its reason) and the study goes on, unless stop_on_failure. Only failures of the
hosts, the network or the workload are a run's reason (RUN_FAILURES); anything else (a bug)
stops the study loudly. Every run's spec is validated before the first mode goes up, so a bad
value stops the study with one message and nothing changed. Missing workload keys take the
defaults of workload/defaults.py. A session in which every run failed is reported by
pipeline.run_all, which then exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from . import matrix
from ..infra.config import RAW, RUNS, load_inventory
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
    read_manifest,
    write_manifest,
)
from ..results import failed_record, now_iso
from .run_notebooks import render_notebooks
from .attempts import attempt_of
from .redo import quiet_wait_cap, redo_disturbed
from .runner import (
    RUN_FAILURES,
    RunContext,
    StudyStopped,
    check_requirements,
    check_runs,
    mark_attempt,
    measure_run,
    mode_settings,
    reason_of,
    spec_fields,
    window_seconds,
)
from .counters import Counters
from .implementations import implementation_of
from .store import RecordStore
from .runview import summary_line
from .spec import Study, load_study
from .calibration import calibrated_max_rates
from .precheck import precheck_or_raise, refit_runs

log = logging.getLogger(__name__)


def run_study(study: Study | Path | str, inventory_path: Path | str | None = None, stop_on_failure: bool = False,
              progress: bool = True, inventory=None, leased: bool = False, **kw) -> dict:
    """Run (or resume) a study; returns its summary. Ctrl-C / SIGTERM raise KeyboardInterrupt
    after the current mode is torn down; finished records stay. The hosts are leased for the
    session (lease.py): a second session on them is refused, naming this one. `study` and
    `inventory` loaded by the caller are used as they are (never reloaded); `leased`: the
    caller holds the lease (pipeline.run_all), so it is not taken again."""
    from contextlib import nullcontext

    from ..infra.lease import session_lease

    study = study if isinstance(study, Study) else load_study(study)
    inv = Path(inventory_path) if inventory_path else None
    inventory = inventory or load_inventory(inv or study.inventory)
    held = nullcontext() if leased else session_lease(inventory, f"run-study {study.name}")
    try:
        with held:
            return asyncio.run(StudyRun(study, inv, inventory=inventory, stop_on_failure=stop_on_failure,
                                        progress=progress, **kw).run())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


class StudyRun:
    """One session of a study: owns its fleet, manifest, progress bar and counters, and walks
    the matrix block by block (a block: one mode, set up once, for its runs of one repetition)."""

    def __init__(self, study: Study, inventory_path: Path | None = None, *, stop_on_failure: bool = False,
                 progress: bool = True, raw_dir: Path = RAW, runs_dir: Path = RUNS,
                 notebooks: str | None = None, out=print, inventory=None, precheck: bool = False) -> None:
        self.study = study
        self.inventory_path = Path(inventory_path or study.inventory)
        self.inventory = inventory or load_inventory(self.inventory_path)
        self.policy = notebooks or study.notebooks
        self.counters = Counters(study.name)
        self.raw_dir, self.runs_dir = Path(raw_dir), Path(runs_dir)
        self.store = RecordStore(self.raw_dir, study.name)  # the one writer of this study's records
        self.precheck = precheck  # pipeline.run_all: the precheck over this session's fleet
        self.mpath = manifest_path(self.raw_dir, study.name)
        self.ref = manifest_ref(study.name)
        self.stop_on_failure, self.progress, self.out = stop_on_failure, progress, out
        self.book, self.bar = None, None  # the RunBook of the run notebooks (when rendered), the Progress
        self.manifest = self.manifest_session = None  # the manifest, this session's entry in it
        self.fleet = self.fitted = self.limits = self.mode_details = None  # fitted: precheck.StudyFit (CPU plan)
        # the (repetition, attempt) the last quiet-machine check was for; the longest wait the budget allows now
        self._quiet_for, self._quiet_cap = None, None

    async def run(self) -> dict:
        """Run (or resume) the study; returns the session's summary."""
        self.store.clear_stale(self.out)
        self.book = _open_book(self.policy)
        signals = self._catch_signals()
        self.manifest = read_manifest(self.mpath)
        try:
            runs = await self._measure_all()
            self._stop_if_interrupted()
            if self.policy in ("warm", "fresh"):
                await self._render_notebooks(runs)
        except (asyncio.CancelledError, KeyboardInterrupt):
            self.counters.ended = "interrupted"
            raise
        except StudyStopped:
            self.counters.ended = "stopped-on-failure"
            raise
        except BaseException:
            self.counters.ended = "crashed"
            raise
        finally:
            self._close(signals)
        return self.counters.summary(manifest=str(self.mpath), raw_dir=str(self.raw_dir / self.study.name),
                                    runs_dir=str(self.runs_dir / self.study.name))

    def _catch_signals(self) -> tuple:
        """Ctrl-C and SIGTERM end the study: cancel, tear the mode down, keep the records. The
        signal is also remembered and checked before every run, because a cancellation can be
        absorbed on its way up (Python 3.11's asyncio.wait_for drops one that arrives as its inner
        await completes): the study then stops at the next run instead of running to the end."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal(name: str) -> None:
            self.counters.interrupted_by = name
            task.cancel()

        signals = (signal.SIGINT, signal.SIGTERM)
        try:
            for sig in signals:
                loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError):
            signals = ()
        return signals

    def _stop_if_interrupted(self) -> None:
        if self.counters.interrupted_by:
            raise asyncio.CancelledError(f"{self.counters.interrupted_by} received")

    def _close(self, signals: tuple) -> None:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)
        if self.bar is not None:
            self.bar.close()
        if self.book is not None:
            self.book.close()
        if self.manifest_session is not None and self.manifest is not None:
            self.manifest_session["ended_at"], self.manifest_session["ended"] = now_iso(), self.counters.ended
            self.manifest_session["summary"] = self.counters.summary()
            write_manifest(self.mpath, self.manifest)

    async def _measure_all(self) -> list:
        """Every pending run, block by block, over one connection per host; returns the plan."""
        from ..infra.hosts import Fleet

        async with Fleet(self.inventory) as fleet:
            self.fleet = fleet
            if self.precheck:  # the hosts, then the study against their CPUs and limits (issue 28)
                self.study, self.fitted = await precheck_or_raise(fleet, self.out, self.study)
            await self._sweep_leftovers()
            runs = await self._plan_session()
            todo = await self._pending(runs)
            plan, after = matrix.blocks(todo), matrix.after_matrix_s(self.study, len(runs))
            for i, block in enumerate(plan):
                self._stop_if_interrupted()
                rest = matrix.cost_s(self.study, [r for b in plan[i:] for r in b.runs])
                self._quiet_cap = quiet_wait_cap(self.study, time.monotonic() - self.counters.started, rest, after)
                await self._run_block(block)
            self._quiet_cap = quiet_wait_cap(self.study, time.monotonic() - self.counters.started, 0.0, after)
            # whole repetitions, at the end, within budget_s (redo.py)
            await redo_disturbed(self.study, runs, self.store, self.counters, self.bar, self._run_block,
                                 self._stop_if_interrupted)
        return runs

    async def _sweep_leftovers(self) -> None:
        """Whatever an earlier, killed session left up goes first (idempotent when nothing is):
        its nginx (still holding the port after a SIGKILL), then its mode."""
        from ..modes.clean import sweep_workload
        from ..modes import mode_down

        for line in sum((await self.fleet.gather("sweep", sweep_workload)).values(), []):
            self.out(f"cleaned a leftover of an earlier session: {line}")
        await mode_down(self.fleet)

    async def _plan_session(self) -> list:
        """Quiet check, calibration, the plan, and this session in the manifest."""
        from ..workload.quiet import wait_quiet

        study, fleet = self.study, self.fleet
        first_quiet = await wait_quiet(fleet, study.quiet, self.out, where="the study")
        t = time.monotonic()
        calibration = await calibrated_max_rates(fleet, study, self.inventory.name, self.manifest, None, self.out)
        self.counters.calibration_s = time.monotonic() - t
        runs = matrix.plan(study, (calibration or {}).get("max_rates"))
        self.fitted = refit_runs(self.fitted, study, runs)  # a fraction study's calibrated rates (issue 28)
        from ..workload.bench import probe_limits

        self.limits = await probe_limits(fleet)
        check_runs(study, runs, self.limits)  # once per run; a bad value stops the study here, before any mode goes up
        if self.manifest is None:
            self.manifest = new_manifest(study, self.inventory, [r.run_id for r in runs], calibration)
        elif self.manifest.get("study_sha256") != study.digest:
            self.out(f"note: {study.path} changed since this study began; runs already recorded are kept, the rest "
                     "follow the new file")
            self.manifest["order"] = [r.run_id for r in runs]
        self.manifest["calibration"] = calibration
        self.manifest_session = new_session(study, self.inventory, git_state(), driver_facts(),
                                            await gather_host_facts(fleet))
        self.manifest_session.update(quiet=[first_quiet], cpu_plan=self.fitted and self.fitted.to_dict())
        add_session(self.manifest, self.manifest_session)
        write_manifest(self.mpath, self.manifest)
        check_requirements(study, self.manifest_session["hosts"])
        return runs

    async def _pending(self, runs: list) -> list:
        """The planned runs still to measure (first attempts; redone repetitions follow, redo.py);
        starts the bar."""
        study, counters = self.study, self.counters
        todo = matrix.pending(runs, self.store.statuses())
        counters.planned, counters.already_done = len(runs), len(runs) - len(todo)
        self.bar = Progress(len(runs), counters.already_done, enabled=self.progress, label=study.name)
        if counters.already_done:
            self.bar.line(f"{study.name}: {counters.already_done} of {len(runs)} runs already recorded, {len(todo)} to "
                          "go")
        return todo

    async def _render_notebooks(self, runs: list) -> None:
        """The run notebooks are views of saved records: rendered once no measurement runs
        (rendering between runs put ~0.6 s of non-measuring wall time into every run)."""
        t = time.monotonic()
        self.bar.status("run notebooks")
        first, self.book = self.book, None  # render_notebooks closes it
        await render_notebooks(self.policy, [r.run_id for r in runs], self.raw_dir, self.runs_dir, self.bar,
                               first=first)
        self.counters.notebooks_s += time.monotonic() - t

    async def _run_block(self, block) -> None:
        """One mode, set up once, for all its runs in one repetition; always torn down."""
        from ..modes import mode_down
        from ..workload.quiet import wait_quiet

        settings = mode_settings(self.study, block.mode, block.arm)
        entry = {"repetition": block.repetition, "mode": block.mode,
                 **({"arm": block.arm} if block.arm != block.mode else {}),
                 **({"attempt": block.runs[0].attempt} if block.runs[0].attempt > 1 else {}),
                 "runs": len(block.runs), "up_s": None, "down_s": None, "error": None}
        self.manifest_session["mode_blocks"].append(entry)
        rep = (block.repetition, block.runs[0].attempt)
        if rep != self._quiet_for:  # once per repetition (0.5 s each: per block it was 45 s of a lab study)
            self._quiet_for = rep
            self.bar.status(f"quiet-machine check before repetition {block.repetition}")
            quiet = self.study.quiet if self._quiet_cap is None else {  # no longer than the budget allows
                **self.study.quiet, "max_wait_s": min(self.study.quiet["max_wait_s"], self._quiet_cap)}
            entry["quiet"] = await wait_quiet(self.fleet, quiet, self.bar.line,
                                              where=f"{block.mode} (rep {block.repetition})")
        endpoint = await self._mode_up(block, settings, entry)
        if endpoint is None:
            return
        try:
            await self._measure_block(block, endpoint)
        finally:
            t = time.monotonic()
            await mode_down(self.fleet, block.mode, settings)
            entry["down_s"] = round(time.monotonic() - t, 3)
            self.counters.modes_s += time.monotonic() - t

    async def _mode_up(self, block, settings, entry: dict):
        """The block's mode up, or None after recording every run of the block as failed with
        the reason (unsupported here or broken)."""
        from ..modes import mode_down, mode_up

        self.bar.status(f"{block.mode} up (rep {block.repetition})")
        t = time.monotonic()
        try:
            entry["implementation"] = implementation_of(block.arm, block.mode)
            endpoint = await mode_up(self.fleet, block.mode, settings, implementation=entry["implementation"])
        except RUN_FAILURES as exc:
            self.counters.modes_s += time.monotonic() - t
            entry["error"] = reason_of(exc)
            # Make sure nothing half-made stays (mode_up undoes its own steps; this is belt and braces).
            try:
                await mode_down(self.fleet, block.mode, settings)
            except Exception as down_exc:
                log.debug("mode_down after failed mode_up: %s", down_exc)
            for run in block.runs:
                now = now_iso()
                rec = failed_record(run, entry["error"], spec_fields(self.study, run), now, now, self.ref)
                self._store(mark_attempt(rec, run), 0.0)
            if self.stop_on_failure:
                raise StudyStopped(f"mode {block.mode} could not be set up ({entry['error']}); stopped as asked "
                                   "(--stop-on-failure)")
            return None
        entry["up_s"] = round(time.monotonic() - t, 3)
        self.counters.modes_s += time.monotonic() - t
        details = self.mode_details = await _mode_details(self.fleet)
        if details:
            entry["details"] = details  # ebpf-redirect: the BPF object's source hash, clang, kernel
        return endpoint

    async def _measure_block(self, block, endpoint) -> None:
        """The block's runs, with nginx up once for all of them; nginx is closed at the end."""
        from ..workload.session import BenchSession

        counters = self.counters
        bench = BenchSession(self.fleet, endpoint, self.limits)
        ctx = RunContext(self.study, self.store, self.fleet, self.ref, self.limits, endpoint, bench, self.bar, counters,
                         self.policy, self.book, self.inventory_path, self.runs_dir, self.mode_details,
                         self.fitted and self.fitted.client_cpus(self.inventory))  # several clients: each one's CPUs
        try:
            for run in block.runs:
                self._stop_if_interrupted()
                self.bar.status(f"{block.arm} rep {block.repetition}")
                t = time.monotonic()
                rec = await measure_run(ctx, run)
                took = time.monotonic() - t
                counters.runs_s += took
                self._store(rec, took, written=True)
                if self.stop_on_failure and rec["status"] == "failed":
                    raise StudyStopped(f"run {rec['run_id']} failed ({rec['reason']}); stopped as asked "
                                       "(--stop-on-failure)")
        finally:
            t = time.monotonic()
            self.bar.status(f"{block.mode} down")
            await bench.close()  # bounded, never raises: the mode still goes down
            counters.runs_s += time.monotonic() - t

    def _store(self, rec: dict, took: float, written: bool = False) -> None:
        """Count a finished run, write its record (unless already written) and the manifest."""
        counters = self.counters
        if not written:
            self.store.write(rec)
        window, warm = window_seconds(rec)
        counters.measure_s += window
        if attempt_of(rec) > 1:
            counters.redone += 1
            counters.redo_measure_s += window
        counters.warmup_s += warm
        counters.executed += 1
        counters.statuses[rec["status"]] = counters.statuses.get(rec["status"], 0) + 1
        if rec["status"] == "failed" and counters.first_failure is None:
            counters.first_failure = f"{rec['run_id']}: {rec.get('reason')}"
        self.manifest_session["executed"].append(rec["run_id"])
        write_manifest(self.mpath, self.manifest)
        self.bar.line(summary_line(rec, took or None))
        self.bar.advance()


def _open_book(policy: str):
    """The RunBook the policy needs from the start (warm/fresh: rendered after the matrix;
    measure: a kernel per run); none for `none`."""
    if policy not in ("warm", "fresh", "measure"):
        return None
    from .runbook import RunBook

    return RunBook("fresh" if policy == "measure" else policy)


async def _mode_details(fleet) -> dict | None:
    """What the mode recorded in its state when it went up (modes/apply.py), or None."""
    try:
        from ..modes.engine.state import current_state

        return ((await current_state(fleet)) or {}).get("details") or None
    except Exception:  # a fake fleet in tests, an unreadable state: the manifest just lacks it
        return None
