"""Pooled quantiles with an exact within-block permutation test (issue 23). Pure numpy.

Why: a 4 s window's p99 is set by a handful of machine stalls inside it, a lottery that pairing
by repetition does not cancel; pooling the histograms of all the complete blocks of an arm puts
every stall of the arm into one estimate instead of averaging one p99 per block.

  estimand    per load, log(pooled quantile of arm a / pooled quantile of arm b), the histograms
              of the complete pairs merged per arm; over a band, the mean of the per-load log
              ratios (equal weights)
  test        exact within-block label swap: under "no difference" the two arms of a repetition
              are exchangeable, so every one of the 2^n swaps of the n complete pairs is as
              likely as the observed labelling (sampled, seeded, beyond EXACT_MAX pairs)
  interval    inverted test: the shifts delta (arm a's latencies divided by e^delta) at which
              neither one-sided test rejects at alpha/2; the grid makes shifts exact
  SE          SD of the statistic over the swaps, on the data shifted by the estimate
  TOST        the two one-sided tests at -+log(1 + margin)

Latencies are put on a common log grid (bin i holds [e^(i*step), e^((i+1)*step)) us), so pooling
and shifting are integer operations on count arrays and a swap is a matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP = 0.005  # 0.5 % bins: finer than the effects that matter, coarser than HdrHistogram's 3 digits
MAX_LOG = float(np.log(11.0))  # intervals are searched within ratios 1/11..11 (+-1,000 %): beyond, "—"
EXACT_MAX = 12  # pairs up to which all 2^n swaps are enumerated (4,096)
SAMPLED = 4096  # swaps drawn beyond that (the observed labelling is always the first)


def to_grid(hist, step: float = STEP) -> tuple[int, np.ndarray]:
    """(first bin, counts) of a histogram (lo, hi, counts) on the log grid (bucket midpoints)."""
    lo, hi, c = (np.asarray(x, dtype=float) for x in hist)
    mid = np.sqrt(np.maximum(lo, 0.5) * np.maximum(hi, 1.0))
    idx = np.floor(np.log(mid) / step).astype(np.int64)
    first = int(idx.min()) if len(idx) else 0
    return first, np.bincount(idx - first, weights=c) if len(idx) else np.zeros(1)


def dense(grids: list[tuple[int, np.ndarray]], pad: int) -> tuple[int, np.ndarray]:
    """Grid histograms as rows of one array, with `pad` empty bins each side (room to shift)."""
    start = min(g[0] for g in grids) - pad
    end = max(g[0] + len(g[1]) for g in grids) + pad
    out = np.zeros((len(grids), end - start))
    for r, (first, c) in enumerate(grids):
        out[r, first - start:first - start + len(c)] = c
    return start, out


def log_quantile(cum: np.ndarray, p: float, start: int, step: float) -> np.ndarray:
    """Log (us) of the p-th percentile of each row of cumulative counts (linear inside the bin)."""
    target = cum[..., -1:] * p / 100.0
    k = np.minimum((cum < target).sum(axis=-1, keepdims=True), cum.shape[-1] - 1)
    below = np.where(k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0), axis=-1), 0.0)
    inbin = np.take_along_axis(cum, k, axis=-1) - below
    frac = np.clip(np.divide(target - below, inbin, out=np.ones_like(target), where=inbin > 0), 0, 1)
    out = (start + k + frac)[..., 0] * step
    return np.where(cum[..., -1] > 0, out, np.nan)


def swaps(n: int, seed: int = 0) -> np.ndarray:
    """(R, n) 0/1 swap patterns: all 2^n (row 0 the observed labelling), or SAMPLED drawn."""
    if n <= EXACT_MAX:
        return ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1).astype(float)
    rng = np.random.default_rng(seed)
    S = rng.integers(0, 2, size=(SAMPLED, n)).astype(float)
    S[0] = 0.0
    return S


@dataclass
class Pairs:
    """One comparison, arm a vs arm b, over the complete pairs: per load the two arms' count rows
    (pairs x bins, padded for shifts) and which of the n pairs they are."""

    n: int
    loads: list  # per load: (pair indices, A rows, B rows)
    start: int
    step: float = STEP

    @classmethod
    def of(cls, blocks: list[tuple[int, object, object]], step: float = STEP, max_log: float = MAX_LOG):
        """blocks: (pair index, load, (hist_a, hist_b)) per pair and load; hists as (lo, hi, c)."""
        pad = int(np.ceil(max_log / step)) + 1
        grids = [to_grid(h, step) for _, _, ab in blocks for h in ab]
        start, rows = dense(grids, pad) if grids else (0, np.zeros((0, 1)))
        by_load: dict = {}
        for r, (k, load, _) in enumerate(blocks):
            by_load.setdefault(load, []).append((k, rows[2 * r], rows[2 * r + 1]))
        loads = [(np.array([x[0] for x in v]), np.array([x[1] for x in v]), np.array([x[2] for x in v]))
                 for _, v in sorted(by_load.items(), key=lambda kv: str(kv[0]))]
        n = len({k for k, _, _ in blocks})
        loads = [(idx, np.cumsum(A, axis=-1), np.cumsum(B, axis=-1)) for idx, A, B in loads]
        return cls(n, loads, start, step)

    @classmethod
    def from_cumulative(cls, loads: list, A: np.ndarray, B: np.ndarray, start: int, step: float):
        """From grid cumulative counts already made (rows: pairs; `loads`: each pair's load);
        shifts clip at the grid's ends, so leave room there."""
        loads = np.asarray(loads)
        parts = [(np.flatnonzero(loads == x), A[loads == x], B[loads == x]) for x in sorted(set(loads.tolist()))]
        return cls(len(loads), parts, start, step)

    def _patterns(self, S: np.ndarray) -> list:
        """Per load, its distinct swap patterns and which one each row of S is (cached per S)."""
        key = (S.shape, S.tobytes().__hash__())
        if getattr(self, "_key", None) != key:
            self._key = key
            self._pat = []
            for idx, _, _ in self.loads:  # a pattern as an integer: 1-D unique is fast
                codes = S[:, idx].astype(np.int64) @ (np.int64(1) << np.arange(len(idx), dtype=np.int64))
                u, inv = np.unique(codes, return_inverse=True)
                sub = ((u[:, None] >> np.arange(len(idx))[None, :]) & 1).astype(float)
                self._pat.append((sub, np.asarray(inv).ravel()))
        return self._pat

    def statistic(self, S: np.ndarray, p: float, shift: float = 0.0) -> np.ndarray:
        """The band log ratio (a / b) for each swap pattern, arm a's latencies divided by
        e^(shift * step) (shift in bins, any real: the cumulative counts are linear inside a bin).
        Each load only sees its own pairs' bits, so only its distinct
        patterns are computed (2^5 per load when 10 pairs rotate over 2 loads)."""
        total = np.zeros(len(S))
        for (_, A, B), (sub, inv) in zip(self.loads, self._patterns(S)):
            if shift:  # bin i takes bin i + shift's cumulative count: the padding absorbs the shift
                A = _shifted(A, shift)
            pa = (1 - sub) @ A + sub @ B
            pb = (1 - sub) @ B + sub @ A
            t = log_quantile(pa, p, self.start, self.step) - log_quantile(pb, p, self.start, self.step)
            total += t[inv]
        return total / max(len(self.loads), 1)


def _shifted(cum: np.ndarray, shift: float) -> np.ndarray:
    j, f = int(np.floor(shift)), shift - np.floor(shift)
    i = np.arange(cum.shape[-1])
    at = lambda d: cum[..., np.clip(i + d, 0, cum.shape[-1] - 1)]  # noqa: E731
    return at(j) if f == 0 else (1 - f) * at(j) + f * at(j + 1)


def one_sided(T: np.ndarray) -> tuple[float, float]:
    """(P(T >= observed), P(T <= observed)) over the swaps; the observed is T[0]."""
    eps = 1e-9
    return float(np.mean(T >= T[0] - eps)), float(np.mean(T <= T[0] + eps))


def min_p(n: int) -> float:
    """The smallest two-sided p an exact swap test over n pairs can give."""
    return 2.0 / 2 ** n if n >= 1 else 1.0


def compare(pairs: Pairs, p: float, margin: float, alpha: float, seed: int = 0) -> dict:
    """Estimate, two-sided p, SE, (1 - alpha) interval and TOST p of one comparison. An interval
    bound the swaps cannot reach (too few pairs) or beyond MAX_LOG is NaN ("cannot be estimated")."""
    if pairs.n == 0:
        return dict(n=0, mean=np.nan, p=np.nan, se=np.nan, lo=np.nan, hi=np.nan, p_tost=np.nan)
    S = swaps(pairs.n, seed)
    T0 = pairs.statistic(S, p)
    est = float(T0[0])
    pval = float(np.mean(np.abs(T0) >= abs(est) - 1e-9))
    j_est = est / pairs.step
    se = float(np.std(pairs.statistic(S, p, j_est), ddof=0))
    jb = np.log1p(margin) / pairs.step
    p_tost = max(one_sided(pairs.statistic(S, p, -jb))[0], one_sided(pairs.statistic(S, p, jb))[1])
    lo, hi = interval(pairs, S, p, alpha, j_est)
    return dict(n=pairs.n, mean=est, p=pval, se=se, lo=lo, hi=hi, p_tost=p_tost)


def covers(pairs: Pairs, S: np.ndarray, p: float, alpha: float, delta: float) -> bool:
    """Whether the inverted (1 - alpha) interval holds delta: neither one-sided test rejects it."""
    ge, le = one_sided(pairs.statistic(S, p, delta / pairs.step))
    return ge > alpha / 2 and le > alpha / 2


def interval(pairs: Pairs, S: np.ndarray, p: float, alpha: float, j_est: float) -> tuple[float, float]:
    """Invert the one-sided tests by bisection over the grid's shifts (p-values are monotone in
    the shift up to ties)."""
    J = int(np.floor(MAX_LOG / pairs.step))
    ge = lambda j: one_sided(pairs.statistic(S, p, j))[0] > alpha / 2  # noqa: E731  (j not rejected from below)
    le = lambda j: one_sided(pairs.statistic(S, p, j))[1] > alpha / 2  # noqa: E731
    inside = max(-J, min(int(round(j_est)), J))
    lo = _edge(ge, inside, -J)
    hi = _edge(le, inside, J)
    # the rejection boundary lies between the last accepted shift and the next: report the next
    return ((lo - 1) * pairs.step if lo is not None else np.nan, (hi + 1) * pairs.step if hi is not None else np.nan)


def _edge(accepts, inside: int, bound: int) -> int | None:
    """The last accepted shift going from `inside` toward `bound`; None when `bound` itself is
    accepted (the interval reaches the search limit) or nothing is."""
    if accepts(bound):
        return None
    if not accepts(inside):
        return inside  # the estimate's own shift is rejected only with ties: a zero-width edge
    good, bad = inside, bound
    while abs(bad - good) > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if accepts(mid) else (good, mid)
    return good
