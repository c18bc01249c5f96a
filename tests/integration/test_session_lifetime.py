"""Nothing outlives a SIGKILLed session (issue 22): a background program (Host.start) and a
daemonized nginx started by a driver process die within seconds of that process's SIGKILL, and
the port is free again for the next session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workload_helpers import host_endpoint

LIB = str(Path(__file__).resolve().parents[2] / "lib")

DRIVER = r"""
import asyncio, json, sys
from cnibench.infra.config import load_inventory
from cnibench.infra.hosts import Fleet
from cnibench.workload import nginx

async def main(inv, bind, port):
    async with Fleet(load_inventory(inv)) as fleet:
        srv = await nginx.start(fleet.server, None, nginx.NginxSpec(bind=bind, port=port))
        bg = await fleet.client.start(["sleep", "600"])
        print(json.dumps({"nginx": [srv.master_pid, *srv.worker_pids], "watchdog": srv.watchdog.pid, "sleep": bg.pid}), flush=True)
        await asyncio.sleep(600)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_killed_driver_leaves_no_process_behind(testbed, with_fleet):
    ep = host_endpoint(testbed, port=8093)
    env = {**os.environ, "PYTHONPATH": LIB}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(testbed.path), ep.server_bind, str(ep.server_port)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    started = [*pids["nginx"], pids["watchdog"], pids["sleep"]]  # the testbed's hosts share this kernel's pids
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in started):
        time.sleep(0.1)
    left = [p for p in started if _alive(p)]
    assert not left, f"still running 5 s after SIGKILL: {left} of {pids}"

    async def body(fleet):  # the port is free: a new nginx starts on it
        from cnibench.workload import nginx

        srv = await nginx.start(fleet.server, None, nginx.NginxSpec(bind=ep.server_bind, port=ep.server_port))
        await srv.stop()

    with_fleet(body)
