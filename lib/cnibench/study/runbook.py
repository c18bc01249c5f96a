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

No notebook can hang a run or a test: every execution (the runner's and the tests') goes through
`execute`, which gives the kernel START_TIMEOUT s to answer and each cell a timeout, and turns a
timeout into a NotebookTimeout naming the notebook and the cell. Kernels talk over Unix sockets
(`ipc`) in a private directory: no TCP port to race for, nothing reachable from the network, and
no "Kernel is running over TCP without encryption" warning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ..catalog import PREFIX
from ..infra.config import NOTEBOOKS
from ..errors import CnibenchError

TEMPLATE = NOTEBOOKS / "run.ipynb"
KERNEL = "python3"
# A kernel answers in ~2 s on the 2-core machine and a rendering cell takes seconds (the tests'
# slowest notebook, figures, ~16 s in all): a stuck kernel fails within 2 minutes either way.
START_TIMEOUT = 60
CELL_TIMEOUT = 100
log = logging.getLogger(__name__)


class NotebookTimeout(CnibenchError):
    """A notebook's kernel did not answer in time: at its start, in a cell, or after the last one."""


def cell_timeout_for(parameters: Mapping[str, Any]) -> int:
    """A measuring run notebook's cell runs the whole measurement: it gets its duration on top
    (whole seconds: nbclient's timeout is an int)."""
    if not parameters.get("measure"):
        return int(CELL_TIMEOUT)
    spec = parameters.get("spec") or {}
    return math.ceil(CELL_TIMEOUT + float(spec.get("duration_s") or 0) + float(spec.get("warmup_s") or 0))


def _ipc(sockets: str) -> dict[str, str]:
    # absolute socket paths: the kernel's working directory differs from ours
    return {"transport": "ipc", "ip": os.path.join(sockets, "k")}


def kernel_manager(kernel_name: str = KERNEL):
    """A kernel manager whose kernel listens on Unix sockets in a private directory."""
    from jupyter_client.manager import AsyncKernelManager

    return AsyncKernelManager(kernel_name=kernel_name, **_ipc(tempfile.mkdtemp(prefix=f"{PREFIX}-kernel-")))


def stop_kernel(km) -> None:
    from jupyter_core.utils import run_sync

    try:
        run_sync(km.shutdown_kernel)(now=True)
    except Exception as exc:  # the kernel may already be gone
        log.debug("kernel shutdown: %s", exc)
    shutil.rmtree(Path(km.ip).parent, ignore_errors=True)


def execute(template: Path, out: Path, parameters: Mapping[str, Any], km=None, cwd: Path | None = None,
            kernel_name: str = KERNEL, start_timeout: float = START_TIMEOUT, cell_timeout: float | None = None) -> None:
    """papermill.execute_notebook with both timeouts, in `km`'s kernel (left running) or in a
    kernel of its own (papermill starts and stops it). A timeout raises NotebookTimeout; papermill
    has saved the notebook at `out` by then."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError
    from traitlets.config import Config

    timeout = cell_timeout if cell_timeout is not None else cell_timeout_for(parameters)
    sockets = None
    if km is None:
        sockets = tempfile.mkdtemp(prefix=f"{PREFIX}-kernel-")
        kw: dict[str, Any] = {"kernel_name": kernel_name, "config": Config({"KernelManager": _ipc(sockets)})}
    else:
        kw = {"kernel_name": km.kernel_name, "km": km}
    try:
        pm.execute_notebook(
            str(template), str(out), parameters=dict(parameters), progress_bar=False, log_output=False,
            cwd=str(cwd) if cwd else None, start_timeout=start_timeout, execution_timeout=timeout, **kw,
        )
    except CellTimeoutError as exc:
        raise NotebookTimeout(f"{Path(template).name}: {_running_cell(out)} did not finish within {timeout:g} s "
                              f"(the notebook so far is {out})") from exc
    except (TimeoutError, RuntimeError) as exc:
        # nbclient: "Kernel didn't respond in N seconds" (start), "Cell execution timed out" (no
        # reply to papermill's closing kernel_info)
        if "respond" not in str(exc) and "timed out" not in str(exc):
            raise
        raise NotebookTimeout(f"{Path(template).name}: the kernel did not answer ({exc}); "
                              f"start timeout {start_timeout:g} s, cell timeout {timeout:g} s") from exc
    finally:
        if sockets:
            shutil.rmtree(sockets, ignore_errors=True)


def _running_cell(out: Path) -> str:
    """'cell N (first line)': the last cell papermill started, read from the notebook it saved."""
    import nbformat

    try:
        cells = nbformat.read(out, as_version=4).cells
    except Exception:
        return "a cell"
    started = [i for i, c in enumerate(cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return "a cell"
    i = started[-1]
    first = next((line for line in cells[i].source.splitlines() if line.strip()), "")
    return f"cell {i} ({first[:60]!r})"


def notebook_path(runs_dir: Path, rid: str) -> Path:
    return Path(runs_dir) / f"{rid}.ipynb"


class RunBook:
    """Renders run notebooks; `policy` is warm (one kernel reused) or fresh (kernel per run)."""

    def __init__(self, policy: str = "warm", template: Path = TEMPLATE, cwd: Path | None = None):
        if policy not in ("warm", "fresh"):
            raise ValueError(f"notebook policy '{policy}' is not warm or fresh")
        self.policy, self.template, self.cwd = policy, Path(template), cwd
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{PREFIX}-runbook")
        self._km = None

    def _kernel(self):
        if self.policy != "warm":
            return None
        if self._km is None or not _alive(self._km):
            from jupyter_core.utils import run_sync

            if self._km is not None:
                stop_kernel(self._km)
            self._km = kernel_manager()
            run_sync(self._km.start_kernel)(cwd=str(self.cwd) if self.cwd else None)
        return self._km

    def _execute(self, out: Path, parameters: Mapping[str, Any]) -> Path:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.partial.ipynb")
        try:
            execute(self.template, tmp, parameters, km=self._kernel(), cwd=self.cwd)
        except NotebookTimeout:
            if self._km is not None:  # stuck: the next notebook gets a new kernel
                stop_kernel(self._km)
                self._km = None
            raise
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
                stop_kernel(self._km)
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
