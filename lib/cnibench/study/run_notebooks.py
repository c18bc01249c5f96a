"""The run notebooks (notebooks/run.ipynb, executed by papermill through runbook.py): rendered
as views of saved records after a study's matrix, or, with `notebooks: measure`, doing the
measurement themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..results import failed_record, now_iso, read_record, record_path


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


async def render_notebooks(policy: str, run_ids, raw_dir: Path, runs_dir: Path, bar=None,
                           workers: int = NOTEBOOK_WORKERS, first=None) -> int:
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
                bar.line(f"  warning: the notebook of {rid} failed ({exc.__class__.__name__}); it is saved for a look, "
                         "the record is fine")


async def measure_in_notebook(ctx, run, fields) -> dict:
    """`notebooks: measure`: papermill executes run.ipynb, which measures and writes the record
    (runner.measure_and_record, through the RecordStore); a record the notebook could not write
    is written here, failed with the reason, by the same store."""
    from .runbook import notebook_path

    started, store = now_iso(), ctx.store
    params = {
        "measure": True, "inventory": str(ctx.inventory_path), "endpoint": ctx.endpoint.to_dict(), "spec": dict(fields),
        "run": {"run_id": run.run_id, "study": run.study, "arm": run.arm, "repetition": run.repetition,
                "load_fraction": run.load_fraction, "order": run.order},
        "raw_dir": str(store.raw_dir), "record_path": str(store.path(run.run_id)),
    }
    reason = "failed: the run notebook wrote no record"
    try:
        await ctx.book.render(notebook_path(ctx.runs_dir, run.run_id), params)
    except Exception as exc:
        reason = f"failed: the run notebook raised {exc.__class__.__name__}"
    rec = store.read(run.run_id)
    if rec is None:
        rec = failed_record(run, reason, fields, started, now_iso(), ctx.ref)
        store.write(rec)
    return rec
