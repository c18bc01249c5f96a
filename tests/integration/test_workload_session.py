"""BenchSession: nginx is started once for many runs, health-checked per run, restarted after it
died, and stopped when the session ends, also when the code inside it raises."""

import asyncio

import pytest

from cnibench import results
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import BenchSession
from cnibench.workload.guards import noise_reported_only
from cnibench.workload.nginx import ANY_RUNNING_SH

from workload_helpers import host_endpoint, processes

pytestmark = [pytest.mark.timeout(180)]
PORT = 8097
# Session mechanics, not noise: the noise guards measure but do not invalidate (a shared machine).
SPEC = BenchSpec(mode="host", size="small", rate=1000, duration_s=1, warmup_s=0.2, connections=4, guard=noise_reported_only())


async def running(host, pids) -> bool:
    r = await host.run(["sh", "-c", ANY_RUNNING_SH, "cnib", *map(str, pids)], check=False)
    return r.exit_status == 0


async def leftovers(fleet) -> dict:
    r = await fleet.server.run(["sh", "-c", "ls -A /run/cnibench/workload 2>/dev/null"], check=False)
    return {
        "nginx": await processes(fleet.server, f"nginx-{PORT}"),
        "sampler": await processes(fleet.client, "cnib-sampler") + await processes(fleet.server, "cnib-sampler"),
        "files": [f for f in r.stdout.split() if f == f"nginx-{PORT}"],
    }


def test_nginx_is_reused_across_runs_and_stopped_at_the_end(with_fleet, testbed):
    ep = host_endpoint(testbed, port=PORT)

    async def body(fleet):
        async with BenchSession(fleet, ep) as s:
            a = await s.run(SPEC, run_id="test/host/small/1000/rep1")
            pids_a = (s.nginx.master_pid, *s.nginx.worker_pids)
            b = await s.run(SPEC, run_id="test/host/small/1000/rep2")
            pids_b = (s.nginx.master_pid, *s.nginx.worker_pids)
            starts = s.nginx_starts
        return a, b, pids_a, pids_b, starts, await running(fleet.server, pids_b), await leftovers(fleet)

    a, b, pids_a, pids_b, starts, still, left = with_fleet(body)
    assert (a["status"], b["status"]) == ("ok", "ok"), (a["reason"], b["reason"])
    assert starts == 1 and pids_a == pids_b
    # each run's metrics are its own: the samplers start and stop with the run
    assert all(results.metrics_rows(m) for m in b["metrics"].values())
    assert not still and left == {"nginx": [], "sampler": [], "files": []}


def test_a_run_where_nginx_died_fails_and_the_next_run_restarts_it(with_fleet, testbed):
    ep = host_endpoint(testbed, port=PORT)

    async def kill_nginx(ctx):
        await asyncio.sleep(ctx.spec.warmup_s + 0.3)
        pids = [str(p) for p in (ctx.nginx.master_pid, *ctx.nginx.worker_pids)]
        await ctx.fleet.server.run(["kill", "-KILL", *pids], check=False)

    async def body(fleet):
        async with BenchSession(fleet, ep) as s:
            dead = await s.run(SPEC, run_id="test/host/small/1000/rep1", during=kill_nginx)
            after = await s.run(SPEC, run_id="test/host/small/1000/rep2")
            starts = s.nginx_starts
        return dead, after, starts, await leftovers(fleet)

    dead, after, starts, left = with_fleet(body)
    assert dead["status"] == "failed" and "nginx died during the run" in dead["reason"], dead["reason"]
    assert after["status"] == "ok", after["reason"]
    assert starts == 2
    assert left == {"nginx": [], "sampler": [], "files": []}


def test_everything_stops_when_the_code_inside_the_session_raises(with_fleet, testbed):
    ep = host_endpoint(testbed, port=PORT)

    class Boom(Exception):
        pass

    async def body(fleet):
        pids = None
        try:
            async with BenchSession(fleet, ep) as s:
                rec = await s.run(SPEC, run_id="test/host/small/1000/rep1")
                pids = (s.nginx.master_pid, *s.nginx.worker_pids)
                raise Boom()
        except Boom:
            pass
        return rec, await running(fleet.server, pids), await leftovers(fleet)

    rec, still, left = with_fleet(body)
    assert rec["status"] == "ok", rec["reason"]
    assert not still and left == {"nginx": [], "sampler": [], "files": []}
