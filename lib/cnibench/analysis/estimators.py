"""The two band estimators, as families (one comparator, or pairs of arms; Holm over the family).

  pooled    (default, issue 23) ratio of pooled quantiles, exact within-block permutation test,
            interval by inverting it (pooled.py)
  block-t   (until issue 23) mean of the per-block log-quantile differences, paired t (paired.py)

Both return the arrays of paired.family: n, mean, se, lo, hi, p, p_holm, p_tost, p_tost_holm,
mde, verdict. The pooled family adds CANNOT: fewer pairs than an exact test needs to reach
Holm's first step (2 / 2^n > alpha / M), said as "cannot separate (n pairs)".
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sst

from . import pooled
from .paired import ALPHA, EQUIVALENT, FASTER, INCONCLUSIVE, MARGIN, POWER, SLOWER, holm_rows

POOLED, BLOCK_T = "pooled", "block-t"
ESTIMATORS = (POOLED, BLOCK_T)
CANNOT = 3  # verdict code: too few complete pairs for the exact test to reach Holm's first step


class Histograms:
    """Grid histograms of the runs of one band (one size), looked up by (arm, repetition, load),
    and the Pairs of any two arms over their complete blocks, made once per study."""

    def __init__(self, att, hist: dict, ok):
        self.ok = ok  # repetition x arm: block complete
        self.hist = hist
        good = att[att["state"] == "ok"]
        self.ids = {(m, int(k), float(r)): rid for m, k, r, rid in
                    zip(good["mode"], good["repetition"], good["target_rate"], good["run_id"])}
        self._pairs: dict = {}

    def pairs(self, a: str, b: str) -> pooled.Pairs:
        if (a, b) not in self._pairs:
            both = (self.ok[a] & self.ok[b]) if a in self.ok and b in self.ok else self.ok.iloc[:, :0]
            reps = [int(k) for k, v in both.items() if v] if len(both) else []
            blocks = []
            for i, k in enumerate(reps):
                loads = sorted({r for (m, kk, r) in self.ids if m == a and kk == k} &
                               {r for (m, kk, r) in self.ids if m == b and kk == k})
                for r in loads:
                    ha, hb = self.hist.get(self.ids[(a, k, r)]), self.hist.get(self.ids[(b, k, r)])
                    if ha is not None and hb is not None and len(ha[2]) and len(hb[2]):
                        blocks.append((i, r, (ha, hb)))
            self._pairs[(a, b)] = pooled.Pairs.of(blocks)
        return self._pairs[(a, b)]


def pooled_family(pairs: list[pooled.Pairs], p: float, margin: float = MARGIN, alpha: float = ALPHA,
                  power: float = POWER) -> dict[str, np.ndarray]:
    """The pooled comparisons of one family at percentile p."""
    rows = [pooled.compare(x, p, margin, alpha) for x in pairs]
    col = lambda k: np.array([r[k] for r in rows], dtype=float)  # noqa: E731
    n, mean, se, lo, hi, pv, p_tost = (col(k) for k in ("n", "mean", "se", "lo", "hi", "p", "p_tost"))
    with np.errstate(all="ignore"):
        pv = np.where(n >= 1, pv, np.nan)
        p_tost = np.where(n >= 1, p_tost, np.nan)
        p_holm, p_tost_holm = holm_rows(pv), holm_rows(p_tost)
        m = max(int(np.sum(~np.isnan(pv))), 1)
        df = np.where(n >= 2, n - 1, np.nan)
        mde = (sst.t.ppf(1 - alpha / (2 * m), df) + sst.t.ppf(power, df)) * se
    differ = p_holm < alpha
    verdict = np.where(differ & (mean > 0), SLOWER, np.where(differ & (mean < 0), FASTER,
                       np.where(p_tost_holm < alpha, EQUIVALENT, INCONCLUSIVE)))
    cannot = np.array([pooled.min_p(int(k)) > alpha / m for k in n], dtype=bool) if len(n) else np.zeros(0, bool)
    verdict = np.where(cannot, CANNOT, verdict)
    return dict(n=n.astype(int), mean=mean, se=se, lo=lo, hi=hi, p=pv, p_holm=p_holm, p_tost=p_tost,
                p_tost_holm=p_tost_holm, mde=mde, verdict=verdict)
