"""cnib-openloop: the project's own open-loop generator (source: workload/loadgen/openloop.c).

Command: `cnib-openloop --host A --port P --path /small --rate R ... --log FILE` (openloop.c's
usage; `--start-at NS` for several clients, version 8), built on the client host at set-up
(`prepare`), named by its source's hash: the command is a pure function of the spec.

Its guarantee: request k has an intended send time fixed before the run (uniform at rate R, or
Poisson), is sent at that time on the next connection with fewer than M requests in flight,
and its latency counts from the intended time. Its limits, read from its source: the clock is
CLOCK_MONOTONIC via the vDSO (ns); within 1 ms of a due time the thread busy-polls, so a due
request goes out on the loop's first pass after its time (lag: the loop's period plus the write
call, a few µs here); further off it sleeps in epoll (a response wakes it); when every
connection of a thread has M requests in flight, due requests wait and their lag grows
(logged and charged, never hidden).

The log has one 32-byte record per request due in the window (warm-up excluded): intended,
sent and completed times (ns since the schedule's origin; -1: did not happen), the HTTP status
(-1: the connection broke with the request in flight, -2: never sent, 0: no answer before the
generator gave up, `timeout_s` after the last due time), and the connection.

With `hist_path` (version >= 6, `--histograms`; the default since issue 27, BenchSpec
openloop_histograms) the generator keeps histograms instead (openloop_hist.py: layouts and
file) and the record is built from them (result_from_histograms); the log is then sampled
(`log_every` N: every N-th request of the window; 0: none; by default at most 100,000 kept,
defaults.sampled_log_every), for the send-lag figures outside the stalls and for cross-checks.
Its memory no longer grows with the rate.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .. import latency as lat
from ...catalog import PREFIX
from ..loadgen import binary_path, ensure_built
from . import openloop_hist as oh
from .base import LoadResult, LoadSpec, Sends, broken_run

RECORD = np.dtype([("intended", "<i8"), ("sent", "<i8"), ("done", "<i8"), ("status", "<i4"), ("conn", "<u4")])
ST_CONNERR, ST_NOTSENT, ST_NONE = -1, -2, 0
PERCENTILES = ("50", "90", "99", "99.9", "100")


def default_pipeline(rate_per_connection: float | None) -> int:
    """Requests in flight per connection: one second's worth, at least 32, so sends keep their
    schedule through a server stall of a second (the stall test stops nginx for 200 ms)."""
    if rate_per_connection is None:
        return 1
    return max(32, min(65536, math.ceil(rate_per_connection)))


class Openloop:
    name = "openloop"
    binary = f"{PREFIX}-openloop"
    busy_polls = True  # its CPU is ~100 % by design: the send lag, not the CPU, says if it kept up
    raises_nofile = True  # it raises its soft open-file limit to the hard one (openloop.c's raise_nofile)

    def files(self, spec: LoadSpec) -> dict[str, str]:
        out = {"log": spec.log_path, "cpu": spec.cpu_path}
        if spec.hist_path:
            out["histograms"] = spec.hist_path
            if not spec.log_every:
                del out["log"]
        return out

    async def prepare(self, host):
        """Build the binary on the client host if it is not there yet (returns loadgen.Built)."""
        return await ensure_built(host, "openloop")

    def command(self, spec: LoadSpec) -> list[str]:
        if spec.rate is None:
            raise ValueError(f"{PREFIX}-openloop is open-loop only: give a rate (closed-loop runs use h2load)")
        argv = [binary_path("openloop"), "--host", spec.address, "--port", str(spec.port), "--path", spec.path,
                "--rate", f"{spec.rate:.6f}", "--connections", str(spec.connections), "--threads", str(spec.threads),
                "--duration", f"{spec.duration_s:g}", "--warmup", f"{spec.warmup_s:g}", "--pipeline",
                str(spec.pipeline), "--timeout", f"{spec.timeout_s:g}", "--arrival", spec.arrival, "--seed",
                str(spec.seed)]
        if spec.cpus:
            argv += ["--cpus", ",".join(map(str, spec.cpus))]
        if spec.start_at_ns:
            argv += ["--start-at", str(int(spec.start_at_ns))]
        if spec.log_path and not (spec.hist_path and not spec.log_every):
            argv += ["--log", spec.log_path]
        if spec.hist_path:
            argv += ["--histograms", spec.hist_path]
            if spec.log_every > 1:
                argv += ["--log-every", str(spec.log_every)]
        return argv

    def parse(self, spec: LoadSpec, stdout: str, stderr: str, exit_status: int, files: dict[str, bytes]) -> LoadResult:
        summary = parse_summary(stdout)
        if exit_status != 0 or summary is None:
            return broken_run(f"{PREFIX}-openloop", exit_status, stdout, stderr)
        if spec.hist_path:
            return parse_with_histograms(spec, summary, files)
        rows = parse_log(files.get("log", b""))
        if len(rows) != summary["window_requests"]:
            return LoadResult(ok=False, reason=f"{PREFIX}-openloop logged {len(rows)} requests, its summary says "
                              f"{summary['window_requests']}")
        return result_from_log(spec, rows, summary, steal_context(files))


def parse_summary(stdout: str) -> dict | None:
    """The generator's one-line JSON summary (the last line that parses)."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            out = json.loads(line)
        except ValueError:
            continue
        if isinstance(out, dict) and out.get("generator") == f"{PREFIX}-openloop":
            return out
    return None


def parse_log(data: bytes) -> np.ndarray:
    """The binary log as a structured array (a torn tail, from a killed generator, is dropped)."""
    usable = len(data) - len(data) % RECORD.itemsize
    return np.frombuffer(data[:usable], dtype=RECORD)


def send_lag_summary(lag_ns: np.ndarray) -> dict:
    """Percentiles of sent - intended (µs, exact from the log, not binned) and the count above 1 ms."""
    if len(lag_ns) == 0:
        return {"unit": "us", "percentiles": None, "over_1ms": 0, "n": 0}
    pcts = np.percentile(lag_ns, [float(p) for p in PERCENTILES]) / 1e3
    return {"unit": "us", "percentiles": {p: round(float(v), 3) for p, v in zip(PERCENTILES, pcts)},
            "over_1ms": int((lag_ns > 1_000_000).sum()), "n": int(len(lag_ns))}


def result_from_log(spec: LoadSpec, rows: np.ndarray, summary: dict, ctx: dict | None = None) -> LoadResult:
    """Counts, histograms, send lag, pacing and the timeline from the log (pure)."""
    if len(rows) == 0:
        return LoadResult(ok=False, reason=f"{PREFIX}-openloop had no request due in the measurement window")
    status, intended, sent, done = rows["status"], rows["intended"], rows["sent"], rows["done"]
    good = (status >= 200) & (status < 300)
    latency_ns = np.where(done >= 0, done - intended, -1)
    late = good & (latency_ns > spec.timeout_s * 1e9)
    unanswered = status == ST_NONE
    answered_ok = good & ~late
    errors = int(((status != ST_NONE) & ~good).sum())  # broken connections, non-2xx, never sent
    window_start = int(spec.warmup_s * 1e9)
    window_end = window_start + int(spec.duration_s * 1e9)
    was_sent = sent >= 0
    lat_us = np.ceil(latency_ns[answered_ok] / 1e3).astype(np.int64)  # from the intended time
    svc_us = np.ceil((done - sent)[answered_ok] / 1e3).astype(np.int64)  # from the actual send
    lag = (sent - intended)[was_sent]
    ok_count = int(answered_ok.sum())
    all_lat_us = np.ceil(np.where(done >= 0, latency_ns, 0) / 1e3).astype(np.int64)
    return LoadResult(
        ok=True,
        requests=int(len(rows)),
        ok_count=ok_count,
        errors=errors,
        timeouts=int(late.sum() + unanswered.sum()),
        unfinished=int(unanswered.sum()),
        window_s=spec.duration_s,
        achieved_rate=ok_count / spec.duration_s if spec.duration_s > 0 else 0.0,
        histogram=lat.histogram_of(lat_us),
        histogram_uncorrected=lat.histogram_of(svc_us),
        # Per second of the window by completion time, as for every generator.
        timeline=lat.timeline(done // 1000, all_lat_us, ~answered_ok, window_start // 1000,
                              int(round(spec.duration_s))),
        correction={"method": "none: latency from each request's intended send time"},
        source=f"{PREFIX}-openloop per-request log; latency from the intended send time (open loop)",
        send_lag=send_lag_summary(lag),
        pacing=pacing_figures(intended, sent, window_start, window_end, summary),
        sends=Sends(*lat.send_counts(intended, sent, window_start, window_end),
                    machine_mask(summary, window_start, (window_end - window_start) // 1_000_000), window_start,
                    intended, sent, lag_ns=lag),
        outside_steal=outside_steal(intended, answered_ok, lat_us, summary, ctx, (window_start, window_end),
                                    spec.seed),
        generator_info={**{k: summary.get(k)
                           for k in ("version", "arrival", "pipeline", "reconnects", "t0_realtime_ns", "work_s",
                                     "sent", "not_sent", "window_requests", "offcpu_s", "stalls_dropped",
                                     "peak_rss_kb")},
                        **stall_summary(summary)},
    )


def parse_with_histograms(spec: LoadSpec, summary: dict, files: dict[str, bytes]) -> LoadResult:
    """The record from the generator's histogram file, with its sampled log when there is one."""
    if not summary.get("histograms"):
        return LoadResult(ok=False, reason=f"{PREFIX}-openloop {summary.get('version')} wrote no histograms (version "
                          ">= 6 does)")
    try:
        hists = oh.parse_histograms(files.get("histograms", b""))
    except ValueError as e:
        return LoadResult(ok=False, reason=f"{PREFIX}-openloop's histogram file: {e}")
    rows = parse_log(files["log"]) if files.get("log") else None
    return result_from_histograms(spec, hists, summary, rows, steal_context(files))


def result_from_histograms(spec: LoadSpec, h: dict, summary: dict, rows: np.ndarray | None = None,
                           ctx: dict | None = None) -> LoadResult:
    """result_from_log's fields from the generator's histograms (pure). Percentiles are each
    bucket's highest value (hdrh's convention); the timeline's at 2 significant digits. The
    send-lag figures outside the stalls need per-request times: from the sampled log when
    there is one (`rows`), else None."""
    window = int(summary["window_requests"])
    if window == 0:
        return LoadResult(ok=False, reason=f"{PREFIX}-openloop had no request due in the measurement window")
    late, unfinished = h["late"], int(summary["unfinished"])
    ok_count = int(summary["ok"]) - late
    start = int(spec.warmup_s * 1e9)
    end = start + int(spec.duration_s * 1e9)
    nbins = (end - start) // 1_000_000
    actual, scheduled = oh.dense(h["ms_sent"], nbins), oh.dense(h["ms_sched"], nbins)
    pacing = lat.pacing_of_counts(actual, scheduled)
    mask = machine_mask(summary, start, nbins)
    if mask is not None:
        pacing["outside_stalls"] = {**lat.pacing_outside_counts(actual, scheduled, mask), "send_lag_p99_us": None,
                                    "send_lag_p999_us": None,
                                    "own_stalls": sum(stall_cause(s) == "own" for s in summary["stalls"])}
        if rows is not None and len(rows):
            from_log = pacing_figures(rows["intended"], rows["sent"], start, end, summary)["outside_stalls"]
            pacing["outside_stalls"].update(
                {k: from_log[k] for k in ("send_lag_p99_us", "send_lag_p999_us", "late_outside")
                                             if k in from_log}, sampled_log_every=int(summary.get("log_every", 1)))
    return LoadResult(
        ok=True, requests=window, ok_count=ok_count,
        errors=int(summary["http_errors"]) + int(summary["conn_errors"]) + int(summary["not_sent"]),
        timeouts=late + unfinished, unfinished=unfinished, window_s=spec.duration_s,
        achieved_rate=ok_count / spec.duration_s if spec.duration_s > 0 else 0.0,
        histogram=oh.to_hdrh(*h["lat"]), histogram_uncorrected=oh.to_hdrh(*h["svc"]),
        timeline=oh.timeline(h, int(round(spec.duration_s))),
        correction={"method": "none: latency from each request's intended send time"},
        source=f"{PREFIX}-openloop histograms (3 significant digits); latency from the intended send time (open loop)",
        send_lag=oh.send_lag(*h["lag"], PERCENTILES), pacing=pacing,
        sends=Sends(actual, scheduled, mask, start,
                    rows["intended"] if rows is not None and len(rows) else None,
                    rows["sent"] if rows is not None and len(rows) else None, lag_hist=tuple(h["lag"])),
        outside_steal=outside_steal_from_slots(h, scheduled, window, start, summary, ctx, spec.seed),
        generator_info={**{k: summary.get(k)
                           for k in ("version", "arrival", "pipeline", "reconnects", "t0_realtime_ns", "work_s",
                                     "sent", "not_sent", "window_requests", "offcpu_s", "stalls_dropped",
                                     "peak_rss_kb", "log_every")},
                        "record_from": "histograms", **stall_summary(summary)},
    )


def machine_mask(summary: dict, start: int, nbins: int) -> np.ndarray | None:
    """The window's per-ms bins the machine's stalls touched (None: a generator that lists none)."""
    if "stalls" not in summary:
        return None
    return lat.stall_mask([(s[1], s[2]) for s in machine_stalls(summary["stalls"])], start, nbins)


def outside_steal_from_slots(h: dict, scheduled: np.ndarray, window: int, start: int, summary: dict,
                             ctx: dict | None = None, seed: int = 0) -> dict | None:
    """outside_steal() from the 1 ms slot histograms: each mask rounded out to whole slots of
    intended time, the histograms at the slots' 1 significant digit."""
    if "intervals" not in summary:
        return None

    def one(episodes, lead, tail_min):
        mask = oh.slot_mask(episodes, start, len(scheduled), lead, tail_min)
        left_out = int(scheduled[mask].sum())
        return {"histogram": oh.to_hdrh(*oh.masked_counts(h["slots"], mask), half=oh.H1), "left_out": left_out,
                "of": window, "left_out_share": round(left_out / window, 6) if window else 0.0,
                "resolution": "1 significant digit, 1 ms slots of intended time"}
    return steal_variants(summary, ctx or {}, start, start + len(scheduled) * 1_000_000, seed, one)


STALLS_KEPT = 50  # the largest of the generator's own stalls kept in the record
CAUSES = ("steal", "preempted", "own", "stopped")  # stall causes, by the generator's code (openloop.c, version >= 5)


def stall_cause(stall: list) -> str:
    """Why the generator was off its CPU in a listed stall: "steal" (no context switch: the
    hypervisor), "preempted" (another task of this kernel), "stopped" (SIGSTOP from outside),
    "own" (the thread blocked by itself: the generator's fault); "unknown" before version 5."""
    return CAUSES[stall[4]] if len(stall) > 4 and 0 <= stall[4] < len(CAUSES) else "unknown"


def machine_stalls(stalls: list) -> list:
    """The stalls the machine caused (every cause but the generator's own)."""
    return [s for s in stalls or [] if stall_cause(s) != "own"]


def stall_summary(summary: dict) -> dict:
    """The generator's own stalls (passes in which its thread was off its CPU > stall_ns):
    how many, the largest, the STALLS_KEPT largest as [thread, start_ns, end_ns, off_ns(,
    cause, run_delay_ns)], and the off-CPU ms of the listed stalls by cause."""
    stalls = summary.get("stalls") or []
    largest = sorted(stalls, key=lambda s: -s[3])[:STALLS_KEPT]
    by_cause: dict[str, float] = {}
    for s in stalls:
        by_cause[stall_cause(s)] = by_cause.get(stall_cause(s), 0.0) + s[3] / 1e6
    return {"stalls": len(stalls), "stall_max_us": round(largest[0][3] / 1e3, 1) if largest else 0.0,
            "stalls_largest": sorted(largest, key=lambda s: s[1]),
            "stall_ms_by_cause": {k: round(v, 3) for k, v in sorted(by_cause.items())}}


def pacing_figures(intended: np.ndarray, sent: np.ndarray, start: int, end: int, summary: dict) -> dict:
    """Criterion 1's pacing figures; with a generator that lists its stalls (version >= 2), also
    the same figures outside the stalls the machine caused (latency.pacing_outside_stalls): a
    miss the machine caused, by taking the generator's core away, vanishes there; a miss of the
    generator's own stays, and so do its own stalls (version >= 5 tells them apart). Version 5
    also keeps its shorter gaps and slow loop passes, from which `late_outside` says what each
    send late by more than LATE_US outside those stalls coincided with."""
    out = lat.pacing(intended, sent, start, end)
    if "stalls" in summary:
        mask = machine_mask(summary, start, (end - start) // 1_000_000)
        out["outside_stalls"] = lat.pacing_outside_stalls(intended, sent, start, end, mask)
        own = [s for s in summary["stalls"] if stall_cause(s) == "own"]
        out["outside_stalls"]["own_stalls"] = len(own)
        if "intervals" in summary:
            out["outside_stalls"]["late_outside"] = lat.late_sends_by_cause(intended, sent, start, mask,
                                                                            summary["intervals"], LATE_US,
                                                                            summary.get("short_ns", 20000))
    return out


def steal_context(files: dict | None) -> dict:
    """What the run observed beside the generator, for the steal masks: files["steal_context"],
    JSON from session.steal_context_bytes: {"server": [[start, end, stolen], ...] (realtime ns)
    or null, "server_note", "accounting": {"client": "paravirt"|"unknown", "server": ...},
    "accounting_reasons"}; {} when absent. Only numbers and strings are read from it."""
    raw = (files or {}).get("steal_context")
    try:
        ctx = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return ctx if isinstance(ctx, dict) else {}


def episodes_by_core(summary: dict, ctx: dict) -> dict[str, list[tuple[int, int, int]]]:
    """Each observed core's steal episodes, (start, end, stolen) in ns since the generator's t0:
    the generator's own (latency.steal_episodes) and the server probe's, moved from the realtime
    clock by the generator's t0_realtime_ns (one clock on the testbed's shared machine; on two
    machines, their clock offset is an error of the server's episodes)."""
    out = {"client": lat.steal_episodes(summary.get("stalls"), summary["intervals"], summary.get("short_ns", 20000))}
    server, t0 = ctx.get("server"), summary.get("t0_realtime_ns")
    if isinstance(server, list) and t0 is not None:
        out["server"] = sorted((int(b) - int(t0), int(e) - int(t0), int(st)) for b, e, st in server)
    return out


def mask_withheld(ctx: dict, cores: list[str]) -> str | None:
    """Why the conditional figures of a run are withheld, or None: a core whose kernel's steal
    accounting is not known to keep steal out of a thread's CPU time (stealacct), or nginx's
    core not observed (both cores' steal is what the mask is for)."""
    acc, reasons = ctx.get("accounting") or {}, ctx.get("accounting_reasons") or {}
    for role in cores:
        if acc.get(role) != "paravirt":
            why = reasons.get(role) or "its steal accounting was not checked"
            return f"the {role} core's steal split is unknown: {why}"
    if "server" not in cores:
        return f"the server's core was not observed: {ctx.get('server_note') or 'no server probe in this run'}"
    return None


def steal_variants(summary: dict, ctx: dict, start: int, end: int, seed: int, one) -> dict:
    """The main mask's figures with its "wide" and "placebo" variants inside (`one(episodes, lead,
    tail_min)` gives a variant's histogram and left-out counts), each with what it was built from."""
    by_core = episodes_by_core(summary, ctx)
    cores = [c for c in ("client", "server") if c in by_core]
    withheld = mask_withheld(ctx, cores)
    parts = {}
    for name, (episodes, lead, tail_min) in lat.mask_variants(by_core, start, end, seed).items():
        scale = lead // lat.MASK_LEAD_NS
        parts[name] = {**one(episodes, lead, tail_min), "episodes": {c: len(by_core[c]) for c in cores},
                       "cores": cores, "lead_ms": lead / 1e6, "tail_min_ms": tail_min / 1e6,
                       "tail_rule": lat.tail_rule(scale), "withheld": withheld}
        if name == "placebo":
            parts[name]["placebo_seed"] = [int(seed), lat.PLACEBO_SEED]
    return {**parts["main"], "wide": parts["wide"], "placebo": parts["placebo"]}


def outside_steal(intended: np.ndarray, answered_ok: np.ndarray, lat_us: np.ndarray, summary: dict,
                  ctx: dict | None = None, window: tuple[int, int] = (0, 0), seed: int = 0) -> dict | None:
    """The latency histogram of the answered requests outside the steal mask of both cores
    (latency.steal_mask over the union of the generator's episodes and the server probe's, from
    `ctx`), what the mask left out, and the same at 2 L and 2 D ("wide") and with the episodes
    moved to random times in `window` ("placebo"); None before cnib-openloop 5. `withheld` says
    why the figures must not be used (a core unobserved or its split unknown)."""
    if "intervals" not in summary:
        return None

    def one(episodes, lead, tail_min):
        mask = lat.steal_mask(intended, episodes, lead, tail_min)
        keep = ~mask[answered_ok]
        return {"histogram": lat.histogram_of(lat_us[keep]), "left_out": int(mask.sum()), "of": int(len(mask)),
                "left_out_share": round(float(mask.mean()), 6) if len(mask) else 0.0}
    return steal_variants(summary, ctx or {}, window[0], window[1], seed, one)


LATE_US = 50  # criterion 1's send-lag bound at p99: a send later than this outside the stalls is attributed


GENERATOR = Openloop()
