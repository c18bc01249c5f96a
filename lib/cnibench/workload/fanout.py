"""Several client hosts for one run: the pure planning and merging (issue 28).

    shares(rate, connections, threads, clients)   each client's part of the schedule
    start_times(start_ns, shares, offsets)        each client's start, on its own clock
    limits.offset_from_exchanges(samples)         a client's clock offset from timestamp exchanges
    merge_records(parts)                          one record: histograms added, every client named
    merged_pacing(sends)                          the merged schedule's pacing and send lag

The merged schedule is the one-client schedule: with a total rate R over N clients, request j
of it is due at j/R and client c sends the j with j mod N == c, i.e. its own uniform schedule
at R/N shifted by c/R. So every client runs at R/N and starts c/R after the common instant the
driver gives; the merged arrivals are then uniform at R (as two threads of one generator
interleave, openloop.c's sched_next). The driver's instant is on its own clock: a client whose
clock is off by o starts at instant + o on its clock, and the offsets are bounded
(limits.MAX_CLOCK_OFFSET_S): beyond it the clients would not start together, so the run is
refused (limits.check_clocks).

The merged pacing sums each client's per-ms counts bin by bin, each in its own frame (ms
since its own t0): client c's bins lie c/R (under 1 ms: (N-1)/R) plus its residual clock error
after the true instant, so the sum judges the merged schedule at 1 ms resolution to within that
shift. The send lag is each request's own (sent - intended on one clock), pooled.

Nothing here runs a command; the I/O (starting each client's generator at its time and reading
its outputs) is multiclient.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from . import latency as lat
from .generators.base import Sends

START_LEAD_S = 2.0  # the common instant is this far after the driver decides it: every client is ready


@dataclass(frozen=True)
class Share:
    host: str
    rate: float  # this client's requests/s
    phase_ns: int  # its schedule's shift after the common instant: c / R
    connections: int
    threads: int


def shares(rate: float, connections: int, threads: int, clients: list[str]) -> list[Share]:
    """Each client's part of a run at `rate` over `connections` in all: R/N each, phases c/R,
    the connections split as evenly as whole numbers allow (every client keeps at least one per
    thread). One clear ConfigError when they cannot be split."""
    n = len(clients)
    if n < 1:
        raise ConfigError("bench", "clients", "no client host", "Name at least one host with role: client.")
    if len(set(clients)) != n:
        raise ConfigError("bench", "clients", f"a client is named twice ({', '.join(clients)})", "Name each once.")
    if connections < n * threads:
        raise ConfigError("bench", "connections", f"{connections} connections cannot give {n} clients {threads} "
                          f"thread(s) with a connection each", f"Use at least {n * threads} connections.")
    return [Share(h, rate / n, round(c * 1e9 / rate), connections // n + (c < connections % n), threads)
            for c, h in enumerate(clients)]


def start_times(start_ns: int, parts: list[Share], offsets: dict[str, float]) -> dict[str, int]:
    """Each client's start (realtime ns on its own clock) for a common instant `start_ns` on the
    driver's: the instant, plus the client's clock offset, plus its phase."""
    return {p.host: start_ns + round(offsets.get(p.host, 0.0) * 1e9) + p.phase_ns for p in parts}


def merge_records(parts: dict[str, dict]) -> dict:
    """One run record from each client's (client name -> record, the same run): counts and rates
    added, the open-loop histograms added, the percentiles read from the sum, every client named
    (`clients`, with each one's target and achieved rate). A failed part fails the merge, with
    that client's reason."""
    from ..results import decode_histogram, encode_histogram, new_histogram, percentile_table

    names = sorted(parts)
    first = dict(parts[names[0]])
    failed = [(n, parts[n]) for n in names if parts[n].get("status") == "failed"]
    out = {**first, "clients": [{"host": n, "target_rate": parts[n].get("target_rate"),
                                 "achieved_rate": parts[n].get("achieved_rate"),
                                 "status": parts[n].get("status")} for n in names]}
    out["target_rate"] = sum(float(parts[n].get("target_rate") or 0) for n in names)
    out["achieved_rate"] = round(sum(float(parts[n].get("achieved_rate") or 0) for n in names), 3)
    keys = set().union(*((parts[n].get("counts") or {}).keys() for n in names))
    out["counts"] = {k: sum(int((parts[n].get("counts") or {}).get(k) or 0) for n in names) for k in sorted(keys)}
    if failed:
        n, rec = failed[0]
        out.update(status="failed", reason=f"client {n}: {rec.get('reason')}")
        return out
    latency: dict = {"unit": "us", "source": f"the sum of {len(names)} clients' histograms"}
    for key, table in (("histogram", "percentiles"), ("histogram_uncorrected", "percentiles_uncorrected")):
        encoded = [(parts[n].get("latency") or {}).get(key) for n in names]
        latency[key] = latency[table] = None
        if all(encoded):
            h = new_histogram()
            for e in encoded:
                h.add(decode_histogram(e))
            latency[key], latency[table] = encode_histogram(h), percentile_table(h)
    out["latency"] = latency
    for c, n in zip(out["clients"], names):  # each client's own pacing, send lag and noise figures stay with it
        c.update({k: v for k, v in (parts[n].get("latency") or {}).items() if k in ("pacing", "send_lag")})
        fig = (parts[n].get("hygiene") or {}).get("figures") or {}
        c["hygiene"] = {k: fig.get(k) for k in ("foreign_cpu", "steal", "server_foreign_cpu", "hiccup_max_us")}
    # The record's own hygiene is the first client's view (its core judged): the other clients'
    # generators show there as the server's foreign CPU when they share its machine.
    statuses = {parts[n].get("status") for n in names}
    out["status"] = "ok" if statuses == {"ok"} else "invalid"
    if out["status"] == "invalid":
        out["reason"] = "; ".join(f"client {n}: {parts[n].get('reason')}" for n in names
                                  if parts[n].get("status") != "ok")
    return out


def merged_pacing(sends: list[Sends]) -> tuple[dict, dict]:
    """The merged schedule's pacing (latency.pacing_of_counts of the summed per-ms counts; with
    every client's stalls listed, the figures outside the union of their masks, the send lag
    outside them from the logs) and its send lag (pooled), as a one-client record has them."""
    from .generators import openloop_hist as oh
    from .generators.openloop import PERCENTILES, send_lag_summary

    n = min(len(s.actual) for s in sends)
    actual = np.sum([np.asarray(s.actual)[:n] for s in sends], axis=0)
    scheduled = np.sum([np.asarray(s.scheduled)[:n] for s in sends], axis=0)
    pacing = lat.pacing_of_counts(actual, scheduled)
    if all(s.mask is not None for s in sends):
        mask = np.logical_or.reduce([np.asarray(s.mask, dtype=bool)[:n] for s in sends])
        out = lat.pacing_outside_counts(actual, scheduled, mask)
        logged = all(s.intended is not None and s.sent is not None for s in sends)
        pooled = np.concatenate([lat.lag_outside_us(s.intended, s.sent, s.start_ns, mask) for s in sends]) \
            if logged else None
        for key, p in (("send_lag_p99_us", 99), ("send_lag_p999_us", 99.9)):
            out[key] = round(float(np.percentile(pooled, p)), 3) if pooled is not None and len(pooled) else None
        pacing["outside_stalls"] = out
    if all(s.lag_hist is not None for s in sends):
        send_lag = oh.send_lag(np.concatenate([np.asarray(s.lag_hist[0]) for s in sends]),
                               np.concatenate([np.asarray(s.lag_hist[1]) for s in sends]), PERCENTILES)
    elif all(s.lag_ns is not None for s in sends):
        send_lag = send_lag_summary(np.concatenate([np.asarray(s.lag_ns) for s in sends]))
    else:
        send_lag = None
    return pacing, send_lag
