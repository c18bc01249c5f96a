"""Our headline beside other evidence: an earlier study (does it repeat?) and the 2016 study.

Repeatability. `compare_headlines(a, b)` puts two studies' headlines (stats_headline.csv) side
by side: per size, mode and percentile both overheads with their 95 % intervals, whether the
intervals overlap ("agree", the acceptance criterion of issue 11) and a Welch t-test of the
difference of the two log ratios. `invoke compare --study A --study B` prints it; the report
includes it when an earlier study exists (`earlier_studies`): the ones the study file names
(`analysis: {compare_with: [...]}`, names in data/processed or paths of processed directories),
else every other analysed study on disk with the same design (`same_design`: reference, sizes,
band loads, generator and window length), newest first.

The 2016 study. `SEED_ORDERINGS` are the orders of modes its conclusions state (../shared/
STUDY.md); `seed_agreement(band_pairs)` says for each whether this study agrees, disagrees or
cannot tell, from the pairwise band comparisons (stats.py, Holm over pairs).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sst

from .stats import NOT_SUSTAINED

AGREE_COLS = ["size", "mode", "percentile", "a", "a_overhead", "a_verdict", "b", "b_overhead", "b_verdict",
              "agree", "difference_pct", "p_difference", "estimators"]


def _interval(r) -> str:
    if pd.isna(r.get("overhead_pct")):
        return str(r.get("verdict") or "")
    return f"{r['overhead_pct']:+.1f} % [{r['overhead_lo']:+.1f}, {r['overhead_hi']:+.1f}]"


def compare_headlines(a: pd.DataFrame, b: pd.DataFrame, names=("A", "B"), percentiles=None) -> pd.DataFrame:
    """Two headlines side by side, per size x mode x percentile present in both.

    agree: the two 95 % intervals of the overhead overlap (None when either is missing or not
    sustained). difference_pct / p_difference: B relative to A and the Welch t-test of the
    difference of the log ratios (degrees of freedom by Welch-Satterthwaite). Headlines made by
    different estimators are not compared: every cell's agree is None and `estimators` says why."""
    key = ["size", "mode", "percentile"]
    ests = (estimator_of(a), estimator_of(b))
    m = a.merge(b, on=key, suffixes=("_a", "_b"))
    if percentiles is not None:
        m = m[m["percentile"].isin(percentiles)]
    rows = []
    for _, r in m.iterrows():
        ra = {k[:-2]: r[k] for k in r.index if k.endswith("_a")}
        rb = {k[:-2]: r[k] for k in r.index if k.endswith("_b")}
        both = all(pd.notna(x.get("overhead_lo")) and pd.notna(x.get("overhead_hi")) for x in (ra, rb))
        both = both and ests[0] == ests[1]
        agree = bool(ra["overhead_lo"] <= rb["overhead_hi"]
                     and rb["overhead_lo"] <= ra["overhead_hi"]) if both else None
        diff, p = _welch(ra, rb) if ests[0] == ests[1] else (np.nan, np.nan)
        rows.append(dict(size=r["size"], mode=r["mode"], percentile=r["percentile"], a=names[0],
                         a_overhead=_interval(ra), a_verdict=ra.get("verdict"), b=names[1], b_overhead=_interval(rb),
                         b_verdict=rb.get("verdict"), agree=agree, difference_pct=diff, p_difference=p,
                         estimators=f"{ests[0]} / {ests[1]}"))
    return pd.DataFrame(rows, columns=AGREE_COLS)


def _welch(ra: dict, rb: dict) -> tuple[float, float]:
    need = ("log_ratio", "se", "blocks")
    if not all(pd.notna(x.get(k)) for x in (ra, rb) for k in need) or min(ra["blocks"], rb["blocks"]) < 2:
        return np.nan, np.nan
    d = rb["log_ratio"] - ra["log_ratio"]
    va, vb = ra["se"] ** 2, rb["se"] ** 2
    se = np.sqrt(va + vb)
    if se == 0:
        return float(100 * np.expm1(d)), (1.0 if d == 0 else 0.0)
    df = (va + vb) ** 2 / (va ** 2 / (ra["blocks"] - 1) + vb ** 2 / (rb["blocks"] - 1))
    return float(100 * np.expm1(d)), float(2 * sst.t.sf(abs(d) / se, df))


def agreement_summary(cmp: pd.DataFrame, percentiles=(50.0, 99.0)) -> str:
    """One line: in how many cells the intervals agree, at the given percentiles."""
    sel = cmp[cmp["percentile"].isin(percentiles)] if percentiles else cmp
    known = sel[sel["agree"].notna()]
    ps = ", ".join(f"p{p:g}" for p in percentiles) if percentiles else "all percentiles"
    ests = set(cmp["estimators"].dropna()) if "estimators" in cmp else set()
    if any(a != b for a, b in (e.split(" / ") for e in ests)):
        return f"not compared: the studies were analysed by different estimators ({', '.join(sorted(ests))})"
    if known.empty:
        return f"no cell to compare at {ps}"
    bad = known[~known["agree"].astype(bool)]
    text = f"intervals agree in {len(known) - len(bad)} of {len(known)} cells ({ps})"
    if len(bad):
        text += "; differ: " + ", ".join(f"{r['mode']} {r['size']} p{r['percentile']:g}" for _, r in bad.iterrows())
    missing = len(sel) - len(known)
    return text + (f"; {missing} cells without an interval in one of the studies" if missing else "")


MEASURES = ("p50", "p99", "p99 outside steal", "CPU softirq/request client core", "CPU softirq/request server core")
MEASURE_COLS = ["measure", "size", "mode", "blocks", "overhead_pct", "overhead_lo", "overhead_hi", "log_ratio", "se",
                "verdict", "estimator"]


def measures(processed: Path) -> pd.DataFrame:
    """One study's figures that `invoke compare` agrees cells on (issue 25), the modes only: p50 and
    raw p99 (stats_headline.csv), p99 outside hypervisor steal (stats_conditional.csv; a withheld
    cell has no interval) and CPU softirq per request per pinned core (stats_cpu.csv). A figure a
    study did not record has no rows."""
    base = Path(processed)
    h = pd.read_csv(base / "stats_headline.csv")
    est = estimator_of(h)
    parts = [h[h["percentile"] == p].assign(measure=f"p{p:g}") for p in (50.0, 99.0)]
    read = lambda name: pd.read_csv(base / name) if (base / name).exists() else pd.DataFrame()  # noqa: E731
    cond, cpu = read("stats_conditional.csv"), read("stats_cpu.csv")
    if len(cond):
        parts.append(cond.assign(measure=MEASURES[2]))
    for core in ("client", "server"):
        if len(cpu):
            g = cpu[(cpu["kind"] == "softirq") & (cpu["core"] == core)]
            parts.append(g.assign(measure=MEASURES[3 + (core == "server")]))
    out = pd.concat([x for x in parts if len(x)], ignore_index=True) if any(len(x) for x in parts) else \
        pd.DataFrame(columns=MEASURE_COLS)
    out = out[~out["mode"].astype(str).str.endswith("·A/A")]
    return out.assign(estimator=est).reindex(columns=MEASURE_COLS).reset_index(drop=True)


def compare_measures(a: pd.DataFrame, b: pd.DataFrame, names=("A", "B")) -> pd.DataFrame:
    """compare_headlines per measure of two `measures` tables (column `measure` instead of the percentile)."""
    rows = []
    for m in MEASURES:
        x, y = (t[t["measure"] == m].assign(percentile=0.0) for t in (a, b))
        if len(x) and len(y):
            rows.append(compare_headlines(x, y, names).drop(columns="percentile").assign(measure=m))
    cols = ["measure"] + [c for c in AGREE_COLS if c != "percentile"]
    return pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols)


def measure_summary(cmp: pd.DataFrame) -> list[str]:
    """Per measure: in how many cells the two studies' intervals agree, and which differ."""
    lines = []
    for m in MEASURES:
        g = cmp[cmp["measure"] == m] if len(cmp) else cmp
        if g.empty:
            lines.append(f"{m}: not in both studies")
            continue
        known = g[g["agree"].notna()]
        bad = known[~known["agree"].astype(bool)]
        text = f"{m}: intervals agree in {len(known) - len(bad)} of {len(known)} cells"
        if len(bad):
            text += "; differ: " + ", ".join(f"{r['mode']} {r['size']}" for _, r in bad.iterrows())
        if len(g) > len(known):
            text += (f"; {len(g) - len(known)} cells without an interval in one of them (withheld, too few pairs, "
                     "wider than ±1,000 %)")
        lines.append(text)
    return lines


DESIGN_KEYS = ("reference", "sizes", "band_loads", "generator", "duration_s", "estimator")
OLD_ESTIMATOR = "block-t"  # what a design or headline without an estimator was analysed with


def estimator_of(x) -> str:
    """The estimator of a design dict or a headline table (recorded since issue 23)."""
    if isinstance(x, dict):
        return x.get("estimator") or OLD_ESTIMATOR
    v = x["estimator"].dropna() if "estimator" in x else []
    return str(v.iloc[0]) if len(v) else OLD_ESTIMATOR


def same_design(a: dict, b: dict) -> bool:
    """Studies whose headlines mean the same thing: same reference, sizes, band loads, generator
    and window. Modes may differ (a mode added later is compared where both have it)."""
    same = lambda k: (estimator_of(a) == estimator_of(b)) if k == "estimator" else a.get(k) == b.get(k)  # noqa: E731
    return bool(a) and bool(b) and all(same(k) for k in DESIGN_KEYS)


def read_design(processed: Path) -> dict:
    try:
        return json.loads((Path(processed) / "stats_design.json").read_text())
    except (OSError, ValueError):
        return {}


def resolve(name_or_path: str, processed_root: Path) -> Path:
    """A study name (data/processed/<name>) or a processed directory's path."""
    p = Path(name_or_path)
    return p if p.is_dir() and (p / "stats_headline.csv").exists() else Path(processed_root) / name_or_path


def earlier_studies(study: str, processed_root: Path, compare_with=None) -> list[Path]:
    """Processed directories to compare `study` with: those named (when any), else every other
    analysed study under processed_root with the same design, newest first."""
    root = Path(processed_root)
    if compare_with:
        found = [resolve(x, root) for x in compare_with]
        return [p for p in found if (p / "stats_headline.csv").exists()]
    mine = read_design(root / study)
    others = [d for d in root.iterdir() if d.is_dir() and d.name != study] if root.is_dir() else []
    same = [d for d in others if (d / "stats_headline.csv").exists() and same_design(mine, read_design(d))]
    return sorted(same, key=lambda d: (d / "stats_headline.csv").stat().st_mtime, reverse=True)


# (lower latency, higher latency, what STUDY.md's conclusions say, scope). Scope "band": a
# statement about the study's tests generally, checked at 30-50 % of max; "max load": stated for
# the maximum load only, which the band cannot check (studies/sweep.yml runs up to it).
ORDERINGS_FILE = Path(__file__).with_name("orderings_2016.csv")  # data, so no module here names a mode


def read_orderings(path: Path = ORDERINGS_FILE) -> tuple[tuple[str, str, str, str], ...]:
    with open(path, newline="") as f:
        return tuple((r["lower"], r["higher"], r["stated"], r["scope"]) for r in csv.DictReader(f))


SEED_ORDERINGS = read_orderings()
SEED_COLS = ["size", "percentile", "lower", "higher", "stated", "here", "agreement"]


def seed_agreement(band_pairs: pd.DataFrame, percentile: float = 99.0, orderings=SEED_ORDERINGS) -> pd.DataFrame:
    """For each stated ordering and size: agrees (our pair test puts them in the stated order),
    disagrees (the opposite order), or cannot tell (not separated, equivalent, not sustained, a
    mode missing here, or a statement about another load)."""
    bp = band_pairs[band_pairs["percentile"] == percentile] if len(band_pairs) else band_pairs
    sizes = [s for s in ("small", "large") if s in set(bp["size"])] + sorted(set(bp["size"]) - {"small", "large"}) \
        if len(bp) else []
    rows = []
    for size in sizes:
        g = bp[bp["size"] == size]
        present = set(g["mode_a"]) | set(g["mode_b"])
        for lower, higher, stated, scope in orderings:
            row = dict(size=size, percentile=percentile, lower=lower, higher=higher, stated=stated)
            missing = [m for m in (lower, higher) if m not in present]
            if scope != "band":
                rows.append({**row, "here": f"stated at {scope}; not what the band measures",
                             "agreement": "cannot tell"})
                continue
            if missing:
                rows.append({**row, "here": f"{', '.join(missing)} not in this study", "agreement": "cannot tell"})
                continue
            r = g[((g["mode_a"] == lower) & (g["mode_b"] == higher))
                  | ((g["mode_a"] == higher) & (g["mode_b"] == lower))].iloc[0]
            flip = r["mode_a"] != lower  # the table holds (a, b) in mode order: ratio a/b
            ratio, lo, hi = (1 / r["ratio"], 1 / r["ratio_hi"], 1 / r["ratio_lo"]) if flip else \
                (r["ratio"], r["ratio_lo"], r["ratio_hi"])
            here = r["verdict"] if r["verdict"] == NOT_SUSTAINED else \
                f"{lower}/{higher} = {ratio:.3f} {_bounds(lo, hi, r.get('blocks'))}: {r['verdict']}"
            agreement = ("agrees" if r["verdict"] == f"{lower} lower" else
                         "disagrees" if r["verdict"] == f"{higher} lower" else "cannot tell")
            rows.append({**row, "here": here, "agreement": agreement})
    return pd.DataFrame(rows, columns=SEED_COLS)


def _bounds(lo, hi, pairs) -> str:
    """A ratio's interval, or "—" with why it cannot be estimated (never nan)."""
    if pd.isna(lo) or pd.isna(hi):
        return f"[—: {int(pairs)} pairs]" if pd.notna(pairs) and int(pairs) < 6 else "[—: wider than 1/11–11]"
    return f"[{lo:.3f}, {hi:.3f}]"
