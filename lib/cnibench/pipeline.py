"""`invoke run-all`: testbed up (when the inventory is the testbed) -> precheck -> the study's
runs (calibrating first when needed) -> analysis -> report -> testbed down (unless keep).

Every step prints what it did; the last line says where the report is.
"""

from __future__ import annotations

import time
from pathlib import Path

from .infra import config
from .errors import CnibenchError
from .study.spec import load_study


def analyse(study_name: str, raw_dir: Path = config.RAW, out_dir: Path | None = None, out=print,
            scratch: Path | None = None) -> Path:
    """The analysis, figures and report of a study.
    `scratch`: keep processed data and figures there instead of data/processed and figures/."""
    from .analysis.report import build_all  # here, not at the top: pandas and matplotlib load slowly
    kw = {}
    if scratch is not None:
        kw = {"processed_dir": Path(scratch) / "processed" / study_name,
              "figures_dir": Path(scratch) / "figures" / study_name}
    return Path(build_all(study_name, raw_dir, out_dir or config.REPORTS / study_name, **kw))


async def precheck(inventory_path: Path, out=print) -> None:
    """The precheck alone, over connections of its own (run_all does it over the study's fleet)."""
    from .infra.hosts import Fleet
    from .study.precheck import precheck_or_raise

    async with Fleet(config.load_inventory(inventory_path)) as fleet:
        await precheck_or_raise(fleet, out)


def run_all(study_path, inventory_path=None, keep: bool = False, stop_on_failure: bool = False, progress: bool = True,
            out=print, raw_dir: Path = config.RAW, runs_dir: Path = config.RUNS, reports_dir: Path = config.REPORTS,
            notebooks: str | None = None) -> dict:
    """The whole job; returns the study summary plus the report path (None if not built).
    The directories are parameters for tests and benchmarks; users keep the defaults."""
    from .infra.lease import session_lease
    from .study.study_run import run_study

    t0 = time.monotonic()
    study = load_study(study_path)
    inventory_path = Path(inventory_path) if inventory_path else study.inventory
    is_testbed = config.testbed_hosts(inventory_path) is not None
    if is_testbed:
        from .infra import testbed

        hosts = config.testbed_hosts(inventory_path)
        out(f"testbed: up ({testbed.up(hosts)})")
    # Loaded once and passed down: the study, the inventory and the lease are never reloaded or
    # retaken inside (issue 22); the precheck runs over the study's own fleet.
    inventory = config.load_inventory(inventory_path)
    out(estimate_line(study, inventory, Path(raw_dir)))
    # The hosts are ours for the session; refused here (another session holds them), nothing
    # was touched, and the testbed another session uses stays up.
    lease = session_lease(inventory, f"run-all --study {study.name}", out=out)
    lease.__enter__()
    try:
        try:
            summary = run_study(study, inventory_path, stop_on_failure=stop_on_failure, progress=progress,
                                inventory=inventory, leased=True, precheck=True, raw_dir=Path(raw_dir),
                                runs_dir=Path(runs_dir), notebooks=notebooks)
        finally:
            lease.__exit__(None, None, None)
    finally:
        if is_testbed and not keep:
            testbed.down()
            out("testbed: down (use --keep to leave it up)")
    out(format_summary(summary))
    failed = all_failed(summary)
    if failed:
        raise StudyFailed(failed)
    t = time.monotonic()
    scratch = None if Path(raw_dir) == config.RAW else Path(reports_dir).parent
    report = analyse(study.name, Path(raw_dir), Path(reports_dir) / study.name, out=out, scratch=scratch)
    summary["analysis_s"] = round(time.monotonic() - t, 2)
    summary["total_s"] = round(time.monotonic() - t0, 2)
    summary["report"] = str(report)
    summary["total_measure_fraction"] = (round(summary["measure_s"] / summary["total_s"], 4)
                                         if summary["total_s"] else 0.0)
    out(f"total wall time {summary['total_s']:.0f} s, {100 * summary['total_measure_fraction']:.0f} % of it inside "
        "measurement windows")
    from .analysis.report import answer_of  # here, like analyse: pandas loads slowly

    summary["answer"] = answer_of(study.name, Path(reports_dir) / study.name)
    out(f"answer: {summary['answer']}")  # the report's first paragraph, so the console ends with it too
    out(f"report: {report}")
    return summary


class StudyFailed(CnibenchError):
    """Every run of the session failed: the command exits non-zero and says why."""


def all_failed(summary: dict) -> str | None:
    """The message when every run of the session failed, else None (pure)."""
    n = summary.get("executed") or 0
    if not n or summary.get("failed") != n:
        return None
    return (f"every run of this session failed ({n} of {n}); nothing was measured. First reason: "
            f"{summary.get('first_failure')}. "
            "Fix that, then run again (a failed run is redone once its record is removed from "
            f"{summary.get('raw_dir')}).")


def estimate_line(study, inventory, raw_dir: Path) -> str:
    """What `run-all` prints before it starts: the estimated wall time of what is left."""
    from .study.matrix import format_estimate
    from .study.status import estimate_study

    try:
        return format_estimate(estimate_study(study, raw_dir=raw_dir, inventory=inventory))
    except CnibenchError as exc:
        return f"estimated duration: unknown ({exc})"


def format_summary(s: dict) -> str:
    return (
        f"{s['study']}: {s['executed']} runs this session ({s['ok']} ok, {s['invalid']} invalid, {s['failed']} "
        "failed), "
        f"{s['already_done']} recorded before, {s['planned']} planned; {s['wall_s']:.0f} s, "
        f"{100 * s['measure_fraction']:.0f} % of it inside measurement windows. Records: {s['raw_dir']}, notebooks: "
        f"{s['runs_dir']}"
    )
