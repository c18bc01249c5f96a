"""Statistics that match how the runs are made: the repetition block is the unit of replication.

The runner sets a mode up once per repetition and runs all its points back to back (matrix.py):
the runs of one block share that set-up, so they are not independent samples; blocks are, and
every repetition holds a block of every arm. A pair is a repetition in which both arms compared
have a complete block. Over the band, per size and percentile, each mode is compared with the
reference (Holm over the modes) and every pair of modes with each other (Holm over the pairs),
by one of two estimators (estimators.py; the study's is recorded in the design):

  pooled (default)  the ratio of pooled quantiles: per load, the histograms of the complete pairs
                    merged per arm; over the band, the mean of the per-load log ratios. An exact
                    within-block label-swap test over the pairs, the interval by inverting it, SE
                    the SD over the swaps (pooled.py says why: a window's p99 is a stall lottery
                    pairing does not cancel; pooling puts all the arm's stalls in one estimate).
                    With fewer pairs than the test needs to reach Holm's first step (9 for 7
                    modes), the verdict is "cannot separate (n pairs)".
  block-t           the mean of per-block differences of log quantiles, paired t (issue 11).

  equivalence   both one-sided tests reject at -+log(1 + margin) (TOST; margin from the study
                file, default 10 %), Holm over the family too
  verdict       slower / faster than the reference (the test rejects); else equivalent (TOST
                rejects); else inconclusive. "not sustained" when runs of the mode in the band
                ended invalid (rate not reached, errors) and were not redone (`attempts`). A run
                invalid only by the noise guards is "disturbed": its block is left out, counted.
  MDE           (t_{1-alpha/2M, n-1} + t_{0.8, n-1}) * SE: 80 % power at Holm's strictest step
  twin          the reference's A/A twin ("<reference>·A/A") is compared with the reference as a
                family of its own, outside the modes' Holm family, pairs and tiers: the study's
                own false-positive check

Per load, `comparisons` and `quantiles` stay descriptive (paired t over blocks, t-interval over
runs). Everything here is pure (a Dataset in, DataFrames out) and deterministic.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .dataset import REFERENCE, Dataset, order_modes, pcol
from .histquant import pooled_quantiles, quantiles
from .estimators import CANNOT, POOLED, Histograms, pooled_family
from .tiers import tier_rows
from .paired import ALPHA, EQUIVALENT, FASTER, INCONCLUSIVE, MARGIN, SLOWER, family, t_interval

QUANTILES = (50.0, 90.0, 99.0, 99.9, 99.99)  # the quantiles table and the figures
HEADLINE_PERCENTILES = (50.0, 90.0, 99.0, 99.9)  # compared with the reference
BAND = (0.30, 0.50)
BAND_TOLERANCE = 0.005  # a run at 29.9 % of max belongs to the 30-50 % band
NOT_SUSTAINED = "not sustained"
DISTURBED = "disturbed"  # invalid only by the noise guards: the block is left out, the mode not blamed
NO_BLOCK = "no complete block"  # every pair of blocks had a failed run (nothing measured)
KEY = ["size", "mode", "target_rate", "repetition"]  # one planned run ("mode": the arm compared)
TWIN = "·A/A"  # the reference's A/A twin arm is "<reference>·A/A" (study key twin: true)


def is_twin(arm) -> bool:
    return str(arm).endswith(TWIN)


def in_band(lf, band=BAND, tol=BAND_TOLERANCE):
    lf = np.asarray(lf, dtype=float)
    return (lf >= band[0] - tol) & (lf <= band[1] + tol)


def run_values(ds: Dataset, ps=QUANTILES) -> pd.DataFrame:
    """One row per run record (every status): its keys, status and its quantiles in us (columns
    p50, p90, ... from its histogram; the record's own table when it has none; NaN unless valid)."""
    runs = ds.runs
    cols = KEY + ["run_id", "load_fraction", "status", "reason", "valid", "disturbed", "started_at"]
    out = pd.DataFrame({c: runs[c] if c in runs else None for c in cols}).reset_index(drop=True)
    if "arm" in runs:  # schema 2: the label compared is the arm (default the mode; the twin its own)
        out["mode"] = runs["arm"].where(runs["arm"].notna(), runs["mode"]).to_numpy()
    out["valid"] = out["valid"].astype(bool)
    Q = np.full((len(runs), len(ps)), np.nan)
    table = [runs[pcol(p)].to_numpy(float) if pcol(p) in runs else np.full(len(runs), np.nan) for p in ps]
    for i, (rid, ok) in enumerate(zip(runs["run_id"], out["valid"])):
        if ok and rid in ds.hist and len(ps):
            Q[i] = quantiles(*ds.hist[rid], ps)
        elif ok:
            Q[i] = [t[i] for t in table]
    for j, p in enumerate(ps):
        out[pcol(p)] = Q[:, j]
    return out


def attempts(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per planned run (size, mode, rate, repetition), whatever number of records
    (attempts) it has. state: "ok" (the latest valid attempt's values), "not sustained" (an
    attempt ended invalid — rate not sustained, errors — and no attempt was valid: a redo that
    passed replaces it, one that did not does not), "disturbed" (invalid only by the noise
    guards, no valid attempt) or "failed" (nothing measured: the mode did not come up, the
    run crashed). Quantiles are NaN unless ok."""
    if runs.empty:
        return runs.assign(state=pd.Series(dtype=object), attempts=pd.Series(dtype=int))
    r = runs.copy()
    r["_t"] = r["started_at"].fillna("").astype(str)
    disturbed = r["disturbed"].fillna(False).astype(bool) if "disturbed" in r else pd.Series(False, index=r.index)
    disturbed = disturbed.where(r["disturbed"].notna(), False) if "disturbed" in r else disturbed
    # Invalid because the mode did not sustain the rate (or errors): "not sustained". Invalid only
    # because the machine was disturbed (noise guards: send lag, foreign CPU, steal, hiccups):
    # "disturbed", left out like a failed run and counted, never blamed on the mode.
    r["_inv"] = r["status"].eq("invalid") & ~disturbed
    r["_dist"] = r["status"].eq("invalid") & disturbed
    r = r.sort_values(["valid", "_t"], kind="stable")
    r["_any_inv"] = r.groupby(KEY, sort=False)["_inv"].transform("any")
    r["_any_dist"] = r.groupby(KEY, sort=False)["_dist"].transform("any")
    r["attempts"] = r.groupby(KEY, sort=False)["run_id"].transform("size")
    last = r.groupby(KEY, sort=False).tail(1).copy()
    last["state"] = np.where(last["valid"], "ok", np.where(last["_any_inv"], NOT_SUSTAINED,
                                                            np.where(last["_any_dist"], DISTURBED, "failed")))
    return last.drop(columns=["_t", "_inv", "_any_inv", "_dist", "_any_dist"]).reset_index(drop=True)


class Band:
    """One size's runs (in the band, or at one load) for one percentile: log values and states by
    (repetition, rate) x mode, and what every comparison needs, computed once."""

    def __init__(self, att: pd.DataFrame, col: str):
        idx = ["repetition", "target_rate"]
        self.us = att.pivot(index=idx, columns="mode", values=col)
        self.values = np.log(self.us)
        self.state = att.pivot(index=idx, columns="mode", values="state")
        by_rep = lambda df: df.groupby(level="repetition")  # noqa: E731
        # a block is complete when every band run it has is ok (and it has some)
        self.ok = by_rep(self.state.eq("ok") | self.state.isna()).all() & by_rep(self.state.notna()).any()
        self.had = by_rep(self.state.notna()).any().sum()
        self.ns = self.state.eq(NOT_SUSTAINED).sum()
        self.means = by_rep(self.values).mean()
        self.means_us = by_rep(self.us).mean()
        self.modes = order_modes(self.state.columns)

    of = classmethod(lambda cls, att, col: cls(att, col))

    def not_sustained(self, mode: str) -> int:
        return int(self.ns[mode])

    def diffs(self, a: str, b: str, us: bool = False) -> pd.Series:
        """Per repetition where both blocks are complete: mean over their loads of a - b (log
        values, or us). Both blocks of a repetition ran the same loads (matrix.py), so this is the
        difference of the two block values."""
        m = self.means_us if us else self.means
        both = self.ok[a] & self.ok[b]
        return (m[a] - m[b])[both]

    def block_values(self, mode: str) -> pd.Series:
        return self.means[mode][self.ok[mode]]


@dataclass
class Analysis:
    study: str
    quantiles: pd.DataFrame  # per size x mode x load x percentile: typical run's quantile, t-CI
    comparisons: pd.DataFrame  # per load vs the reference, paired by repetition
    headline: pd.DataFrame  # per size x mode x percentile over the band: overhead, CI, MDE, verdict
    band_pairs: pd.DataFrame  # per size x percentile x pair of modes over the band
    tiers: pd.DataFrame  # per size x percentile: groups of modes the data cannot separate
    excluded: pd.DataFrame  # counts of runs left out, by status and reason
    blocks: pd.DataFrame  # per size x mode x repetition x percentile: the block values
    band: tuple = BAND
    margin: float = MARGIN
    alpha: float = ALPHA
    design: dict = field(default_factory=dict)  # what compare.py matches studies on

    TABLES = ("quantiles", "comparisons", "headline", "band_pairs", "tiers", "excluded", "blocks")


def analyze(ds: Dataset, ps=QUANTILES, band=BAND, margin: float = MARGIN, alpha: float = ALPHA,
            reference: str = REFERENCE, estimator: str = POOLED) -> Analysis:
    ps = tuple(sorted(set(ps) | set(HEADLINE_PERCENTILES)))
    att = attempts(run_values(ds, ps))
    qdf = _quantiles(ds, att, ps, alpha)
    comparisons = _per_load(att, ps, reference, margin, alpha)
    head, pairs, tiers, blocks = [], [], [], []
    band_att = att[in_band(att["load_fraction"], band)] if not att.empty else att
    for size in sizes_of(band_att):
        a = band_att[band_att["size"] == size]
        hists = Histograms(a, ds.hist, Band.of(a, pcol(50.0)).ok) if estimator == POOLED else None
        for p in HEADLINE_PERCENTILES:
            b = Band.of(a, pcol(p))
            head += _vs_reference(b, size, p, reference, margin, alpha, hists)
            fam = _pairs(b, size, p, margin, alpha, hists)
            pairs += fam
            tiers += tier_rows(b, size, p, fam, NOT_SUSTAINED, is_twin)
            blocks += [dict(size=size, mode=m, repetition=int(k), percentile=p, value_us=float(np.exp(v)))
                       for m in b.modes for k, v in b.block_values(m).items()]
    headline = sort_rows(pd.DataFrame(head, columns=_HEAD_COLS)).assign(estimator=estimator)
    design = {**_design(ds, band_att, band, margin, alpha, reference, headline), "estimator": estimator}
    return Analysis(ds.study, qdf, comparisons, headline, pd.DataFrame(pairs, columns=_PAIR_COLS),
                    pd.DataFrame(tiers, columns=_TIER_COLS), excluded(ds),
                    sort_rows(pd.DataFrame(blocks, columns=["size", "mode", "repetition", "percentile", "value_us"])),
                    tuple(band), margin, alpha, design)


def sizes_of(df) -> list[str]:
    present = set(df["size"]) if len(df) else set()
    return [s for s in ("small", "large") if s in present] + sorted(present - {"small", "large"})


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "mode" not in df:
        return df.reset_index(drop=True)
    rank = {m: i for i, m in enumerate(order_modes(df["mode"].unique()))}
    keys = [c for c in ("size", "target_rate", "percentile") if c in df]
    df = df.assign(_m=df["mode"].map(rank), _s=df["size"].map({"small": 0, "large": 1}).fillna(2))
    return df.sort_values(["_s"] + keys[1:] + ["_m"], kind="stable").drop(columns=["_m", "_s"]).reset_index(drop=True)


def _quantiles(ds, att, ps, alpha) -> pd.DataFrame:
    """Per cell: the typical run's quantile (geometric mean over its repetitions) with a t-interval
    over them, the pooled histogram's quantile, and "not sustained" cells left without numbers."""
    rows = []
    for (size, mode, rate), g in att.groupby(["size", "mode", "target_rate"], sort=False):
        ok = g[g["state"] == "ok"]
        ns = int((g["state"] == NOT_SUSTAINED).sum())
        status = NOT_SUSTAINED if ns else ("ok" if len(ok) else "failed")
        pooled = pooled_quantiles([ds.hist[r] for r in ok["run_id"] if r in ds.hist], ps) if not ns else \
            np.full(len(ps), np.nan)
        lf = float(g["load_fraction"].median()) if g["load_fraction"].notna().any() else np.nan
        for j, p in enumerate(ps):
            est, lo, hi = t_interval(np.log(ok[pcol(p)].to_numpy(float)), alpha) if not ns else (np.nan,) * 3
            rows.append(dict(size=size, mode=mode, target_rate=float(rate), load_fraction=lf, percentile=p,
                             estimate=np.exp(est), lo=np.exp(lo), hi=np.exp(hi), pooled=pooled[j],
                             runs=len(ok), not_sustained=ns, status=status))
    return sort_rows(pd.DataFrame(rows, columns=["size", "mode", "target_rate", "load_fraction", "percentile",
                                                 "estimate",
                                             "lo", "hi", "pooled", "runs", "not_sustained", "status"]))


def _per_load(att, ps, reference, margin, alpha) -> pd.DataFrame:
    """Per size x load x percentile: each mode's ratio to the reference, paired by repetition."""
    rows = []
    for (size, rate), g in att.groupby(["size", "target_rate"], sort=False):
        if reference not in set(g["mode"]):
            continue
        lf = float(g["load_fraction"].median()) if g["load_fraction"].notna().any() else np.nan
        for p in ps:
            b = Band.of(g, pcol(p))
            others = [m for m in b.modes if m != reference]
            D = aligned([b.diffs(m, reference) for m in others])
            Du = aligned([b.diffs(m, reference, us=True) for m in others])
            f = family(D, margin, alpha)
            for i, m in enumerate(others):
                row = dict(size=size, mode=m, target_rate=float(rate), load_fraction=lf, percentile=p)
                if b.not_sustained(m):  # no numbers: not an average of the runs that passed
                    rows.append({**row, "blocks": 0, "status": NOT_SUSTAINED})
                    continue
                mean_us, lo_us, hi_us = t_interval(Du[i], alpha)
                rows.append({**row, "blocks": int(f["n"][i]), "ratio": np.exp(f["mean"][i]),
                             "ratio_lo": np.exp(f["lo"][i]), "ratio_hi": np.exp(f["hi"][i]), "p": f["p"][i],
                             "diff_us": mean_us, "diff_lo": lo_us, "diff_hi": hi_us, "status": "ok"})
    return sort_rows(pd.DataFrame(rows, columns=["size", "mode", "target_rate", "load_fraction", "percentile", "blocks",
                                             "ratio", "ratio_lo", "ratio_hi", "p", "diff_us", "diff_lo", "diff_hi",
                                             "status"]))


def aligned(series: list[pd.Series]) -> np.ndarray:
    """Rows of per-repetition values aligned on the union of repetitions (NaN where missing)."""
    if not series:
        return np.empty((0, 0))
    return pd.concat(series, axis=1).to_numpy(float).T


_HEAD_COLS = ["size", "mode", "percentile", "loads", "blocks", "blocks_left_out", "overhead_pct", "overhead_lo",
              "overhead_hi", "log_ratio", "se", "mde_pct", "p", "p_holm", "p_tost", "p_tost_holm", "diff_us",
              "diff_lo", "diff_hi", "not_sustained", "verdict"]
_PAIR_COLS = ["size", "percentile", "mode_a", "mode_b", "blocks", "ratio", "ratio_lo", "ratio_hi", "p", "p_holm",
              "p_tost", "p_tost_holm", "verdict"]
_TIER_COLS = ["size", "percentile", "tier", "modes", "text"]


def verdict_text(code: int, reference: str = REFERENCE, n: int = 0) -> str:
    return {SLOWER: f"slower than {reference}", FASTER: f"faster than {reference}",
            EQUIVALENT: f"equivalent to {reference}", INCONCLUSIVE: "inconclusive",
            CANNOT: f"cannot separate ({n} pairs)"}[int(code)]


def _family(b: Band, arms: list, comparators: list, p, margin, alpha, hists) -> dict:
    """One family's comparisons (arm minus comparator) by the study's estimator."""
    if hists is not None:
        return pooled_family([hists.pairs(a, c) for a, c in zip(arms, comparators)], p, margin, alpha)
    return family(aligned([b.diffs(a, c) for a, c in zip(arms, comparators)]), margin, alpha)


arm_family = _family  # for a declared family of pairs (pairs.py)


def _vs_reference(b: Band, size, p, reference, margin, alpha, hists=None) -> list[dict]:
    """The headline rows of one size and percentile: every mode against the reference (Holm over
    the modes), then the reference's A/A twin, a family of its own (the study's false-positive check)."""
    if reference not in b.modes:
        return []
    modes = [m for m in b.modes if m != reference and not is_twin(m)]
    twins = [m for m in b.modes if is_twin(m)]
    return _rows(b, size, p, reference, modes, margin, alpha, hists) + \
        _rows(b, size, p, reference, twins, margin, alpha, hists)


def _rows(b: Band, size, p, reference, others, margin, alpha, hists) -> list[dict]:
    sustained = [m for m in others if not b.not_sustained(m)]
    f = _family(b, sustained, [reference] * len(sustained), p, margin, alpha, hists)
    loads = int(b.values.index.get_level_values("target_rate").nunique())
    rows = []
    for m in others:
        had = int(b.had[m])
        row = dict(size=size, mode=m, percentile=p, loads=loads, not_sustained=b.not_sustained(m))
        if m not in sustained:
            rows.append({**row, "blocks": 0, "blocks_left_out": had, "verdict": NOT_SUSTAINED})
            continue
        i = sustained.index(m)
        mean_us, lo_us, hi_us = t_interval(b.diffs(m, reference, us=True), alpha)
        rows.append({**row, "blocks": int(f["n"][i]), "blocks_left_out": had - int(f["n"][i]),
                     "overhead_pct": 100 * np.expm1(f["mean"][i]), "overhead_lo": 100 * np.expm1(f["lo"][i]),
                     "overhead_hi": 100 * np.expm1(f["hi"][i]), "log_ratio": f["mean"][i], "se": f["se"][i],
                     "mde_pct": 100 * np.expm1(f["mde"][i]), "p": f["p"][i], "p_holm": f["p_holm"][i],
                     "p_tost": f["p_tost"][i], "p_tost_holm": f["p_tost_holm"][i],
                     "diff_us": mean_us, "diff_lo": lo_us, "diff_hi": hi_us,
                     "verdict": verdict_text(f["verdict"][i], reference, int(f["n"][i])) if f["n"][i] >= 2 else
                     f"cannot separate ({int(f['n'][i])} pairs)" if f["n"][i] == 1 else NO_BLOCK})
    return rows


def _pairs(b: Band, size, p, margin, alpha, hists=None) -> list[dict]:
    """Every pair of modes over the band, the same rule as against the reference (Holm over pairs);
    the twin is in no pair (it is not a mode)."""
    modes = [m for m in b.modes if not is_twin(m)]
    sustained = [m for m in modes if not b.not_sustained(m)]
    pairs = list(itertools.combinations(sustained, 2))
    f = _family(b, [x for x, _ in pairs], [y for _, y in pairs], p, margin, alpha, hists)
    rows = []
    for i, (x, y) in enumerate(pairs):
        code = int(f["verdict"][i])
        verdict = {SLOWER: f"{y} lower", FASTER: f"{x} lower", EQUIVALENT: "equivalent",
                   INCONCLUSIVE: "cannot separate", CANNOT: "cannot separate"}[code]
        rows.append(dict(size=size, percentile=p, mode_a=x, mode_b=y, blocks=int(f["n"][i]),
                         ratio=np.exp(f["mean"][i]), ratio_lo=np.exp(f["lo"][i]), ratio_hi=np.exp(f["hi"][i]),
                         p=f["p"][i], p_holm=f["p_holm"][i], p_tost=f["p_tost"][i], p_tost_holm=f["p_tost_holm"][i],
                         verdict=verdict))
    for x, y in itertools.combinations(modes, 2):
        if x not in sustained or y not in sustained:
            rows.append(dict(size=size, percentile=p, mode_a=x, mode_b=y, blocks=0, verdict=NOT_SUSTAINED))
    return rows


def _design(ds, band_att, band, margin, alpha, reference, headline) -> dict:
    """What the study ran, as far as the statistics care: compare.py matches studies on it."""
    def common(col):
        v = ds.runs[col].dropna() if col in ds.runs else []
        x = v.mode().iloc[0] if len(v) else None
        return x.item() if hasattr(x, "item") else x

    loads = sorted({round(float(x), 3) for x in band_att["load_fraction"].dropna()}) if len(band_att) else []
    return {"study": ds.study, "reference": reference, "sizes": sizes_of(band_att), "band": list(band),
            "band_loads": loads, "modes": order_modes(band_att["mode"].unique()) if len(band_att) else [],
            "percentiles": list(HEADLINE_PERCENTILES), "margin": margin, "alpha": alpha,
            "blocks": int(headline["blocks"].max()) if len(headline) and headline["blocks"].notna().any() else 0,
            "generator": common("generator"), "duration_s": common("duration_s")}


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
    return pooled_quantiles([ds.hist[r] for r in g["run_id"] if r in ds.hist], ps)


def save(an: Analysis, out_dir) -> None:
    from pathlib import Path
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in Analysis.TABLES:
        getattr(an, name).to_csv(out / f"stats_{name}.csv", index=False)
    (out / "stats_design.json").write_text(json.dumps(an.design, indent=1, default=str))


def load(study: str, out_dir) -> Analysis:
    """The saved tables of an analysis."""
    from pathlib import Path
    out = Path(out_dir)
    tables = {name: pd.read_csv(out / f"stats_{name}.csv") for name in Analysis.TABLES}
    try:
        design = json.loads((out / "stats_design.json").read_text())
    except (OSError, ValueError):
        design = {}
    return Analysis(study, **tables, band=tuple(design.get("band", BAND)), margin=design.get("margin", MARGIN),
                    alpha=design.get("alpha", ALPHA), design=design)
