"""Quantiles of binned latency histograms (the records' HdrHistograms as arrays, dataset.py):
one run's, or several runs' pooled. Pure numpy."""

from __future__ import annotations

import numpy as np


def quantiles(lo: np.ndarray, hi: np.ndarray, counts: np.ndarray, ps) -> np.ndarray:
    """Percentiles ps (0-100) of a histogram whose bin k holds counts[..., k] values in [lo, hi).

    counts may be 2-D (one histogram per row, same bins): the answer is then (rows, len(ps)).
    Inside the bin that holds the target rank the value is interpolated log-linearly (linearly
    for a bin starting at 0). An empty histogram gives NaN.
    """
    counts = np.asarray(counts, dtype=float)
    one = counts.ndim == 1
    c = np.atleast_2d(counts)
    ps = np.asarray(ps, dtype=float)
    cum = np.cumsum(c, axis=1)
    total = cum[:, -1:]
    target = total * ps[None, :] / 100.0  # (rows, P)
    k = (cum[:, None, :] < target[:, :, None]).sum(axis=2)  # first bin with cum >= target
    k = np.minimum(k, c.shape[1] - 1)
    rows = np.arange(c.shape[0])[:, None]
    below = np.where(k > 0, cum[rows, np.maximum(k - 1, 0)], 0.0)
    in_bin = c[rows, k]
    frac = np.clip(np.divide(target - below, in_bin, out=np.ones_like(target), where=in_bin > 0), 0, 1)
    blo, bhi = np.asarray(lo, float)[k], np.asarray(hi, float)[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        loglin = blo * np.power(bhi / np.where(blo > 0, blo, 1.0), frac)
    out = np.where(blo > 0, loglin, blo + (bhi - blo) * frac)
    out = np.where(total > 0, out, np.nan)
    return out[0] if one else out


def pool(hists) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs' (lo, hi, counts) on one common set of buckets: (lo, hi, C) with C of shape (R, K)."""
    all_lo = np.concatenate([h[0] for h in hists])
    all_hi = np.concatenate([h[1] for h in hists])
    ulo, first, inv = np.unique(all_lo, return_index=True, return_inverse=True)
    C = np.zeros((len(hists), len(ulo)))
    start = 0
    for r, h in enumerate(hists):
        n = len(h[2])
        np.add.at(C[r], inv[start:start + n], h[2])
        start += n
    return ulo, all_hi[first], C


def pooled_quantiles(hists, ps) -> np.ndarray:
    if not hists:
        return np.full(len(ps), np.nan)
    lo, hi, C = pool(hists)
    return quantiles(lo, hi, C.sum(axis=0), ps)
