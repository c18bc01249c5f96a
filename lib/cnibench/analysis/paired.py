"""The numbers behind every comparison: paired t-intervals and tests over blocks, TOST
equivalence, Holm's correction and the minimum detectable effect, vectorised over families
(stats.py says why the block is the unit). Pure numpy/scipy."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as sst

ALPHA = 0.05
MARGIN = 0.10  # default equivalence margin (study key analysis.equivalence_margin)
POWER = 0.80
SLOWER, FASTER, EQUIVALENT, INCONCLUSIVE = 1, -1, 2, 0


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given); NaN stays NaN, not counted."""
    return holm_rows(np.asarray(pvalues, dtype=float))


def holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm along the last axis: each row is one family; NaN entries are not in the family."""
    p = np.asarray(p, dtype=float)
    if p.size == 0:
        return p.copy()
    nan = np.isnan(p)
    m = (~nan).sum(axis=-1, keepdims=True)
    filled = np.where(nan, np.inf, p)
    order = np.argsort(filled, axis=-1, kind="stable")
    ps = np.take_along_axis(filled, order, axis=-1)
    i = np.arange(p.shape[-1])
    scaled = np.where(i < m, (m - i) * np.where(np.isinf(ps), 0.0, ps), 0.0)
    adj = np.minimum(1.0, np.maximum.accumulate(scaled, axis=-1))
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return np.where(nan, np.nan, out)


def family(D, margin: float = MARGIN, alpha: float = ALPHA, power: float = POWER) -> dict[str, np.ndarray]:
    """Paired comparisons of a family of M modes (or pairs) over blocks.

    D[..., m, k]: block k's difference of log quantiles (mode m minus its comparator); NaN where
    that block is missing. Leading axes are independent families (e.g. simulated studies).
    Returns arrays over [..., m]: n, mean, se, lo, hi (95 % t-interval of the mean), p (paired
    t-test), p_holm, p_tost, p_tost_holm (equivalence within +-log(1 + margin)), mde (log; 80 %
    power at alpha / M) and verdict (SLOWER, FASTER, EQUIVALENT, INCONCLUSIVE).
    """
    D = np.asarray(D, dtype=float)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n = np.sum(~np.isnan(D), axis=-1)
        mean = np.nanmean(D, axis=-1)
        sd = np.nanstd(D, axis=-1, ddof=1)
        df = np.where(n >= 2, n - 1, np.nan)
        se = sd / np.sqrt(n)
        half = sst.t.ppf(1 - alpha / 2, df) * se
        deg = se == 0  # every block identical: the sign of the mean decides
        t = mean / se
        p = np.where(deg, np.where(mean == 0, 1.0, 0.0), 2 * sst.t.sf(np.abs(t), df))
        bound = np.log1p(margin)
        p_lo = sst.t.sf((mean + bound) / se, df)  # H0: mean <= -bound
        p_hi = sst.t.cdf((mean - bound) / se, df)  # H0: mean >= +bound
        p_tost = np.where(deg, np.where(np.abs(mean) < bound, 0.0, 1.0), np.maximum(p_lo, p_hi))
        p = np.where(np.isnan(df), np.nan, p)
        p_tost = np.where(np.isnan(df), np.nan, p_tost)
        p_holm, p_tost_holm = holm_rows(p), holm_rows(p_tost)
        m = np.sum(~np.isnan(p), axis=-1, keepdims=True)
        mde = (sst.t.ppf(1 - alpha / (2 * np.maximum(m, 1)), df) + sst.t.ppf(power, df)) * se
    differ = p_holm < alpha
    verdict = np.where(differ & (mean > 0), SLOWER, np.where(differ & (mean < 0), FASTER,
                       np.where(p_tost_holm < alpha, EQUIVALENT, INCONCLUSIVE)))
    return dict(n=n, mean=mean, se=se, lo=mean - half, hi=mean + half, p=p, p_holm=p_holm,
                p_tost=p_tost, p_tost_holm=p_tost_holm, mde=mde, verdict=verdict)


def t_interval(x, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean, lo, hi) of a sample with a t-interval; NaN bounds with fewer than 2 values."""
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return np.nan, np.nan, np.nan
    if len(x) < 2:
        return float(x[0]), np.nan, np.nan
    half = sst.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)
