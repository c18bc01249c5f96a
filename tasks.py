"""cnibench tasks. Each task is a few lines calling lib/cnibench; `invoke --list` shows them.

Run as root on the machine that drives the study (for the local testbed: this machine).
"""

from __future__ import annotations

import asyncio
import json
import sys

from invoke import Collection, Exit, task

from cnibench import config
from cnibench.errors import CnibenchError


def _run(coro):
    """Run a coroutine; turn the project's errors into one clear message and a non-zero exit."""
    try:
        return asyncio.run(coro)
    except CnibenchError as exc:
        raise Exit(f"error: {exc}", code=2)


# --- foundation (lead) ---

# --- modes ---

# --- workload ---

# --- pipeline ---

# --- analysis ---
