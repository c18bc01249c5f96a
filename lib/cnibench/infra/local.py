"""Commands on this machine (the testbed's VPC router is a namespace here, not an SSH host).

Same shape as Host.run: argv only, CommandResult back, CommandFailed on a non-zero exit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

from ..errors import CommandFailed, CommandTimeout
from .hosts import CommandResult, in_netns

NAME = "@local"


class LocalHost:
    name = NAME

    async def run(self, argv: Sequence[str], check: bool = True, timeout: float | None = 60, input: str | None = None,
                  netns: str | None = None) -> CommandResult:
        argv = tuple(str(a) for a in in_netns(netns, argv))
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise CommandTimeout(NAME, " ".join(argv), timeout or 0) from None
        result = CommandResult(NAME, argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                               time.monotonic() - start)
        if check and result.exit_status != 0:
            raise CommandFailed(result)
        return result
