"""A run that breaks ends in bounded time, is recorded as failed with the reason, and still
stops the generator, the samplers and nginx. (pytest-timeout bounds each test.)"""

import asyncio

import pytest

from cnibench.errors import HostError
from cnibench.results import validate_record
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import run_bench

from workload_helpers import host_endpoint, processes

pytestmark = [pytest.mark.timeout(180)]
PORT = 8095


async def kill_generator(ctx):
    await asyncio.sleep(ctx.spec.warmup_s + 1)
    await ctx.fleet.client.run(["pkill", "-KILL", "-P", str(ctx.generator.pid)], check=False)


async def kill_nginx(ctx):
    await asyncio.sleep(ctx.spec.warmup_s + 1)
    pids = [str(p) for p in (ctx.nginx.master_pid, *ctx.nginx.worker_pids)]
    await ctx.fleet.server.run(["kill", "-KILL", *pids], check=False)


async def drop_ssh(ctx):
    """Kill the sshd session process that carries the client's connection (the parent of the
    generator's wrapper): the TCP connection dies with every channel on it."""
    await asyncio.sleep(ctx.spec.warmup_s + 1)
    client = ctx.fleet.client
    status = (await client.run(["cat", f"/proc/{ctx.generator.pid}/status"])).stdout
    ppid = next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:"))
    try:
        await client.run(["kill", "-KILL", ppid], check=False, timeout=5)
    except HostError:
        pass  # the command's own session died with it: expected


@pytest.mark.parametrize("fault,words", [
    (kill_generator, "cnib-openloop exited with status 137"),
    (kill_nginx, "nginx died during the run"),
    (drop_ssh, "lost the SSH connection to the client host"),
])
def test_fault_is_recorded_and_everything_stops(with_fleet, testbed, fault, words):
    ep = host_endpoint(testbed, port=PORT)
    spec = BenchSpec(mode="host", size="small", rate=1000, duration_s=4, warmup_s=1, connections=4)

    async def files(fleet):
        r = await fleet.client.run(["sh", "-c", "ls -A /run/cnibench/workload 2>/dev/null"], check=False)
        return set(r.stdout.split())

    async def body(fleet):
        before = await files(fleet)
        rec = await run_bench(fleet, ep, spec, run_id="test/host/small/1000/rep1", during=fault)
        left = {
            "nginx": await processes(fleet.server, f"nginx-{PORT}"),
            "generator": await processes(fleet.client, f"cnib-openloop.*--port {PORT} "),
            "sampler": await processes(fleet.client, "cnib-sampler") + await processes(fleet.server, "cnib-sampler"),
            "files": sorted(await files(fleet) - before),
        }
        return rec, left

    rec, left = with_fleet(body)
    assert rec["status"] == "failed" and words in rec["reason"], rec["reason"]
    assert validate_record(rec) == []
    assert left == {"nginx": [], "generator": [], "sampler": [], "files": []}
