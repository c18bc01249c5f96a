"""The pooled estimator on a study's own histograms (issue 23): `stats_power.py --from-study`.

Real reference runs are drawn into two arms of `pairs` pairs (loads rotating as in the study);
one arm gets an effect applied as an added per-request delay drawn from the reference's own
distribution (latency x + effect * y, y from the same run), so the p50 rises by about `effect`
and the tail by what such a delay does to it. Each resample is tested like a study: the pooled
estimator (exact swap test) and the block-t estimator side by side, detection at Holm's first
step over `modes` (alpha / modes), the SE of each, and the same without an effect (false
separations). Requests are resampled (`requests` per run) so that both arms are alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import pooled, stats
from .dataset import REFERENCE, Dataset

STEP = 0.005


def _draw(rng, hist, n) -> np.ndarray:
    lo, hi, c = (np.asarray(x, float) for x in hist)
    k = rng.choice(len(c), size=n, p=c / c.sum())
    return lo[k] + rng.uniform(size=n) * (hi[k] - lo[k])


def _grid(x: np.ndarray, start: int, bins: int) -> np.ndarray:
    idx = np.clip(np.floor(np.log(np.maximum(x, 1.0)) / STEP).astype(int) - start, 0, bins - 1)
    return np.cumsum(np.bincount(idx, minlength=bins).astype(float))


def reference_runs(ds: Dataset, size: str, reference: str = REFERENCE) -> dict:
    """{load: [histograms]} of the reference's valid band runs at one size."""
    v = ds.valid[(ds.valid["size"] == size) & (ds.valid["mode"] == reference)]
    v = v[stats.in_band(v["load_fraction"])]
    return {float(r): [ds.hist[i] for i in g["run_id"] if i in ds.hist] for r, g in v.groupby("target_rate")}


def resample(ds: Dataset, size: str, effect: float = 0.20, resamples: int = 200, pairs: int = 10,
             modes: int = 7, ps=(50.0, 99.0), requests: int = 30_000, alpha: float = 0.05,
             seed: int = 23) -> pd.DataFrame:
    """Per resample and percentile: detected (effect) / separated (none) by each estimator, SEs."""
    rng = np.random.default_rng(seed)
    runs = reference_runs(ds, size)
    loads = sorted(runs)
    start, bins = int(np.log(5.0) / STEP), int(np.log(5e6 / 5.0) / STEP)
    S = pooled.swaps(pairs)
    rows = []
    for r in range(resamples):
        A0, A1, B = [], [], []
        for k in range(pairs):
            hs = runs[loads[k % len(loads)]]
            i, j = rng.choice(len(hs), 2, replace=False)
            ref, other = _draw(rng, hs[i], requests), _draw(rng, hs[j], requests)
            B.append(_grid(ref, start, bins))
            A0.append(_grid(other, start, bins))
            A1.append(_grid(other + effect * rng.permutation(other), start, bins))
        lk = [loads[k % len(loads)] for k in range(pairs)]
        for name, A in (("none", A0), ("effect", A1)):
            pr = pooled.Pairs.from_cumulative(lk, np.array(A), np.array(B), start, STEP)
            for p in ps:
                rows.append({"resample": r, "arm": name, "percentile": p, **_both(pr, S, p, alpha / modes)})
    return pd.DataFrame(rows)


def _both(pr: pooled.Pairs, S, p, level) -> dict:
    T = pr.statistic(S, p)
    pv = float(np.mean(np.abs(T) >= abs(T[0]) - 1e-9))
    se = float(np.std(pr.statistic(S, p, T[0] / pr.step)))
    d = np.concatenate([pooled.log_quantile(A, p, pr.start, pr.step) - pooled.log_quantile(B, p, pr.start, pr.step)
                        for _, A, B in pr.loads])
    from scipy import stats as sst
    t = sst.ttest_1samp(d, 0.0)
    return {"pooled_hit": pv <= level and T[0] > 0, "pooled_sep": pv <= level, "pooled_se": se,
            "pooled_est": float(T[0]), "t_hit": t.pvalue <= level and d.mean() > 0, "t_sep": t.pvalue <= level,
            "t_se": float(d.std(ddof=1) / np.sqrt(len(d)))}


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per percentile: detection (effect arm) and false separation (none) of each estimator, median SEs."""
    e, n = df[df["arm"] == "effect"], df[df["arm"] == "none"]
    g = lambda x, c: x.groupby("percentile")[c].mean()  # noqa: E731
    out = pd.DataFrame({"pooled detected": g(e, "pooled_hit"), "block-t detected": g(e, "t_hit"),
                        "pooled false sep.": g(n, "pooled_sep"), "block-t false sep.": g(n, "t_sep"),
                        "pooled SE": n.groupby("percentile")["pooled_se"].median(),
                        "block-t SE": n.groupby("percentile")["t_se"].median()})
    out["SE pooled / block-t"] = out["pooled SE"] / out["block-t SE"]
    return out
