"""cnib-openloop's histogram file (version >= 6, `--histograms FILE`): the record from the
generator's own histograms instead of its per-request log.

Layouts (openloop.c, struct hists): HdrHistogram's log-linear buckets with unit 1 and
2^(half + 1) sub-buckets per power of two, so counts index i of the file is counts index i of an
`hdrh` HdrHistogram of the same (lowest 1, highest, digits):

- latency from the intended time and uncorrected latency: µs, 1 µs-100 s, 3 significant digits
  (half 10, 18,432 counts; the record's own layout, results.new_histogram);
- send lag: ns, 1 ns-100 s, 3 significant digits (half 10), so its µs percentiles keep 3 digits;
- per second of the window by completion time: latency at 2 significant digits (half 7, 2,688
  counts) and the counts answered in time / failed (the stability guard's timeline);
- per ms of the window: sends and scheduled requests (the pacing figures);
- per 1 ms slot of intended time: latency at 1 significant digit (half 4, 384 counts, a bucket
  at most 1/16 of its value wide), so steal masks and placebos can be applied after the run.

The file: 8 int64 (magic, format 1, the three halves, seconds, ms, 2xx answered after the
timeout), then sections of int64 id, int64 n and n int64 pairs (index, count) of the nonzero
counts; the per-second and per-slot arrays are flattened (second or slot x counts + index).
"""

from __future__ import annotations

import numpy as np
from hdrh.histogram import HdrHistogram

from ...results import HIST_HIGHEST_US, HIST_LOWEST_US

MAGIC = 0x3148494E4243
H3, H2, H1 = 10, 7, 4  # half sub-bucket magnitudes: 3, 2 and 1 significant digits
LAG_HIGHEST_NS = 100_000_000_000
SECTIONS = {1: "lat", 2: "svc", 3: "lag", 4: "sec", 5: "sec_ok", 6: "sec_err", 7: "ms_sent", 8: "ms_sched", 9: "slots"}


def hist_len(half: int, highest: int) -> int:
    """Counts of a layout: HdrHistogram's (bucket_count + 1) x sub_bucket_half_count."""
    buckets, smallest = 1, 2 << half
    while smallest <= highest:
        smallest <<= 1
        buckets += 1
    return (buckets + 1) << half


def index_value(idx, half: int) -> np.ndarray:
    """The lowest value of each counts index (HdrHistogram's value_from_index, unit 1)."""
    i = np.asarray(idx, dtype=np.int64)
    bucket = (i >> half) - 1
    sub = (i & ((1 << half) - 1)) + (1 << half)
    low = bucket < 0
    sub = np.where(low, sub - (1 << half), sub)
    bucket = np.where(low, 0, bucket)
    return sub << bucket


def index_highest(idx, half: int) -> np.ndarray:
    """The highest value of each counts index (HdrHistogram's highest equivalent value)."""
    i = np.asarray(idx, dtype=np.int64)
    return index_value(i, half) + (np.int64(1) << np.maximum((i >> half) - 1, 0)) - 1


def parse_histograms(data: bytes) -> dict:
    """The file as {"late", "seconds", "ms", and per section name: (index, count) arrays}."""
    words = np.frombuffer(data[: len(data) - len(data) % 8], dtype="<i8")
    if len(words) < 8 or words[0] != MAGIC or words[1] != 1 or tuple(words[2:5]) != (H3, H2, H1):
        raise ValueError("not a cnib-openloop histogram file of format 1")
    out = {"late": int(words[7]), "seconds": int(words[5]), "ms": int(words[6])}
    at = 8
    while at + 2 <= len(words):
        sid, n = int(words[at]), int(words[at + 1])
        if n < 0 or at + 2 + 2 * n > len(words):
            raise ValueError("the histogram file is torn")
        pairs = words[at + 2: at + 2 + 2 * n].reshape(-1, 2)
        out[SECTIONS.get(sid, str(sid))] = (pairs[:, 0].copy(), pairs[:, 1].copy())
        at += 2 + 2 * n
    for name in SECTIONS.values():
        out.setdefault(name, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    return out


def to_hdrh(idx, counts, half: int = H3, highest: int = HIST_HIGHEST_US, digits: int = 3) -> HdrHistogram:
    """An hdrh histogram with the counts at their indices' values (the same buckets when the
    layouts match; a coarser layout's counts land at their bucket's lowest value)."""
    h = HdrHistogram(HIST_LOWEST_US, highest, digits)
    for value, count in zip(index_value(idx, half).tolist(), np.asarray(counts).tolist()):
        h.record_value(max(int(value), HIST_LOWEST_US), int(count))
    return h


def percentile(idx, counts, half: int, p: float) -> int | None:
    """The value at percentile p as hdrh reports it (the highest value of the bucket holding
    the target count, int(p/100 x n + 0.5), at least 1); None without counts."""
    idx, counts = np.asarray(idx), np.asarray(counts)
    total = int(counts.sum())
    if total == 0:
        return None
    order = np.argsort(idx, kind="stable")
    cum = np.cumsum(counts[order])
    target = max(1, min(total, int(p / 100 * total + 0.5)))
    return int(index_highest(idx[order][np.searchsorted(cum, target)], half))


def dense(pair, n: int) -> np.ndarray:
    """A section's (index, count) pairs as a dense array of n counts."""
    idx, counts = pair
    out = np.zeros(n, dtype=np.int64)
    keep = idx < n
    out[idx[keep]] = counts[keep]
    return out


def slot_mask(episodes: list[tuple[int, int, int]], start_ns: int, nslots: int, lead_ns: int,
              tail_min_ns: int) -> np.ndarray:
    """The 1 ms slots of intended time (from start_ns) that a widened steal episode touches
    (latency.steal_mask's window [begin - lead, end + max(tail_min, stolen)]), rounded out to
    whole slots: True = left out."""
    mask = np.zeros(max(0, nslots), dtype=bool)
    for begin, end, stolen in episodes:
        lo = (int(begin) - lead_ns - start_ns) // 1_000_000
        hi = (int(end) + max(tail_min_ns, int(stolen)) - start_ns) // 1_000_000 + 1
        lo, hi = max(0, lo), min(nslots, hi)
        if hi > lo:
            mask[lo:hi] = True
    return mask


def masked_counts(slots, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, count) of the 1-digit latency histogram of the slots outside `mask`."""
    idx, counts = slots
    n1 = hist_len(H1, HIST_HIGHEST_US)
    slot, bucket = idx // n1, idx % n1
    keep = slot < len(mask)
    keep[keep] = ~mask[slot[keep]]
    merged = np.bincount(bucket[keep], weights=counts[keep], minlength=n1).astype(np.int64)
    nz = np.nonzero(merged)[0]
    return nz, merged[nz]


def timeline(h: dict, seconds: int) -> list[dict]:
    """Per second of the window by completion time, as latency.timeline: responses/s, p50 and
    p99 (µs, at the per-second histograms' 2 significant digits), errors."""
    n2 = hist_len(H2, HIST_HIGHEST_US)
    ok, err = dense(h["sec_ok"], max(seconds, 0)), dense(h["sec_err"], max(seconds, 0))
    idx, counts = h["sec"]
    sec = idx // n2
    out = []
    for t in range(max(seconds, 0)):
        sel = sec == t
        b, c = idx[sel] % n2, counts[sel]
        out.append({"t": t, "rate": int(ok[t]), "p50_us": percentile(b, c, H2, 50), "p99_us": percentile(b, c, H2, 99),
                    "errors": int(err[t])})
    return out


def send_lag(idx: np.ndarray, counts: np.ndarray, percentiles: tuple[str, ...]) -> dict:
    """send_lag_summary's figures from the ns send-lag histogram (each within one bucket: 1/1024
    of the value at 3 digits); over_1ms counts the buckets wholly above 1 ms."""
    n = int(np.asarray(counts).sum())
    if n == 0:
        return {"unit": "us", "percentiles": None, "over_1ms": 0, "n": 0}
    pcts = {p: round(percentile(idx, counts, H3, float(p)) / 1e3, 3) for p in percentiles}
    return {"unit": "us", "percentiles": pcts, "over_1ms": int(counts[index_value(idx, H3) > 1_000_000].sum()),
            "n": n}
