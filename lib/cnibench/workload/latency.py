"""Latency from per-request logs: open-loop correction, histograms, a per-second timeline.

Pure functions over numpy arrays (times in microseconds). The generators' parsers call them.

Coordinated omission. A closed-loop client sends the next request only when a connection is
free, so during a server stall it stops sending, and the requests it *should* have sent never
see the stall. The number we report is the latency of an open-loop client: counted from when a
request was *due*, not from when it was finally sent.

h2load keeps each connection's schedule but sends late while the connection is busy (one
request in flight by default, see generators/h2load.py). `schedule_lateness` rebuilds the
aggregate schedule from the send times in the log. Request k (in send order) of a run at rate
R was due at about t0 + k/R; the lag `R*(s_k - t0) - k` (requests behind schedule) stays in a
band set by the phases of the connections while the generator keeps up, and rises when sends
fall behind (a connection that hit its pipelining cap, a generator starved of CPU). Lateness
is the lag above that band, divided by R; the corrected latency is the measured one plus it.

Why this and not HdrHistogram's `record_corrected_value(v, interval)`: that correction invents
the requests a *blocked* client failed to send. h2load does not drop those requests: it sends
them late, in a burst, and logs them with short latencies. Adding invented values on top would
count every stalled request twice. Rebuilding the schedule moves the real late requests to
their due times instead, so counts stay exact.

Bias left (stated in docs/method.md): the band is estimated from the run itself (its median
and 1st percentile), so lateness smaller than the band width (a few per-connection intervals)
is not corrected, lateness of a single connection is diluted across all of them, and where the
estimate is tight an on-time send at the band's edge gets a small lateness (~2 ms at most in
~1 % of requests on the testbed). The record carries the band, the largest lateness and the
uncorrected histogram, so the correction's size is always visible.
"""

from __future__ import annotations

import numpy as np
from hdrh.histogram import HdrHistogram

from ..results import HIST_HIGHEST_US, HIST_LOWEST_US, new_histogram


def histogram_of(values_us: np.ndarray) -> HdrHistogram:
    """An HdrHistogram of integer microsecond values (clamped to the histogram's range)."""
    h = new_histogram()
    if len(values_us) == 0:
        return h
    v = np.clip(np.asarray(values_us, dtype=np.int64), HIST_LOWEST_US, HIST_HIGHEST_US)
    # Record each distinct value once with its count: fast for millions of requests.
    uniq, counts = np.unique(v, return_counts=True)
    for value, count in zip(uniq.tolist(), counts.tolist()):
        h.record_value(value, count)
    return h


def fitted_rate(start_us: np.ndarray) -> float:
    """The send rate (req/s) between the 5th and 95th percentile request: robust to a stall
    or a burst at either end of the window. `start_us` must be sorted."""
    n = len(start_us)
    if n < 2:
        return 0.0
    lo, hi = int(n * 0.05), max(int(n * 0.95), 1)
    if hi <= lo or start_us[hi] == start_us[lo]:
        lo, hi = 0, n - 1
    span = (start_us[hi] - start_us[lo]) / 1e6
    return (hi - lo) / span if span > 0 else 0.0


def schedule_lateness(start_us: np.ndarray, rate: float | None = None) -> tuple[np.ndarray, dict]:
    """How late each request was sent against the rebuilt schedule (µs), and a summary.

    `start_us` is sorted. `rate` defaults to the fitted send rate (a sustained shortfall is the
    achieved-rate guard's business, not this correction's).
    """
    n = len(start_us)
    if n < 3:
        return np.zeros(n), {"method": "schedule", "rate": 0.0, "band": 0.0, "max_ms": 0.0, "late_fraction": 0.0}
    r = rate or fitted_rate(start_us)
    if r <= 0:
        return np.zeros(n), {"method": "schedule", "rate": 0.0, "band": 0.0, "max_ms": 0.0, "late_fraction": 0.0}
    k = np.arange(n, dtype=np.float64)
    lag = r * (start_us - start_us[0]) / 1e6 - k
    p1, p50 = np.percentile(lag, [1, 50])
    top = 2 * p50 - p1  # the band's upper edge: on schedule, lag stays below it
    late = np.maximum(0.0, (lag - top) / r * 1e6)
    info = {
        "method": "schedule",
        "rate": float(r),
        "band": float(top - p1),  # requests: width of the on-schedule band
        "max_ms": float(late.max() / 1e3),
        "late_fraction": float((late > 0).mean()),
    }
    return late, info


def timeline(end_us: np.ndarray, latency_us: np.ndarray, failed: np.ndarray, window_start_us: int, seconds: int) -> list[dict]:
    """Per second of the window, by completion time: responses/s, p50, p99 (µs), errors."""
    out = []
    if seconds <= 0:
        return out
    idx = ((np.asarray(end_us) - window_start_us) // 1_000_000).astype(np.int64)
    for t in range(seconds):
        sel = idx == t
        lat = latency_us[sel & ~failed]
        out.append({
            "t": t,
            "rate": int((sel & ~failed).sum()),
            "p50_us": int(np.percentile(lat, 50)) if len(lat) else None,
            "p99_us": int(np.percentile(lat, 99)) if len(lat) else None,
            "errors": int((sel & failed).sum()),
        })
    return out


def histogram_from_quantiles(points: dict[float, float], total: int) -> HdrHistogram:
    """An approximate histogram from a quantile table (percentile -> µs), for generators that
    only print percentiles (tcpkali): counts spread evenly between reported points."""
    h = new_histogram()
    if not points or total <= 0:
        return h
    items = sorted(points.items())
    prev_v = items[0][1]
    done = 0
    for p, v in items:
        n = int(round(total * p / 100.0)) - done
        if n > 0:
            lo, hi = max(int(prev_v), HIST_LOWEST_US), max(int(v), HIST_LOWEST_US)
            vals = np.linspace(lo, hi, num=n) if hi > lo else np.full(n, hi)
            for value, count in zip(*np.unique(vals.astype(np.int64), return_counts=True)):
                h.record_value(int(value), int(count))
            done += n
        prev_v = v
    return h
