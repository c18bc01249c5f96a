"""cnib-openloop on the testbed (host mode): pacing, the log against the wire, a known delay,
agreement with h2load where h2load is smooth, two threads, and the stall sweep.

Timing policy (stated, as the project's tests must not flake): a figure that a preempted
generator can miss (pacing, send lag) is checked on up to ATTEMPTS runs and passes when one
run meets it, raw or outside the stalls the generator itself saw on its core (at most 10 % of
the window touched); every attempt's figures are printed, so a failure shows all of them.
Noise on this 2-core VM comes in bursts; five misses in a row mean the generator, not the
machine -- unless the generator's stall detector found the machine took its core away for
more than the cap in the first two (or all five), and then the test skips and says so (2026-11-28, a fresh-clone
suite: 22-41 % of the window at 5,000 req/s, with steal at 7 %), or the hiccup meter saw the
whole machine stop for >= 1 ms in every attempt that missed only the send lag's far tail
(`meter_explains_tail`).

Only the machine's stalls are excused: since cnib-openloop 5 each listed stall carries its cause
(steal, preempted by another task, or the generator's own blocking), and the generator's own
stalls stay in the figures judged, so a generator that sleeps by itself fails (the broken build,
CNIBENCH_BREAK_PACING=1, tests/test_the_tests.py). A miss prints what the late sends outside
the stalls coincided with (`late_outside`: a shorter gap off the CPU, a slow loop pass, or
nothing the generator saw).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import struct

import numpy as np
import pytest

from cnibench.results import decode_histogram
from cnibench.workload import latency as lat
from cnibench.workload import nginx as nginx_mod
from cnibench.workload.bench import BenchSpec
from cnibench.workload.session import BenchSession
from cnibench.workload.generators.openloop import RECORD, parse_summary
from cnibench.workload.loadgen import ensure_built

from workload_helpers import host_endpoint

pytestmark = [pytest.mark.timeout(300)]
PORT = 8093
# Up to 5 runs; the first that meets the criterion passes. 3 were not enough once (T5, 2026-12-03):
# 15,000 req/s large missed the 250 us send-lag p99.9 in three runs in a row, each with one 4-7 ms
# machine stall that the generator's own detector did not see (the hiccup meter did), so not excluded.
ATTEMPTS = 5
DISTURBED_ENOUGH = 2  # attempts all disturbed (see `disturbed`) after which a test skips


def spec(rate, size="small", **kw) -> BenchSpec:
    base = dict(mode="host", size=size, rate=rate, duration_s=2.0, warmup_s=0.5, metrics=False, hiccup="on")  # machine_stalled
    base.update(kw)
    return BenchSpec(**base)


def session_runs(with_fleet, testbed, specs, during=None):
    """Run each spec once in one session (nginx kept up); the records in order."""
    ep = host_endpoint(testbed, port=PORT)

    async def body(fleet):
        out = []
        async with BenchSession(fleet, ep) as s:
            for i, sp in enumerate(specs):
                out.append(await s.run(sp, run_id=f"test/host/{sp.size}/{sp.rate:g}/rep{i + 1}", during=during))
        return out

    return with_fleet(body)


def figures(rec) -> dict:
    lag = rec["latency"]["send_lag"]["percentiles"]
    hic = (rec.get("hygiene") or {}).get("figures") or {}
    info = rec["settings"]["generator_info"]
    return {**rec["latency"]["pacing"], "lag_p99_us": lag["99"], "lag_p999_us": lag["99.9"], "status": rec["status"],
            "hiccup_max_us": hic.get("hiccup_max_us"), "steal": hic.get("steal"),
            "gen_stalls": info.get("stalls"), "stall_ms_by_cause": info.get("stall_ms_by_cause")}


def machine_stalled(f) -> bool:
    """The hiccup meter (issue 10) saw the machine stall by >= 0.5 ms during the run: a p99 that
    any core's stall can set (the server's too) is then not judged."""
    return (f.get("hiccup_max_us") or 0) >= 500


MAX_EXCLUDED = 0.10  # of the window: a machine that takes the generator's core away more than
                     # this does not get to pass on the figures outside its stalls


HIGH_RATE_LAG_P99_US = 100  # above 25,000 req/s: send lag p99 only (outside the machine's stalls
                           # it was 20-52 us at 45,000 req/s, issue 9's benchmark, 2026-11-28). The
                           # pacing shape alone cannot see a 300 us stall every 10 ms there: the late
                           # sends still land in the same ms bin (tests/meta: the broken build passed).


def pacing_met(p: dict, lag_bound: bool, poisson: bool = False) -> bool:
    """Criterion 1. A Poisson schedule is judged by its law (dispersion 1) and, like a uniform
    one, by its send lag: the dispersion alone barely moves when the generator is late. Without
    criterion 1's lag bound (above 25,000 req/s) the send lag p99 is still bounded, looser."""
    lag_ok = (p["lag_p99_us"] <= 50 and p["lag_p999_us"] <= 250) if lag_bound else p["lag_p99_us"] <= HIGH_RATE_LAG_P99_US
    if poisson:
        return lag_ok and abs(p["dispersion_per_ms"] - 1) <= 0.1
    return lag_ok and p["dispersion_per_ms"] <= 0.2 and p["max_line_ratio"] <= 20


def meets_pacing(f, poisson=False, lag_bound=True, max_excluded=MAX_EXCLUDED) -> bool:
    """Criterion 1 on the raw figures or, where the generator's own stall detector saw its core
    taken away (steal, another task), on the same figures outside those stalls: a miss then
    coincides with a stall, as the criterion allows, and the rest of the window must meet it."""
    if pacing_met(f, lag_bound, poisson):
        return True
    o = f.get("outside_stalls")
    if not o or o["excluded_ms"] > max_excluded * o["of_ms"]:
        return False
    return outside_met(o, lag_bound, poisson)


def outside_met(o: dict, lag_bound: bool = True, poisson: bool = False) -> bool:
    """pacing_met on the figures outside the generator's stalls (their send-lag keys differ)."""
    return pacing_met({**o, "lag_p99_us": o["send_lag_p99_us"], "lag_p999_us": o["send_lag_p999_us"]}, lag_bound, poisson)


def disturbed(f, max_excluded=MAX_EXCLUDED) -> bool:
    """The machine took the generator's core away for more of the window than the cap allows
    (its own stall detector says so): such a run cannot speak for or against the generator."""
    o = f.get("outside_stalls")
    return bool(o) and o["excluded_ms"] > max_excluded * o["of_ms"]


METER_STALL_US = 1000  # a stall the unpinned hiccup meter saw (it lands on the idle core)


def meter_explains_tail(f) -> bool:
    """The hiccup meter, which runs beside the generator and not on its thread, saw the machine
    stop for >= 1 ms, and the miss is in the send lag's far tail alone (p99 within 50 us): at
    15,000 req/s a 4-7 ms stop of the whole VM delays 60-100 of the window's 30,000 sends, more
    than p99.9 allows, while the generator's detector (off-CPU time) sees only slow passes (T5,
    2026-12-03: three such attempts in a row). A generator late by itself misses p99 too (the
    broken build: 300 us every 10 ms) and is not excused."""
    return (f.get("hiccup_max_us") or 0) >= METER_STALL_US and f["lag_p99_us"] <= 50


def check_with_attempts(with_fleet, testbed, make_spec, ok, what, max_excluded=MAX_EXCLUDED):
    """Up to ATTEMPTS runs; the first that meets `ok` passes. When none did and the generator's
    own stall detector found every one of them disturbed (see `disturbed`), the test skips and
    says so: a machine that busy cannot test the generator. Any other miss fails."""
    seen = []
    for attempt in range(ATTEMPTS):
        rec = session_runs(with_fleet, testbed, [make_spec(attempt)])[0]
        assert rec["status"] in ("ok", "invalid"), rec["reason"]
        f = figures(rec)
        seen.append(f)
        if ok(f):
            return rec
        if len(seen) == DISTURBED_ENOUGH and all(disturbed(x, max_excluded) for x in seen):
            break  # a disturbed stretch lasts longer than a run: a third attempt only costs time
    if all(disturbed(f, max_excluded) for f in seen):
        pytest.skip(f"{what}: the machine took the generator's core away in every attempt (ms of the window "
                    f"touched by its machine-caused stalls: {[f['outside_stalls']['excluded_ms'] for f in seen]} of "
                    f"{seen[0]['outside_stalls']['of_ms']}, cap {max_excluded:.0%}; stall ms by cause: "
                    f"{[f['stall_ms_by_cause'] for f in seen]}): {seen}")
    if all(disturbed(f, max_excluded) or meter_explains_tail(f) for f in seen):
        pytest.skip(f"{what}: in every attempt the machine stopped (hiccup meter max "
                    f"{[f['hiccup_max_us'] for f in seen]} us, limit {METER_STALL_US}) or took the generator's core "
                    f"away, and only the send lag's tail missed: {seen}")
    pytest.fail(f"{what}: no attempt met the criterion: {seen}")


@pytest.mark.usefixtures("quiet_machine")
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("rate", [5000, 15000, 25000, 45000])
def test_uniform_sends_keep_the_schedule(with_fleet, testbed, rate, size):
    """Criterion 1: per-ms dispersion <= 0.2, no periodogram line above 20 x n x mean; send lag
    p99 <= 50 us and p99.9 <= 250 us up to 25,000 req/s (above, p99 <= HIGH_RATE_LAG_P99_US)."""
    rec = check_with_attempts(with_fleet, testbed, lambda a: spec(rate, size), lambda f: meets_pacing(f, lag_bound=rate <= 25000),
                              f"{rate} req/s {size}")
    assert rec["counts"]["errors"] == 0 and rec["achieved_rate"] >= 0.99 * rate


@pytest.mark.usefixtures("quiet_machine")
def test_poisson_arrivals_have_dispersion_one(with_fleet, testbed):
    check_with_attempts(with_fleet, testbed, lambda a: spec(15000, arrival="poisson", seed=a + 1),
                        lambda f: meets_pacing(f, poisson=True), "poisson 15000 req/s")


@pytest.mark.usefixtures("quiet_machine")
def test_two_threads_interleave_into_one_schedule(with_fleet, testbed):
    """Criterion 6. Each thread pins itself to one CPU of client_cpus. With fewer than 3 CPUs the
    second thread shares nginx's CPU and is off it whenever nginx runs (52-62 % of the window in
    three runs on this 2-core testbed, 2026-11-28; its raw send lag p99 then 0.3-1.5 ms): the
    merged schedule is then judged outside the threads' listed stalls, which may cover up to 75 %
    of the window. With 3 CPUs or more the usual 10 % cap applies."""
    shared = len(os.sched_getaffinity(0)) < 3
    cap = 0.75 if shared else MAX_EXCLUDED
    rec = check_with_attempts(with_fleet, testbed, lambda a: spec(15000, threads=2, client_cpus=(0, 1)),
                              lambda f: meets_pacing(f, max_excluded=cap), "two threads at 15000 req/s", max_excluded=cap)
    assert rec["settings"]["generator_info"]["pipeline"] >= 32


@pytest.mark.usefixtures("quiet_machine")
def test_known_server_delay_moves_p50_and_p99_by_it(with_fleet, testbed):
    """Criterion 4: nginx's echo_sleep of 5 ms moves p50 and p99 by 4.0-6.5 ms. Why 4.0, not
    5.0: nginx's clock is whole milliseconds, truncated (src/core/ngx_times.c: ngx_current_msec
    = sec * 1000 + usec / 1000), and a timer fires once ngx_current_msec reaches its key
    (src/event/ngx_event_timer.c), so a request arriving 0.x ms into a millisecond waits
    5 - 0.x ms: 4-5 ms, uniformly, plus the wake-up (measured here: +4.6 to +4.8 ms at p50)."""
    seen = []
    for _ in range(ATTEMPTS):  # the timing policy: a VM stall in either run moves its p99
        base, slow = session_runs(with_fleet, testbed, [spec(5000), spec(5000, server_delay_s=0.005)])
        assert base["status"] in ("ok", "invalid") and slow["status"] in ("ok", "invalid"), (base["reason"], slow["reason"])
        moved = {p: (slow["latency"]["percentiles"][p] - base["latency"]["percentiles"][p]) / 1000 for p in ("50", "99")}
        # p99 is judged only when neither run saw the machine stall (a 1-10 ms VM stall sets
        # a 5 s run's p99 on this testbed); p50 always.
        stalled = machine_stalled(figures(base)) or machine_stalled(figures(slow))
        if 4.0 <= moved["50"] <= 6.5 and (stalled or 4.0 <= moved["99"] <= 6.5):
            return
        seen.append(moved)
    pytest.fail(f"a 5 ms server delay moved p50/p99 by {seen} ms, not 4.0-6.5")


@pytest.mark.usefixtures("quiet_machine")
def test_agrees_with_h2load_where_h2load_is_smooth(with_fleet, testbed):
    """Criterion 5: 100 req/s over one connection (h2load then sends one request per 10 ms tick):
    medians of p50 over 5 interleaved runs of each agree within 20 %, each from the actual send
    (h2load's only figure; ours is the record's uncorrected histogram). Ours from the intended
    time is not compared: at 100 req/s our thread sleeps until 1 ms before each send, and a
    wake-up that steal makes later than that is (rightly) charged to ours and not to h2load's
    (the two failures of this test in ten runs, 2026-11-28: 926 against 557 us)."""
    specs = []
    for _ in range(3):
        specs += [spec(100, connections=1, duration_s=1.0), spec(100, connections=1, duration_s=1.0, generator="h2load")]
    recs = session_runs(with_fleet, testbed, specs)
    assert all(r["status"] in ("ok", "invalid") for r in recs), [r["reason"] for r in recs]
    ours = statistics.median(r["latency"]["percentiles_uncorrected"]["50"] for r in recs[0::2])
    theirs = statistics.median(r["latency"]["percentiles"]["50"] for r in recs[1::2])
    assert abs(ours - theirs) <= 0.2 * theirs, (ours, theirs)


def test_unreachable_server_and_bad_arguments_give_one_message(with_fleet, testbed):
    """Criterion 8: nothing listening, or a bad argument: one line on stderr, a non-zero exit
    within seconds, no generator left running."""
    ep = host_endpoint(testbed, port=PORT)

    async def body(fleet):
        built = await ensure_built(fleet.client, "openloop")
        base = [built.path, "--host", ep.connect_address, "--path", "/small", "--duration", "1", "--warmup", "0"]
        refused = await fleet.client.run(base + ["--port", "9", "--rate", "100"], check=False, timeout=30)
        bad = await fleet.client.run(base + ["--port", str(PORT), "--rate", "lots"], check=False, timeout=30)
        left = await fleet.client.run(["pgrep", "-f", "^/run/cnibench/bin/cnib-openloop"], check=False)
        return refused, bad, left

    refused, bad, left = with_fleet(body)
    assert refused.exit_status == 1 and refused.seconds < 10
    assert refused.stderr.strip().count("\n") == 0 and "cannot connect" in refused.stderr and "refused" in refused.stderr
    assert bad.exit_status == 2 and "--rate must be a number" in bad.stderr and bad.stderr.strip().count("\n") == 0
    assert left.exit_status == 1, left.stdout


CHUNKED_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
s.settimeout(20)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        while c.recv(4096):
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    except OSError:
        pass
    c.close()
"""


def test_a_chunked_response_is_refused_with_one_message(with_fleet, testbed):
    """Responses are framed by Content-Length only: a chunked one stops the generator with one
    line naming it and exit 1, instead of a misread body."""
    ep = host_endpoint(testbed, port=PORT + 1)

    async def body(fleet):
        built = await ensure_built(fleet.client, "openloop")
        srv = await fleet.server.start(["python3", "-c", CHUNKED_SERVER, ep.server_bind, str(PORT + 1)])
        try:
            await asyncio.sleep(0.5)
            return await fleet.client.run([built.path, "--host", ep.connect_address, "--port", str(PORT + 1), "--path", "/small",
                                           "--rate", "100", "--duration", "1", "--warmup", "0"], check=False, timeout=30)
        finally:
            await srv.stop()

    r = with_fleet(body)
    assert r.exit_status == 1 and "chunked" in r.stderr and r.stderr.strip().count("\n") == 0, (r.exit_status, r.stderr)


# --- the log against the wire -------------------------------------------------------------


def pcap_request_times(data: bytes) -> np.ndarray:
    """Realtime ns of each HTTP request seen in a pcap (Ethernet, IPv4, TCP; one per 'GET /')."""
    magic = struct.unpack("<I", data[:4])[0]
    scale = 1000 if magic == 0xA1B2C3D4 else 1  # µs or ns timestamps
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(pkt) < 34 or pkt[12:14] != b"\x08\x00":
            continue
        ihl = (pkt[14] & 0x0F) * 4
        tcp = 14 + ihl
        payload = pkt[tcp + (pkt[tcp + 12] >> 4) * 4:]
        out += [sec * 10**9 + frac * scale] * payload.count(b"GET /")
    return np.array(sorted(out), dtype=np.int64)


@pytest.mark.usefixtures("quiet_machine")
@pytest.mark.parametrize("rate", [5000, 25000])
def test_log_matches_the_wire(with_fleet, testbed, rate):
    """Criterion 2: per-ms send counts from the log and from a capture in the server's
    namespace (clocks aligned by the median offset) differ by <= 2 % of the requests."""
    ep = host_endpoint(testbed, port=PORT)
    duration, warmup = 2.0, 0.5

    async def body(fleet):
        client, server = fleet.client, fleet.server
        built = await ensure_built(client, "openloop")
        ng = await nginx_mod.start(server, None, nginx_mod.NginxSpec(bind=ep.server_bind, port=PORT, max_connections=1024))
        pcap, log = "/run/cnibench/test-wire.pcap", "/run/cnibench/test-wire.log"
        try:
            dump = await server.start(["tcpdump", "-i", server.spec.data_interface, "-U", "-n", "-s", "0", "-w", pcap,
                                       f"tcp dst port {PORT} and tcp[tcpflags] & tcp-push != 0"])
            await asyncio.sleep(1.0)  # tcpdump is listening
            r = await client.run([built.path, "--host", ep.connect_address, "--port", str(PORT), "--path", "/small",
                                  "--rate", str(rate), "--connections", str(max(10, rate // 100)), "--duration", str(duration),
                                  "--warmup", str(warmup), "--cpus", "0", "--log", log], timeout=60)
            await asyncio.sleep(0.5)
            await dump.stop(sig="INT", grace=5)
            return r.stdout, await client.read_file(log), await server.read_file(pcap)
        finally:
            await ng.stop()
            await client.run(["rm", "-f", pcap, log], check=False)

    stdout, logdata, pcapdata = with_fleet(body)
    summary = parse_summary(stdout)
    rows = np.frombuffer(logdata, dtype=RECORD)
    sent = np.sort(rows["sent"][rows["sent"] >= 0]) + summary["t0_realtime_ns"]
    wire = pcap_request_times(pcapdata)
    offset = align(sent, wire)
    # Bin edges half a send interval away from the schedule's points: on a uniform schedule the
    # sends sit on ms boundaries, where a µs of capture jitter would flip them between bins.
    start = int(sent[0] + 0.5e9 / rate)
    end = start + int(duration * 1e9) - 2_000_000
    ours = lat.per_ms_counts(sent + offset, start + offset, end + offset)
    theirs = lat.per_ms_counts(wire, start + offset, end + offset)
    differ = int(np.abs(ours - theirs).sum())
    assert differ <= 0.02 * ours.sum(), (differ, int(ours.sum()), int(theirs.sum()), offset)


def align(sent: np.ndarray, wire: np.ndarray) -> int:
    """The clock offset wire - log: the median distance from each captured request to the
    nearest logged send, refined once around the first estimate."""
    offset = 0
    for _ in range(2):
        shifted = sent + offset
        i = np.clip(np.searchsorted(shifted, wire), 1, len(shifted) - 1)
        nearest = np.where(wire - shifted[i - 1] < shifted[i] - wire, shifted[i - 1], shifted[i])
        offset += int(np.median(wire - nearest))
    return offset


@pytest.mark.usefixtures("quiet_machine")
def test_a_stopped_generator_lists_the_stall_and_is_on_schedule_outside_it(with_fleet, testbed):
    """The generator's own stall detector: stopped (SIGSTOP) for 30 ms, its thread is off the
    CPU, and the summary lists a stall of about that length at that time; the raw send lag
    shows it, and outside the listed stalls the sends meet criterion 1."""
    stop_s, at = 0.03, {}

    async def stop(ctx):
        await asyncio.sleep(ctx.spec.warmup_s + 1.0)
        pids = (await ctx.fleet.client.run(["pgrep", "-P", str(ctx.generator.pid)], check=False)).stdout.split()
        assert pids, "the generator's process was not found under its wrapper"
        r = await ctx.fleet.client.run(["python3", "-c", STOP_SH, pids[0], f"{stop_s:g}"])
        at["ns"] = int(r.stdout.strip())

    seen = []
    for _ in range(ATTEMPTS):
        rec = session_runs(with_fleet, testbed, [spec(15000, duration_s=2.5)], during=stop)[0]
        info, f = rec["settings"]["generator_info"], figures(rec)
        largest = max(info["stalls_largest"], key=lambda st: st[3])
        assert largest[3] >= 0.9 * at["ns"], (largest, at)  # the stop is the largest stall, whatever else
        assert largest[2] - largest[1] >= largest[3] and info["offcpu_s"] >= largest[3] / 1e9
        assert rec["latency"]["send_lag"]["percentiles"]["100"] >= 0.9 * at["ns"] / 1e3  # the raw figures keep it
        o = f["outside_stalls"]
        seen.append({"stall": largest, "outside": o})
        if not disturbed({"outside_stalls": o}) and outside_met(o):
            return
        if len(seen) == DISTURBED_ENOUGH and all(disturbed({"outside_stalls": x["outside"]}) for x in seen):
            break
    if all(disturbed({"outside_stalls": x["outside"]}) for x in seen):
        pytest.skip(f"the stop was listed, but the machine took the generator's core away for more than "
                    f"{MAX_EXCLUDED:.0%} of the window in every attempt: {seen}")
    pytest.fail(f"outside its stalls the generator missed criterion 1 in every attempt: {seen}")


# --- the stall sweep ----------------------------------------------------------------------

STOP_SH = r"""
import os, signal, sys, time
pid, stall = int(sys.argv[1]), float(sys.argv[2])
os.kill(pid, signal.SIGSTOP)
t0 = time.monotonic_ns()
time.sleep(stall)
t1 = time.monotonic_ns()
os.kill(pid, signal.SIGCONT)
print(t1 - t0)
"""


def slower_than(rec, us: float) -> int:
    h = decode_histogram(rec["latency"]["histogram"])
    return sum(it.count_at_value_iterated_to for it in h.get_recorded_iterator() if it.value_iterated_to > us)


@pytest.mark.usefixtures("quiet_machine")
# 20 ms is not checked here: on this VM the machine's own stalls (the hiccup meter sees 4-8 ms
# at most and 11-48 ms in all per 3.5 s run, idle) move the counts by +-100 requests against an
# effect of ~300, and 3 attempts matched the model in 0 to 1 of 3 tries (2026-11-27). 200 ms
# matched in every try. A quieter machine can add 0.02 back.
@pytest.mark.parametrize("stall_s", [0.2])
def test_stall_sweep_counts_every_request_due_during_the_stall(with_fleet, testbed, stall_s):
    """Criterion 3 (runs on every change: no coordinated omission): the nginx worker stopped for
    a measured T at 15,000 req/s. For x in 0.1..0.9, the requests slower than x * T, less what
    a stall-free run has above that threshold, must be K (1 - x) within +-max(15 %, R * 0.5 ms
    requests) of a fitted K, with K >= R * T.

    Up to ATTEMPTS pairs of runs (the timing policy). The fit is K (1 + eps - x) (eps T: how much longer than measured the server was away, |eps|
    <= 0.15). Why a fitted K and not the issue's R * T: after the stall the backlog drains at the server's
    rate mu, and requests that arrive while it drains wait too. A request due s into the stall
    waits T - s (1 - rho), rho = R / mu; counting those above x T during and after the stall
    gives R T (1 - x) / (1 - rho) for every x: linear in (1 - x), with the issue's R T (1 - x)
    as the limit rho -> 0. rho here (~0.3-0.5, the server core's load) is not known well enough
    to plug in, so the test checks the shape and that K = R T / (1 - rho) implies 0 <= rho < 0.9.
    A closed-loop client fails both: it sees only the requests in flight (K << R T)."""
    rate = 15000
    measured = {}

    async def stall(ctx):
        await asyncio.sleep(ctx.spec.warmup_s + 1.0)
        r = await ctx.fleet.server.run(["python3", "-c", STOP_SH, str(ctx.nginx.worker_pids[0]), f"{stall_s:g}"])
        measured["ns"] = int(r.stdout.strip())

    seen, noisy = [], []
    for _ in range(ATTEMPTS):  # the timing policy above: this VM's own 1-10 ms stalls rival a 20 ms one
        calm = session_runs(with_fleet, testbed, [spec(rate, duration_s=2.5, metrics=True)])[0]
        stalled = session_runs(with_fleet, testbed, [spec(rate, duration_s=2.5, metrics=True)], during=stall)[0]
        # Read whatever the guards say (the stalled run is invalid by design; this VM's own
        # stalls may mark the calm one too: its counts above each threshold are in the model).
        assert calm["status"] in ("ok", "invalid") and stalled["status"] in ("ok", "invalid"), (calm["reason"], stalled["reason"])
        problem = stall_sweep_problem(calm, stalled, rate, measured["ns"] / 1e9)
        if problem is None:
            return
        seen.append(problem)
        noisy.append(sweep_noise(calm, stalled))
    if all(noisy):
        pytest.skip(f"stall of {stall_s} s: every attempt missed on a disturbed machine ({noisy}): {seen}")
    pytest.fail(f"stall of {stall_s} s: no attempt matched (machine figures per attempt: {noisy}): {seen}")


SWEEP_MAX_STEAL = 0.02  # the steal guard's default limit (workload/guards.py): above it a run is disturbed


def sweep_noise(*recs) -> str:
    """Why a pair of stall-sweep runs could not test the model ('' when neither was disturbed):
    steal on the pinned cores above the steal guard's limit, or the generator's core taken away
    for more than the pacing tests' cap, by the records' own figures."""
    out = []
    for name, rec in zip(("calm", "stalled"), recs):
        steal = (rec.get("hygiene") or {}).get("figures", {}).get("steal")
        if steal is not None and steal > SWEEP_MAX_STEAL:
            out.append(f"{name}: steal {steal:.1%} > {SWEEP_MAX_STEAL:.0%}")
        if disturbed(figures(rec)):
            o = figures(rec)["outside_stalls"]
            out.append(f"{name}: generator's core taken away {o['excluded_ms']} of {o['of_ms']} ms")
    return "; ".join(out)


def stall_sweep_problem(calm, stalled, rate, real) -> str | None:
    """None when the excess of slow requests is K (1 + eps - x) as the docstring above says."""
    xs = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    excess = np.array([slower_than(stalled, x * real * 1e6) - slower_than(calm, x * real * 1e6) for x in xs], dtype=float)
    slope, intercept = np.polyfit(xs, excess, 1)
    k, eps = -slope, intercept / -slope - 1
    rho = 1 - rate * real / k
    if not (-0.1 <= rho < 0.9 and abs(eps) <= 0.15):
        return f"rho {rho:.2f} eps {eps:.2f} excess {excess.tolist()} R*T {rate * real:.0f}"
    for x, got in zip(xs, excess):
        want = k * (1 + eps - x)
        if abs(got - want) > max(0.15 * want, rate * 0.0005):
            return f"x {x}: {got:.0f} vs {want:.0f} (excess {excess.tolist()}, rho {rho:.2f}, eps {eps:.2f}, T {real:.4f})"
    return None
