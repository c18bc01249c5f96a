"""Execute notebooks/run.ipynb with papermill: one executed copy per run under data/runs/.

Starting a Jupyter kernel costs about 1.2 s on the 2-core testbed machine, and importing the
notebook's libraries into it about as much again; with a hundred or more runs per study that
alone breaks the lab study's time budget. So by default (`warm`) one kernel is started per
session and reused for every run notebook (papermill passes `km` through to nbclient, which
then neither starts nor stops the kernel): rendering a run's notebook costs a fraction of a
second. `fresh` starts a kernel per notebook (full isolation, slower).

Papermill is synchronous and runs its own event loop; all calls go through one worker thread
that owns the kernel, so its sockets stay on one loop and the runner's loop is never blocked.
A failed notebook is saved by papermill before the error is raised, so it can be opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from pathlib import Path
from typing import Any, Mapping

from .config import NOTEBOOKS

TEMPLATE = NOTEBOOKS / "run.ipynb"
KERNEL = "python3"
log = logging.getLogger(__name__)


def notebook_path(runs_dir: Path, rid: str) -> Path:
    return Path(runs_dir) / f"{rid}.ipynb"


class RunBook:
    """Renders run notebooks; `policy` is warm (one kernel reused) or fresh (kernel per run)."""

    def __init__(self, policy: str = "warm", template: Path = TEMPLATE, cwd: Path | None = None):
        if policy not in ("warm", "fresh"):
            raise ValueError(f"notebook policy '{policy}' is not warm or fresh")
        self.policy, self.template, self.cwd = policy, Path(template), cwd
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnib-runbook")
        self._km = None

    def _kernel(self):
        if self.policy != "warm":
            return None
        if self._km is None or not _alive(self._km):
            from jupyter_client.manager import AsyncKernelManager
            from jupyter_core.utils import run_sync

            self._km = AsyncKernelManager(kernel_name=KERNEL)
            run_sync(self._km.start_kernel)(cwd=str(self.cwd) if self.cwd else None)
        return self._km

    def _execute(self, out: Path, parameters: Mapping[str, Any]) -> Path:
        import papermill as pm

        out.parent.mkdir(parents=True, exist_ok=True)
        kw: dict[str, Any] = {}
        km = self._kernel()
        if km is not None:
            kw["km"] = km
        tmp = out.with_name(f".{out.stem}.partial.ipynb")
        try:
            pm.execute_notebook(
                str(self.template), str(tmp), parameters=dict(parameters), kernel_name=KERNEL,
                progress_bar=False, log_output=False, cwd=str(self.cwd) if self.cwd else None, **kw,
            )
        finally:
            # Even a failed notebook is kept (papermill saved it) under the final name.
            if tmp.exists():
                tmp.replace(out)
        return out

    def render_sync(self, out: Path, parameters: Mapping[str, Any]) -> Path:
        return self._pool.submit(self._execute, Path(out), parameters).result()

    async def render(self, out: Path, parameters: Mapping[str, Any]) -> Path:
        loop = asyncio.get_running_loop()
        return await asyncio.wrap_future(self._pool.submit(self._execute, Path(out), parameters), loop=loop)

    def close(self) -> None:
        def stop():
            if self._km is not None:
                from jupyter_core.utils import run_sync

                try:
                    run_sync(self._km.shutdown_kernel)(now=True)
                except Exception as exc:  # the kernel may already be gone
                    log.debug("kernel shutdown: %s", exc)
                self._km = None

        try:
            self._pool.submit(stop).result(timeout=30)
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _alive(km) -> bool:
    from jupyter_core.utils import run_sync

    try:
        return bool(run_sync(km.is_alive)())
    except Exception:
        return False
