"""The noise guards on the testbed: each provoked by a real disturbance (a CPU hog on nginx's
core, a stalled hiccup meter and generator, lost packets, a stalled second), and a quiet run
that passes. Short runs (2 s window); the provocations are generator-agnostic (the SIGSTOP
test also checks the send-lag guard when the generator records send lag).

Steal time cannot be provoked from inside a guest (only the hypervisor steals); its guard is
covered by the unit tests. NIC drops likewise (the testbed's veth links do not drop at these
rates); retransmits are provoked with an nftables rule that drops 2 % of nginx's segments.
"""

import asyncio
from dataclasses import replace

import pytest

from cnibench.results import validate_record
from cnibench.workload import hiccup
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import run_bench
from cnibench.workload.quiet import wait_quiet

from workload_helpers import host_endpoint, processes

pytestmark = [pytest.mark.timeout(240)]
PORT = 8097
SPEC = BenchSpec(mode="host", size="small", rate=2000, duration_s=2.5, warmup_s=0.5, connections=4, hiccup="on")


def run(with_fleet, testbed, during=None, spec=SPEC, quiet_first=False):
    ep = host_endpoint(testbed, port=PORT)

    async def body(fleet):
        if quiet_first:  # a quiet run needs a quiet machine (a provoked guard fires on a busy one too)
            q = await wait_quiet(fleet, {"max_cpu": 0.15, "window_s": 0.5, "max_wait_s": 60}, out=lambda _: None)
            if not q["quiet"]:
                return q
        rec = await run_bench(fleet, ep, spec, run_id=f"test/host/small/{int(spec.rate)}/rep1", during=during)
        left = await processes(fleet.client, "hiccup-") + await processes(fleet.client, "cnib-sampler")
        return rec, left

    out = with_fleet(body)
    if isinstance(out, dict):
        pytest.skip(f"the machine is not quiet: other processes used {out['other_cpu']} cores (quiet check, limit 0.15) "
                    f"after {out['waited_s']} s: cannot tell noise from the provocation")
    rec, left = out
    assert validate_record(rec) == [] and rec["status"] != "failed", rec["reason"]
    assert left == []  # meters and samplers stopped
    return rec


def checks(rec):
    return {c["guard"]: c for c in rec["hygiene"]["checks"]}


def lab_guard():
    """The guard limits the shipped study runs with on this kind of machine (studies/lab.yml)."""
    from pathlib import Path

    from cnibench.study.spec import load_study

    lab = load_study(Path(__file__).resolve().parents[2] / "studies" / "lab.yml")
    return replace(SPEC.guard, **lab.workload.get("guard", {}))


# A quiet run is judged with the study's own limits: on this VM stalls of 20-90 ms per 4 s are
# normal (hiccups flag, they do not invalidate there), and one run in several still meets steal
# or send lag beyond them. Retry policy: up to QUIET_ATTEMPTS runs; the first that the hypervisor
# did not disturb is judged; if every one was disturbed the test skips naming each attempt.
QUIET_ATTEMPTS = 4


def test_quiet_run_is_valid_and_records_every_figure(with_fleet, testbed):
    spec = replace(SPEC, guard=lab_guard())
    seen = []
    for _ in range(QUIET_ATTEMPTS):
        rec = run(with_fleet, testbed, quiet_first=True, spec=spec)
        h = rec["hygiene"]
        fig = h["figures"]
        # Every figure is recorded whatever the verdict.
        for key in ("foreign_cpu", "steal", "irq", "softirq", "hiccup_max_us", "tcp_retransmits", "nic_drops"):
            assert fig[key] is not None, key
        if not h["disturbed"]:
            break
        seen.append(f"steal {100 * (fig['steal'] or 0):.1f} %, stalls {(fig['hiccup_total_us'] or 0) / 1000:.0f} ms: {rec['reason']}")
    else:
        pytest.skip(f"the hypervisor disturbed all {QUIET_ATTEMPTS} runs ({'; '.join(seen)}): "
                    "a quiet run cannot be shown on this machine now")
    assert rec["status"] == "ok", rec["reason"]
    assert fig["foreign_cpu"] <= SPEC.guard.max_foreign_cpu
    # our own processes' CPU, recorded separately
    assert {"nginx", "generator", "sampler", "sshd", "hiccup", "driver"} <= set(h["cpu_s"])
    assert h["cpu_s"]["generator"] > 0 and h["cpu_s"]["nginx"] > 0
    # the testbed's two hosts are one machine: both pinned cores judged together
    (machine,) = h["machines"]
    assert machine["pinned"] == ["cpu0", "cpu1"] and sorted(machine["hosts"]) == ["client", "server"]
    assert checks(rec)["irq_softirq"]["verdict"] == "report"


def test_cpu_hog_on_the_generator_core_is_foreign_cpu_and_on_the_server_core_only_recorded(with_fleet, testbed):
    """Issue 25: a hog on the generator's core is foreign CPU there and invalidates the run; the
    same hog on nginx's core shows in `server_foreign_cpu` and is recorded, not judged."""
    hogs = []  # what each stress-ng printed and how it ended: a hog that never ran explains an ok run

    def hog_on(host_of, cpu_of):
        async def hog(ctx):
            bg = await host_of(ctx).start(["stress-ng", "--cpu", "1", "--taskset", str(cpu_of(ctx)), "--timeout", "4s",
                                           "--quiet"])
            try:
                await asyncio.sleep(60)
            finally:
                r = await bg.stop(grace=3)
                hogs.append((r.exit_status, r.stderr[-300:]))
        return hog

    # Up to 3 runs: once in three suite runs (T6, 2026-12-03) the hog's run stayed ok; 6 runs
    # in a row later all gave 0.47-0.48 of the core (the hog's fair share beside the generator).
    for _ in range(3):
        rec = run(with_fleet, testbed, during=hog_on(lambda c: c.fleet.client, lambda c: c.spec.client_cpus[0]))
        c = checks(rec)["foreign_cpu"]
        if c["verdict"] == "invalid":
            break
    assert c["verdict"] == "invalid" and "foreign CPU on the generator's core" in rec["reason"], (rec["reason"], c, hogs)
    assert c["value"] > 0.2 and rec["hygiene"]["disturbed"]

    rec = run(with_fleet, testbed, during=hog_on(lambda c: c.fleet.server, lambda c: c.spec.server_cpus[0]))
    assert rec["hygiene"]["figures"]["server_foreign_cpu"] > 0.2, rec["hygiene"]["figures"]
    c = checks(rec)["foreign_cpu"]  # the generator's core: only what really ran there may fire
    assert "foreign CPU" not in rec["reason"] or c["value"] > c["invalid_at"], (rec["reason"], c)


async def stop_for(host, pids, seconds):
    await host.run(["sh", "-c", 'kill -STOP "$@"; sleep ' + f"{seconds:g}" + '; kill -CONT "$@"', "cnib", *map(str, pids)])


async def our_meters(ctx):
    return [int(ln.split()[0]) for ln in await processes(ctx.fleet.client, hiccup.path())]


@pytest.mark.parametrize("stall_s,verdict", [(0.005, "flag"), (0.06, "invalid")])
def test_stalled_meter_and_generator_are_a_hiccup(with_fleet, testbed, stall_s, verdict):
    """A stall of the machine as the meters see it: they (and the generator) are stopped for
    `stall_s`. 5 ms flags the run (at least: on a busy machine other hiccups may add up to the
    invalid limit); 60 ms (more than a study's 20 ms sum limit, set here: the defaults leave the
    sum unjudged since issue 25) invalidates it."""
    async def stall(ctx):
        await asyncio.sleep(ctx.spec.warmup_s + 1.0)
        gen = (await ctx.fleet.client.run(["pgrep", "-P", str(ctx.generator.pid)], check=False)).stdout.split()
        await stop_for(ctx.fleet.client, [*(await our_meters(ctx)), *map(int, gen)], stall_s)

    spec = replace(SPEC, guard=replace(SPEC.guard, max_hiccup_total_us=20_000))  # a study's explicit sum limit
    rec = run(with_fleet, testbed, during=stall, spec=spec)
    c = checks(rec)["hiccup"]
    assert c["verdict"] in ((verdict, "invalid") if verdict == "flag" else (verdict,)), (c, rec["hygiene"]["hiccup"])
    assert rec["hygiene"]["figures"]["hiccup_max_us"] >= stall_s * 1e6 * 0.9
    if c["verdict"] == "flag":
        assert "hiccup" in rec["hygiene"]["flags"]
    else:
        assert rec["status"] == "invalid" and "hiccups" in rec["reason"] and rec["hygiene"]["disturbed"]
    if (rec["latency"] or {}).get("send_lag"):  # generators that record their send lag (openloop)
        assert checks(rec)["send_lag"]["verdict"] in ("flag", "invalid")


def test_lost_segments_are_flagged_as_retransmits(with_fleet, testbed):
    table = "cnibtest_loss"

    async def lose(ctx):
        # Responses lost on the way in to the client: the server's TCP sees the loss and
        # retransmits. (Dropping them in the server's own output hook does not: the local drop
        # is returned to TCP, which neither counts a retransmit nor a loss probe on this kernel.)
        nft = ["nft", "-f", "-"]
        rules = (f"table inet {table} {{\n chain in {{\n  type filter hook input priority 0;\n"
                 f"  tcp sport {PORT} numgen random mod 50 0 drop\n }}\n}}\n")
        await ctx.fleet.client.run(nft, input=rules)
        try:
            await asyncio.sleep(60)
        finally:
            await ctx.fleet.client.run(["nft", "delete", "table", "inet", table], check=False)

    rec = run(with_fleet, testbed, during=lose)
    c = checks(rec)["retransmits"]
    assert c["verdict"] == "flag" and "retransmits" in rec["hygiene"]["flags"], (c, rec["hygiene"]["figures"])
    assert rec["hygiene"]["figures"]["tcp_retransmits"] > 0


def test_a_stalled_second_marks_the_run_unstable(with_fleet, testbed):
    async def stall_nginx(ctx):
        await asyncio.sleep(ctx.spec.warmup_s + 1.3)
        await stop_for(ctx.fleet.server, ctx.nginx.worker_pids, 0.3)

    spec = BenchSpec(mode="host", size="small", rate=3000, duration_s=3, warmup_s=0.5, connections=8, pipeline=0)
    rec = run(with_fleet, testbed, during=stall_nginx, spec=spec)
    c = checks(rec)["unstable"]
    assert c["verdict"] == "flag" and c["value"] > 3, (c, rec["timeline"])
    assert "unstable" in rec["hygiene"]["flags"]
