"""Latency from per-request logs: open-loop correction, histograms, a per-second timeline.

Pure functions over numpy arrays (times in microseconds). The generators' parsers call them.

Coordinated omission. A closed-loop client sends the next request only when a connection is
free, so during a server stall it stops sending, and the requests it *should* have sent never
see the stall. The open-loop generator (generators/openloop.py) fixes each request's intended
send time before the run and logs it; latency is counted from that time, so no correction is
applied after the fact. The pacing figures below say whether the sends kept the schedule.
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


def per_ms_counts(times_ns: np.ndarray, start_ns: int, end_ns: int) -> np.ndarray:
    """Events per 1 ms bin over [start_ns, end_ns) (times in ns on any common clock)."""
    t = np.asarray(times_ns, dtype=np.int64)
    t = t[(t >= start_ns) & (t < end_ns)]
    nbins = max(0, int((end_ns - start_ns) // 1_000_000))
    return np.bincount(((t - start_ns) // 1_000_000).astype(np.int64), minlength=nbins)[:nbins]


def dispersion(counts: np.ndarray) -> float:
    """Index of dispersion (variance / mean) of per-bin counts: 0 for a perfectly even stream,
    1 for Poisson arrivals, >> 1 for bursts."""
    c = np.asarray(counts, dtype=np.float64)
    return float(c.var() / c.mean()) if len(c) and c.mean() > 0 else float("nan")


def max_line_ratio(actual: np.ndarray, scheduled: np.ndarray) -> float:
    """The periodogram's highest line of (actual - scheduled) per-ms counts, in units of
    n x mean (the level of Poisson noise): a periodic burst pattern (h2load's 10 ms ticks)
    shows as a line of thousands; an on-schedule sender stays near or below 1."""
    a, s = np.asarray(actual, dtype=np.float64), np.asarray(scheduled, dtype=np.float64)
    n = len(a)
    if n < 4 or a.mean() <= 0:
        return float("nan")
    power = np.abs(np.fft.rfft(a - s)[1:]) ** 2  # the zero-frequency term is the total lag
    return float(power.max() / (n * a.mean()))


def send_counts(intended_ns: np.ndarray, sent_ns: np.ndarray, start_ns: int,
                end_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-ms counts over [start_ns, end_ns) of the sends and of the schedule."""
    sent = np.asarray(sent_ns)[np.asarray(sent_ns) >= 0]
    return per_ms_counts(sent, start_ns, end_ns), per_ms_counts(intended_ns, start_ns, end_ns)


def pacing(intended_ns: np.ndarray, sent_ns: np.ndarray, start_ns: int, end_ns: int) -> dict:
    """How well the sends kept the schedule over [start_ns, end_ns): per-ms dispersion of the
    sends and the highest periodogram line of their difference from the schedule."""
    return pacing_of_counts(*send_counts(intended_ns, sent_ns, start_ns, end_ns))


def pacing_of_counts(actual: np.ndarray, scheduled: np.ndarray) -> dict:
    """pacing()'s figures from the per-ms counts of the sends and of the schedule."""
    return {"dispersion_per_ms": round(dispersion(actual), 4),
            "max_line_ratio": round(max_line_ratio(actual, scheduled), 3)}


def pacing_outside_counts(actual: np.ndarray, scheduled: np.ndarray, mask: np.ndarray) -> dict:
    """pacing_outside_stalls()'s pacing figures from per-ms counts: dispersion over the bins
    outside `mask`, the periodogram with the masked bins set to the schedule."""
    m = np.asarray(mask, dtype=bool)[: len(actual)]
    a, s = np.asarray(actual, dtype=np.float64), np.asarray(scheduled, dtype=np.float64)
    keep = ~m
    return {"dispersion_per_ms": round(dispersion(a[keep]), 4) if keep.any() else None,
            "max_line_ratio": round(max_line_ratio(np.where(m, s, a), s), 3), "excluded_ms": int(m.sum()),
            "of_ms": int(len(m))}


CATCH_UP_MS = 2  # bins after a stall that hold its catch-up burst


def stall_mask(stalls_ns: list, start_ns: int, nbins: int) -> np.ndarray:
    """Which per-ms bins of the window (from `start_ns`, ns since the generator's t0) a stall
    [start, end] (ns since t0) touched, with the CATCH_UP_MS bins after it that hold the
    backlog the generator sent at once when it got its CPU back."""
    mask = np.zeros(max(0, nbins), dtype=bool)
    for begin, end in stalls_ns or []:
        lo, hi = (max(0, (int(begin) - start_ns) // 1_000_000),
                  min(nbins, (int(end) - start_ns) // 1_000_000 + CATCH_UP_MS + 1))
        if hi > lo:
            mask[lo:hi] = True
    return mask


def pacing_outside_stalls(intended_ns: np.ndarray, sent_ns: np.ndarray, start_ns: int, end_ns: int,
                          mask: np.ndarray) -> dict:
    """The pacing and send-lag figures with the per-ms bins a machine stall touched (`mask`,
    from stall_mask) taken out: dispersion over the other bins, the periodogram with those bins
    set to the schedule, send lag of the requests due outside them; and how much was taken out.
    A miss of the raw figures that vanishes here was the machine's, not the sender's."""
    actual, scheduled = send_counts(intended_ns, sent_ns, start_ns, end_ns)
    m = np.asarray(mask, dtype=bool)[: len(actual)]
    lag_us = lag_outside_us(intended_ns, sent_ns, start_ns, m)
    out = pacing_outside_counts(actual, scheduled, m)
    return {**out, "send_lag_p99_us": round(float(np.percentile(lag_us, 99)), 3) if len(lag_us) else None,
            "send_lag_p999_us": round(float(np.percentile(lag_us, 99.9)), 3) if len(lag_us) else None}


def lag_outside_us(intended_ns, sent_ns, start_ns: int, mask: np.ndarray) -> np.ndarray:
    """Send lag (us) of the sent requests due in the window's bins outside `mask`."""
    intended, sent = np.asarray(intended_ns, dtype=np.int64), np.asarray(sent_ns, dtype=np.int64)
    due_bin = (intended - start_ns) // 1_000_000
    clear = (due_bin >= 0) & (due_bin < len(mask)) & (sent >= 0)
    clear[clear] = ~np.asarray(mask, dtype=bool)[due_bin[clear]]
    return (sent[clear] - intended[clear]) / 1e3


def late_sends_by_cause(intended_ns, sent_ns, start_ns: int, mask: np.ndarray, intervals: list,
                        late_us: float, short_ns: int) -> dict:
    """What each send late by more than `late_us`, and due outside the masked bins, coincided
    with: a short gap off the CPU (an interval with off > short_ns that ends at most 1 ms before
    the send, or holds it: "short_gap", split by the gap's cause), a slow loop pass ("slow_pass":
    an interval holding the send whose longest pass exceeded the lag bound, with no gap), or
    nothing the generator saw ("unexplained"). Intervals: [thread, start, end, off, max_pass,
    cause] in ns since the generator's t0 (openloop.c, version >= 5)."""
    intended, sent = np.asarray(intended_ns, dtype=np.int64), np.asarray(sent_ns, dtype=np.int64)
    m = np.asarray(mask, dtype=bool)
    due_bin = (intended - start_ns) // 1_000_000
    inside = (due_bin >= 0) & (due_bin < len(m)) & (sent >= 0)
    inside[inside] = ~m[due_bin[inside]]
    late = inside & (sent - intended > late_us * 1000)
    t = np.sort(sent[late])
    names = ("steal", "preempted", "own", "stopped")
    out = {"late": int(late.sum()), **{f"short_gap_{n}": 0 for n in names}, "slow_pass": 0, "unexplained": 0}
    claimed = np.zeros(len(t), dtype=bool)
    for _, begin, end, off, max_pass, cause in sorted(intervals or [], key=lambda iv: -iv[3]):
        lo, hi = np.searchsorted(t, begin), np.searchsorted(t, end + 1_000_000, side="right")
        hit = ~claimed[lo:hi]
        if off > short_ns:
            out[f"short_gap_{names[cause] if 0 <= cause < len(names) else 'steal'}"] += int(hit.sum())
            claimed[lo:hi] = True
        elif max_pass > late_us * 1000:
            hi = np.searchsorted(t, end, side="right")
            hit = ~claimed[lo:hi]
            out["slow_pass"] += int(hit.sum())
            claimed[lo:hi] = True
    out["unexplained"] = int((~claimed).sum())
    return out


# The steal mask (docs/method.md, "Tails outside hypervisor steal"), fixed before any study and
# the same for every arm: a request is left out when its INTENDED time lies in
# [episode start - MASK_LEAD_NS, episode end + max(MASK_TAIL_MIN_NS, S)], S the time stolen.
# By intended time, never by latency (that would select on the outcome); steal only, never
# in-guest preemption (softirq on the client's core is the network mode's own cost).
MASK_LEAD_NS = 1_000_000
MASK_TAIL_MIN_NS = 2_000_000


def steal_episodes(stalls: list, intervals: list, short_ns: int) -> list[tuple[int, int, int]]:
    """(start, end, stolen ns) of each span in which the hypervisor took the generator's core
    (cnib-openloop >= 5; ns since its t0): listed stalls of cause steal (0); listed stalls of
    cause preempted (1) split into the in-guest wait (their run_delay) and the rest, which is
    steal when it exceeds `short_ns` (issue 25: a preemption can hold steal too); and the ~1 ms
    check intervals with more than `short_ns` off the CPU and no context switch."""
    out = [(int(s[1]), int(s[2]), int(s[3])) for s in stalls or [] if len(s) > 4 and s[4] == 0]
    out += [(int(s[1]), int(s[2]), int(s[3]) - int(s[5])) for s in stalls or []
            if len(s) > 5 and s[4] == 1 and s[5] >= 0 and int(s[3]) - int(s[5]) > short_ns]
    out += [(int(iv[1]), int(iv[2]), int(iv[3])) for iv in intervals or [] if iv[5] == 0 and iv[3] > short_ns]
    return sorted(out)


def steal_mask(intended_ns, episodes: list[tuple[int, int, int]], lead_ns: int = MASK_LEAD_NS,
               tail_min_ns: int = MASK_TAIL_MIN_NS) -> np.ndarray:
    """Which requests (by intended time) fall in a widened steal episode: True = left out.
    Episodes may overlap (the union of both cores' is passed as is)."""
    t = np.asarray(intended_ns, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    out = np.zeros(len(t), dtype=bool)
    for begin, end, stolen in episodes:
        lo = np.searchsorted(ts, begin - lead_ns, side="left")
        hi = np.searchsorted(ts, end + max(tail_min_ns, stolen), side="right")
        out[order[lo:hi]] = True
    return out


MASK_WIDE = 2  # the sensitivity check: L and D both doubled
PLACEBO_SEED = 25  # the placebo's episodes move to times drawn from (run seed, this)


def tail_rule(scale: int = 1) -> str:
    """D(S) in words, for the record."""
    return f"max({scale * MASK_TAIL_MIN_NS / 1e6:g} ms, {'' if scale == 1 else f'{scale}x'}S)"


def scaled(episodes: list[tuple[int, int, int]], scale: int) -> list[tuple[int, int, int]]:
    """Episodes whose stolen time is scaled: with lead and tail_min scaled too, steal_mask then
    leaves out [begin - scale L, end + scale max(tail_min, S)] (the sensitivity check)."""
    return [(int(b), int(e), int(s) * scale) for b, e, s in episodes]


def placebo_episodes(episodes: list[tuple[int, int, int]], start_ns: int, end_ns: int,
                     seed: int) -> list[tuple[int, int, int]]:
    """The same episodes (count, lengths, stolen time) moved to seeded-random times in the
    window [start_ns, end_ns): what the mask does to a tail when it is NOT where the steal was."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, PLACEBO_SEED])
    out = []
    for b, e, s in episodes:
        length = int(e) - int(b)
        begin = int(start_ns) + int(rng.integers(0, max(1, int(end_ns) - int(start_ns) - length)))
        out.append((begin, begin + length, int(s)))
    return sorted(out)


def mask_variants(by_core: dict[str, list], start_ns: int, end_ns: int,
                  seed: int) -> dict[str, tuple[list[tuple[int, int, int]], int, int]]:
    """The three masks of a run, each as (episodes, lead_ns, tail_min_ns) for steal_mask: the
    union of every observed core's steal episodes at L and D ("main"), at 2 L and 2 D ("wide"),
    and moved to random times ("placebo"). The same rule for every arm."""
    union = sorted(ep for eps in by_core.values() for ep in eps)
    return {"main": (union, MASK_LEAD_NS, MASK_TAIL_MIN_NS),
            "wide": (scaled(union, MASK_WIDE), MASK_WIDE * MASK_LEAD_NS, MASK_WIDE * MASK_TAIL_MIN_NS),
            "placebo": (placebo_episodes(union, start_ns, end_ns, seed), MASK_LEAD_NS, MASK_TAIL_MIN_NS)}


def timeline(end_us: np.ndarray, latency_us: np.ndarray, failed: np.ndarray, window_start_us: int,
             seconds: int) -> list[dict]:
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
