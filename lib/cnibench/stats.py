"""Statistics over a tidy Dataset: quantiles with CIs, comparison with host, tests, the headline.

Everything here is pure (a Dataset in, DataFrames out) and deterministic for a given seed.

Quantiles with 95 % CIs come from a hierarchical bootstrap done on histograms:
  1. resample the cell's runs with replacement (multiplicities m_r ~ Multinomial(R, 1/R));
  2. resample requests within each drawn run. With the Poisson bootstrap, a run drawn m times
     contributes Poisson(m * c) to a bucket holding c requests, and independent Poissons add, so
     the pooled resampled histogram is one Poisson(M @ C) draw per bucket: B x K draws per cell,
     not B x R x N.
To keep K small the cell's HdrHistogram buckets are merged into bins about 1 % wide (relative);
a quantile is interpolated log-linearly inside its bin, so the binning moves it by far less than
the CI width. Point estimates use the full-resolution pooled histogram.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sst

from .dataset import REFERENCE, Dataset, order_modes

QUANTILES = (50.0, 90.0, 99.0, 99.9, 99.99)
HEADLINE_PERCENTILES = (99.0, 99.9)
BAND = (0.30, 0.50)
BAND_TOLERANCE = 0.005  # a run at 29.9 % of max belongs to the 30-50 % band
BIN_WIDTH = 0.01
N_BOOT = 1000
ALPHA = 0.05


# --- quantiles of binned histograms -----------------------------------------------------------

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


def coarsen(lo: np.ndarray, hi: np.ndarray, C: np.ndarray, width: float = BIN_WIDTH):
    """Merge sorted buckets into bins ~`width` wide (relative); empty bins are dropped."""
    base = max(float(lo[0]), 1.0)
    key = np.floor(np.log(np.maximum(lo, 1.0) / base) / np.log1p(width)).astype(np.int64)
    keys, start = np.unique(key, return_index=True)
    end = np.append(start[1:], len(lo)) - 1
    Cb = np.add.reduceat(C, start, axis=1)
    return lo[start], hi[end], Cb


def cell_rng(seed: int, *key) -> np.random.Generator:
    """One stream per cell, so a cell's CI does not depend on which other cells exist."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def bootstrap_quantiles(hists, ps=QUANTILES, n_boot: int = N_BOOT, rng=None,
                        width: float = BIN_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """(point estimates (P,), bootstrap replicates (n_boot, P)) of pooled quantiles of runs."""
    rng = rng if rng is not None else np.random.default_rng(0)
    lo, hi, C = pool(hists)
    point = quantiles(lo, hi, C.sum(axis=0), ps)
    blo, bhi, Cb = coarsen(lo, hi, C, width)
    R = Cb.shape[0]
    M = rng.multinomial(R, np.full(R, 1.0 / R), size=n_boot)  # run multiplicities
    pooled = rng.poisson(M @ Cb)
    return point, quantiles(blo, bhi, pooled, ps)


def ci(boot: np.ndarray, alpha: float = ALPHA, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates."""
    return (np.nanquantile(boot, alpha / 2, axis=axis), np.nanquantile(boot, 1 - alpha / 2, axis=axis))


# --- tests ------------------------------------------------------------------------------------

def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def cliffs_delta(a, b) -> float:
    """P(A > B) - P(A < B): +1 when every A exceeds every B."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return np.nan
    diff = a[:, None] - b[None, :]
    return float(((diff > 0).sum() - (diff < 0).sum()) / diff.size)


def mann_whitney(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return np.nan
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    return float(sst.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def kruskal(groups) -> tuple[float, float, float]:
    """(H, p, epsilon-squared effect size) across groups with >= 2 values each."""
    groups = [np.asarray(g, float) for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return np.nan, np.nan, np.nan
    n = sum(len(g) for g in groups)
    if np.ptp(np.concatenate(groups)) == 0:
        return 0.0, 1.0, 0.0
    h, p = sst.kruskal(*groups)
    return float(h), float(p), float(h / (n - 1))


# --- the analysis -----------------------------------------------------------------------------

@dataclass
class Analysis:
    study: str
    quantiles: pd.DataFrame  # size, mode, target_rate, load_fraction, percentile, estimate, lo, hi, runs
    comparisons: pd.DataFrame  # vs reference: ratio (+CI), diff_us (+CI)
    tests: pd.DataFrame  # Kruskal-Wallis per size x load on per-run p99
    pairwise: pd.DataFrame  # Mann-Whitney per size x load, Holm within the family, Cliff's delta
    headline: pd.DataFrame  # per size x mode x percentile: overhead vs host over the band, CI
    band_pairs: pd.DataFrame  # per size x percentile x pair of modes: separable or not
    tiers: pd.DataFrame  # per size x percentile: groups of modes the data cannot separate
    excluded: pd.DataFrame  # counts of runs left out, by status and reason
    n_boot: int = N_BOOT
    band: tuple = BAND
    boot: dict = field(default_factory=dict, repr=False)  # (size, mode, rate) -> (n_boot, P)

    TABLES = ("quantiles", "comparisons", "tests", "pairwise", "headline", "band_pairs", "tiers", "excluded")


def in_band(lf, band=BAND, tol=BAND_TOLERANCE):
    lf = np.asarray(lf, dtype=float)
    return (lf >= band[0] - tol) & (lf <= band[1] + tol)


def analyze(ds: Dataset, ps=QUANTILES, n_boot: int = N_BOOT, seed: int = 0, band=BAND) -> Analysis:
    ps = tuple(sorted(set(ps) | set(HEADLINE_PERCENTILES)))
    valid = ds.valid
    q_rows, boot = [], {}
    for (size, mode, rate), g in valid.groupby(["size", "mode", "target_rate"], sort=False):
        hists = [ds.hist[r] for r in g["run_id"] if r in ds.hist]
        if not hists:
            continue
        point, reps = bootstrap_quantiles(hists, ps, n_boot, cell_rng(seed, size, mode, float(rate)))
        boot[(size, mode, float(rate))] = reps
        lo, hi = ci(reps)
        lf = float(g["load_fraction"].median()) if g["load_fraction"].notna().any() else np.nan
        for j, p in enumerate(ps):
            q_rows.append(dict(size=size, mode=mode, target_rate=float(rate), load_fraction=lf,
                               percentile=p, estimate=point[j], lo=lo[j], hi=hi[j], runs=len(hists),
                               requests=int(sum(h[2].sum() for h in hists))))
    qdf = _sort(pd.DataFrame(q_rows, columns=["size", "mode", "target_rate", "load_fraction", "percentile",
                                              "estimate", "lo", "hi", "runs", "requests"]))
    comparisons = _comparisons(qdf, boot, ps)
    tests, pairwise = _load_tests(valid)
    headline, band_pairs, tiers = _headline(qdf, boot, ps, valid, band)
    return Analysis(ds.study, qdf, comparisons, tests, pairwise, headline, band_pairs, tiers,
                    excluded(ds), n_boot, tuple(band), boot)


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "mode" not in df:
        return df.reset_index(drop=True)
    rank = {m: i for i, m in enumerate(order_modes(df["mode"].unique()))}
    keys = [c for c in ("size", "target_rate", "percentile") if c in df]
    df = df.assign(_m=df["mode"].map(rank), _s=df["size"].map({"small": 0, "large": 1}).fillna(2))
    return df.sort_values(["_s"] + keys[1:] + ["_m"]).drop(columns=["_m", "_s"]).reset_index(drop=True)


def _comparisons(qdf: pd.DataFrame, boot: dict, ps) -> pd.DataFrame:
    rows = []
    for (size, mode, rate), reps in boot.items():
        ref = boot.get((size, REFERENCE, rate))
        if mode == REFERENCE or ref is None:
            continue
        cell = qdf[(qdf["size"] == size) & (qdf["mode"] == mode) & (qdf["target_rate"] == rate)]
        refc = qdf[(qdf["size"] == size) & (qdf["mode"] == REFERENCE) & (qdf["target_rate"] == rate)]
        ratio_lo, ratio_hi = ci(reps / ref)
        diff_lo, diff_hi = ci(reps - ref)
        for j, p in enumerate(ps):
            est = cell[cell["percentile"] == p]["estimate"].iloc[0]
            ref_est = refc[refc["percentile"] == p]["estimate"].iloc[0]
            rows.append(dict(size=size, mode=mode, target_rate=rate,
                             load_fraction=cell["load_fraction"].iloc[0], percentile=p,
                             ratio=est / ref_est, ratio_lo=ratio_lo[j], ratio_hi=ratio_hi[j],
                             diff_us=est - ref_est, diff_lo=diff_lo[j], diff_hi=diff_hi[j]))
    return _sort(pd.DataFrame(rows, columns=["size", "mode", "target_rate", "load_fraction", "percentile",
                                             "ratio", "ratio_lo", "ratio_hi", "diff_us", "diff_lo", "diff_hi"]))


def _load_tests(valid: pd.DataFrame, col: str = "p99"):
    """Per size x load: do modes differ (Kruskal-Wallis), and which pairs (Mann-Whitney, Holm)."""
    trows, prows = [], []
    for (size, rate), g in valid.groupby(["size", "target_rate"], sort=False):
        modes = order_modes(g["mode"].unique())
        groups = {m: g.loc[g["mode"] == m, col].dropna().to_numpy() for m in modes}
        h, p, eps2 = kruskal(list(groups.values()))
        trows.append(dict(size=size, target_rate=rate, metric=col, modes=len(modes),
                          runs=int(sum(len(v) for v in groups.values())), H=h, p=p, epsilon2=eps2))
        pairs = list(itertools.combinations(modes, 2))
        praw = [mann_whitney(groups[a], groups[b]) for a, b in pairs]
        padj = _holm_nan(praw)
        for (a, b), pr, pa in zip(pairs, praw, padj):
            prows.append(dict(size=size, target_rate=rate, metric=col, mode_a=a, mode_b=b,
                              n_a=len(groups[a]), n_b=len(groups[b]), p=pr, p_holm=pa,
                              cliffs_delta=cliffs_delta(groups[a], groups[b])))
    tests = pd.DataFrame(trows, columns=["size", "target_rate", "metric", "modes", "runs", "H", "p", "epsilon2"])
    pairwise = pd.DataFrame(prows, columns=["size", "target_rate", "metric", "mode_a", "mode_b", "n_a", "n_b",
                                            "p", "p_holm", "cliffs_delta"])
    return tests, pairwise


def _holm_nan(p) -> np.ndarray:
    p = np.asarray(p, float)
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    out[ok] = holm(p[ok])
    return out


def _band_ratio_boot(boot, size, a, b, rates, j) -> np.ndarray:
    """Bootstrap replicates of the geometric mean over band loads of q_a / q_b."""
    logs = [np.log(boot[(size, a, r)][:, j]) - np.log(boot[(size, b, r)][:, j]) for r in rates]
    return np.exp(np.mean(logs, axis=0))


def _headline(qdf, boot, ps, valid, band):
    """Overhead vs host over the band, pairwise separability, and tiers instead of a ranking."""
    hrows, prow, trows = [], [], []
    if qdf.empty:
        return (pd.DataFrame(columns=_HEAD_COLS), pd.DataFrame(columns=_PAIR_COLS),
                pd.DataFrame(columns=_TIER_COLS))
    for size in [s for s in ("small", "large") if s in set(qdf["size"])] + \
            sorted(set(qdf["size"]) - {"small", "large"}):
        q = qdf[(qdf["size"] == size) & in_band(qdf["load_fraction"], band)]
        modes = order_modes(q["mode"].unique())
        rates_of = {m: set(q.loc[q["mode"] == m, "target_rate"]) for m in modes}
        for p in HEADLINE_PERCENTILES:
            j = list(ps).index(p)
            col = _run_col(p)
            # per-run value relative to the reference's median run at the same load, for the tests
            rel = _relative_runs(valid, size, band, col)
            verdict_vs = {}
            for a, b in itertools.combinations(modes, 2):
                rates = sorted(rates_of[a] & rates_of[b])
                if not rates:
                    continue
                rb = _band_ratio_boot(boot, size, a, b, rates, j)
                est = float(np.exp(np.mean([np.log(_est(q, a, r, p) / _est(q, b, r, p)) for r in rates])))
                lo, hi = ci(rb)
                prow.append(dict(size=size, percentile=p, mode_a=a, mode_b=b, loads=len(rates), ratio=est,
                                 ratio_lo=float(lo), ratio_hi=float(hi),
                                 p=mann_whitney(rel.get(a, []), rel.get(b, [])),
                                 cliffs_delta=cliffs_delta(rel.get(a, []), rel.get(b, []))))
            fam = [r for r in prow if r["size"] == size and r["percentile"] == p]
            for r, adj in zip(fam, _holm_nan([r["p"] for r in fam])):
                r["p_holm"] = adj
                r["verdict"] = _verdict(r)
                verdict_vs[(r["mode_a"], r["mode_b"])] = r["verdict"]
            if REFERENCE in modes:
                for m in modes:
                    if m == REFERENCE:
                        continue
                    pr = next((r for r in fam if r["mode_a"] == REFERENCE and r["mode_b"] == m), None)
                    if pr is None:
                        continue
                    rates = sorted(rates_of[m] & rates_of[REFERENCE])
                    diff = np.mean([_est(q, m, r, p) - _est(q, REFERENCE, r, p) for r in rates])
                    db = np.mean([boot[(size, m, r)][:, j] - boot[(size, REFERENCE, r)][:, j] for r in rates], axis=0)
                    dlo, dhi = ci(db)
                    # pair is (host, m): invert the ratio to get m / host
                    hrows.append(dict(size=size, mode=m, percentile=p, loads=len(rates),
                                      runs=int(q[(q["mode"] == m) & (q["percentile"] == p)]["runs"].sum()),
                                      overhead_pct=(1 / pr["ratio"] - 1) * 100,
                                      overhead_lo=(1 / pr["ratio_hi"] - 1) * 100,
                                      overhead_hi=(1 / pr["ratio_lo"] - 1) * 100,
                                      diff_us=float(diff), diff_lo=float(dlo), diff_hi=float(dhi),
                                      p_holm=pr["p_holm"], verdict=_vs_host(pr["verdict"], m)))
            trows.extend(_tiers(size, p, modes, q, verdict_vs))
    head = _sort(pd.DataFrame(hrows, columns=_HEAD_COLS))
    return head, pd.DataFrame(prow, columns=_PAIR_COLS), pd.DataFrame(trows, columns=_TIER_COLS)


_HEAD_COLS = ["size", "mode", "percentile", "loads", "runs", "overhead_pct", "overhead_lo", "overhead_hi",
              "diff_us", "diff_lo", "diff_hi", "p_holm", "verdict"]
_PAIR_COLS = ["size", "percentile", "mode_a", "mode_b", "loads", "ratio", "ratio_lo", "ratio_hi", "p",
              "cliffs_delta", "p_holm", "verdict"]
_TIER_COLS = ["size", "percentile", "tier", "modes", "text"]


def _run_col(p: float) -> str:
    from .dataset import pcol
    return pcol(p)


def _est(q, mode, rate, p) -> float:
    sel = q[(q["mode"] == mode) & (q["target_rate"] == rate) & (q["percentile"] == p)]
    return float(sel["estimate"].iloc[0])


def _relative_runs(valid, size, band, col) -> dict[str, list[float]]:
    """Each valid band run's percentile divided by the reference's median run at that load."""
    g = valid[(valid["size"] == size) & in_band(valid["load_fraction"], band)]
    ref = g[g["mode"] == REFERENCE].groupby("target_rate")[col].median()
    out: dict[str, list[float]] = {}
    for mode, gm in g.groupby("mode"):
        denom = gm["target_rate"].map(ref)
        vals = (gm[col] / denom).dropna()
        out[mode] = vals.tolist()
    return out


def _verdict(r: dict) -> str:
    """Separated only when the bootstrap CI excludes 1 AND the rank test (Holm) agrees."""
    ci_says = r["ratio_lo"] > 1 or r["ratio_hi"] < 1
    test_says = not np.isnan(r["p_holm"]) and r["p_holm"] < ALPHA
    if ci_says and test_says:
        return f"{r['mode_b']} lower" if r["ratio"] > 1 else f"{r['mode_a']} lower"
    return "cannot separate"


def _vs_host(verdict: str, mode: str) -> str:
    if verdict == "cannot separate":
        return "cannot separate from host"
    return "slower than host" if verdict == f"{REFERENCE} lower" else "faster than host"


def _tiers(size, p, modes, q, verdict_vs) -> list[dict]:
    """Modes by band latency; a tier is its best mode and every later mode the data cannot
    separate from that leader. Cross-tier pairs that cannot be separated are listed too, so the
    tiers never read as a stricter ranking than the tests allow."""
    def score(m):
        rows = q[(q["mode"] == m) & (q["percentile"] == p)]
        return float(np.exp(np.mean(np.log(rows["estimate"])))) if len(rows) else np.inf

    def separated(a, b):
        v = verdict_vs.get((a, b)) or verdict_vs.get((b, a))
        return v is not None and v != "cannot separate"

    tiers: list[list[str]] = []
    for m in sorted(modes, key=score):
        if tiers and not separated(m, tiers[-1][0]):
            tiers[-1].append(m)
        else:
            tiers.append([m])
    rows = []
    for i, t in enumerate(tiers, 1):
        others = [o for j, tt in enumerate(tiers, 1) if j != i for o in tt]
        overlap = sorted({o for o in others for m in t if not separated(m, o)})
        text = ", ".join(t) + (" (cannot separate)" if len(t) > 1 else "")
        if overlap:
            text += "; not separable either from " + ", ".join(order_modes(overlap))
        rows.append(dict(size=size, percentile=p, tier=i, modes=",".join(t), text=text))
    return rows


def excluded(ds: Dataset) -> pd.DataFrame:
    """Runs left out of the statistics, counted by mode, size, status and reason."""
    bad = ds.runs[~ds.runs["valid"].astype(bool)] if not ds.runs.empty else ds.runs
    rows = bad.groupby(["mode", "size", "status", "reason"]).size().reset_index(name="runs") \
        if not bad.empty else pd.DataFrame(columns=["mode", "size", "status", "reason", "runs"])
    if ds.unreadable:
        rows = pd.concat([rows, pd.DataFrame([dict(mode="?", size="?", status="unreadable",
                                                   reason="torn or incomplete record file",
                                                   runs=len(ds.unreadable))])], ignore_index=True)
    return rows


def percentile_curve(ds: Dataset, size: str, rate: float, mode: str, ps) -> np.ndarray:
    """Pooled latency (us) at each percentile, for the latency-by-percentile figure."""
    g = ds.valid[(ds.valid["size"] == size) & (ds.valid["mode"] == mode) & (ds.valid["target_rate"] == rate)]
    hists = [ds.hist[r] for r in g["run_id"] if r in ds.hist]
    if not hists:
        return np.full(len(ps), np.nan)
    lo, hi, C = pool(hists)
    return quantiles(lo, hi, C.sum(axis=0), ps)


def save(an: Analysis, out_dir) -> None:
    from pathlib import Path
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in Analysis.TABLES:
        getattr(an, name).to_csv(out / f"stats_{name}.csv", index=False)


def load(study: str, out_dir) -> Analysis:
    """The saved tables (bootstrap replicates are not saved: re-run analyze() for those)."""
    from pathlib import Path
    out = Path(out_dir)
    tables = {name: pd.read_csv(out / f"stats_{name}.csv") for name in Analysis.TABLES}
    return Analysis(study, **tables)
