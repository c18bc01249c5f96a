"""The tail outside hypervisor steal, beside the raw one (issue 25). Pure: a Dataset and its
Analysis in, a table and a summary out.

  estimand   per size and mode over the band, the study's pooled estimator (estimators.py) at
             p99 on the `outside_steal` histograms (recordparts.py: requests whose intended time
             lies in no steal episode of either pinned core, widened by L before and D(S) after),
             over the same complete blocks as the raw figure; always shown beside the raw one
  guard (a)  the left-out share per run must be the reference's within +-1 percentage point: a
             paired TOST over blocks (per-block mean share over the band's loads, the mode's minus
             the reference's) at alpha, per cell; else, or when a run of the cell's blocks has its
             conditional histogram withheld by the record, the cell's conditional verdict is
             withheld with the reason, and the cell is outside the conditional Holm family
  guard (b)  placebo: the same estimator on `outside_steal_placebo` (the episodes moved to random
             times) over the raw family; per cell, whether its verdict equals the raw one; the study
             is flagged when any differs
  guard (c)  sensitivity: the conditional verdicts at 2x L and D (`outside_steal_wide`) beside
  SE ratio   the median over non-withheld cells of conditional / raw p99 SE; above SE_RATIO_LIMIT
             the conditional figures stay in the report but leave the headline table
  twin       the reference's A/A twin gets the conditional comparison too, a family of its own
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import paired, stats
from .dataset import REFERENCE, Dataset, pcol
from .estimators import Histograms, pooled_family
from .histquant import pooled_quantiles
from .tables import pct_text
from .recordparts import CONDITIONAL, VARIANTS, share_col, withheld_col

PERCENTILE = 99.0
SHARE_MARGIN = 0.01  # +-1 percentage point of left-out share
SE_RATIO_LIMIT = 0.7
WIDE, PLACEBO = VARIANTS[1], VARIANTS[2]
COLS = ["size", "mode", "percentile", "blocks", "raw_overhead_pct", "raw_overhead_lo", "raw_overhead_hi", "raw_se",
        "raw_mde_pct", "raw_verdict", "overhead_pct", "overhead_lo", "overhead_hi", "log_ratio", "se", "mde_pct",
        "p", "p_holm", "p_tost", "p_tost_holm", "verdict", "withheld", "share_ref_pct", "share_mode_pct",
        "share_diff_pp", "share_p_tost", "se_ratio", "wide_overhead_pct", "wide_verdict", "placebo_overhead_pct",
        "placebo_verdict", "placebo_same", "estimator"]
LOAD_COLS = ["size", "target_rate", "load_fraction", "mode", "runs", "raw_p99_us", "outside_steal_p99_us",
             "raw_ratio", "outside_steal_ratio", "left_out_pct"]


@dataclass
class Conditional:
    table: pd.DataFrame  # per size x mode over the band: raw beside conditional, the guards
    summary: dict = field(default_factory=dict)
    loads: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LOAD_COLS))  # by_load


def band_attempts(ds: Dataset, band) -> pd.DataFrame:
    """The band's planned runs (stats.attempts) with their left-out shares and withheld reasons."""
    att = stats.attempts(stats.run_values(ds, (50.0,)))
    extra = [c for v in VARIANTS for c in (share_col(v), withheld_col(v)) if c in ds.runs]
    if extra and len(att):
        att = att.merge(ds.runs[["run_id", *extra]].drop_duplicates("run_id"), on="run_id", how="left")
    return att[stats.in_band(att["load_fraction"], band)] if len(att) else att


def analyze(ds: Dataset, an: stats.Analysis, reference: str = REFERENCE) -> Conditional:
    if not ds.variants.get(CONDITIONAL):
        return Conditional(pd.DataFrame(columns=COLS), summarize(pd.DataFrame(columns=COLS), recorded=False))
    att = band_attempts(ds, an.band)
    rows: list[dict] = []
    for size in stats.sizes_of(att):
        a = att[att["size"] == size]
        ok = stats.Band.of(a, pcol(50.0)).ok
        if reference not in ok:
            continue
        hists = {v: Histograms(a, ds.variants[v], ok) for v in VARIANTS if ds.variants.get(v)}
        raw = an.headline[(an.headline["size"] == size) & (an.headline["percentile"] == PERCENTILE)]
        raw = {r["mode"]: r for _, r in raw.iterrows()}
        others = [m for m in stats.order_modes(ok.columns) if m != reference]
        reasons = withheld_reasons(a, ok, others, reference, an.alpha)
        for fam in ([m for m in others if not stats.is_twin(m)], [m for m in others if stats.is_twin(m)]):
            rows += _family_rows(size, fam, reference, raw, reasons, hists, an)
    table = stats.sort_rows(pd.DataFrame(rows, columns=COLS)).assign(estimator=an.design.get("estimator"))
    return Conditional(table, summarize(table), by_load(ds, an, reference))


def withheld_reasons(a: pd.DataFrame, ok: pd.DataFrame, modes: list, reference: str, alpha: float) -> dict:
    """Per mode: "" or why its conditional verdict is withheld (the record withheld a run of the
    cell's complete blocks, or guard (a): the left-out share is not within +-1 pp of the
    reference's), with the share figures."""
    out = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b = stats.Band.of(a, share_col(CONDITIONAL))
        D = stats.aligned([b.diffs(m, reference, us=True) for m in modes])
        f = paired.family(D, margin=np.expm1(SHARE_MARGIN), alpha=alpha) if len(modes) else {}
    for i, m in enumerate(modes):
        both = ok[m] & ok[reference] if m in ok else ok[reference] & False
        reps = set(both[both].index)
        cell = a[a["repetition"].isin(reps) & a["mode"].isin([m, reference]) & a["state"].eq("ok")]
        why = cell[withheld_col(CONDITIONAL)].fillna("").astype(str) if withheld_col(CONDITIONAL) in cell else \
            pd.Series(dtype=str)
        why = why[why != ""]
        mean_of = lambda x: float(cell.loc[cell["mode"] == x, share_col(CONDITIONAL)].mean())  # noqa: E731
        n, diff, pt = int(f["n"][i]), float(f["mean"][i]), float(f["p_tost"][i])
        row = dict(share_ref_pct=100 * mean_of(reference), share_mode_pct=100 * mean_of(m),
                   share_diff_pp=100 * diff, share_p_tost=pt, withheld="")
        if len(why):
            row["withheld"] = f"{why.mode().iloc[0]} ({len(why)} of {len(cell)} runs)"
        elif n < 2:
            row["withheld"] = f"left-out share: {n} blocks with it, a paired TOST needs 2"
        elif not pt < alpha:
            row["withheld"] = (f"left-out share {100 * diff:+.1f} pp from {reference}'s, not shown within "
                               f"±{100 * SHARE_MARGIN:.0f} pp (paired TOST over {n} blocks, p = {pt:.2f})")
        out[m] = row
    return out


def verdict_of(f: dict, i: int, reference: str) -> str:
    n = int(f["n"][i])
    if n < 2:
        return f"cannot separate ({n} pairs)" if n == 1 else stats.NO_BLOCK
    return stats.verdict_text(int(f["verdict"][i]), reference, n)


def _fam(hists: dict, v: str, modes: list, reference: str, an) -> dict | None:
    if v not in hists or not modes:
        return None
    return pooled_family([hists[v].pairs(m, reference) for m in modes], PERCENTILE, an.margin, an.alpha)


def _family_rows(size, modes, reference, raw, reasons, hists, an) -> list[dict]:
    """One family's rows: raw beside conditional (Holm over the non-withheld cells), wide and placebo;
    a mode not sustained in the band is so here too, without numbers."""
    ns = [m for m in modes if m in raw and str(raw[m]["verdict"]).startswith(stats.NOT_SUSTAINED)]
    modes = [m for m in modes if m in raw and m not in ns]
    kept = [m for m in modes if not reasons[m]["withheld"]]
    fc, fw, fp = _fam(hists, CONDITIONAL, kept, reference, an), _fam(hists, WIDE, kept, reference, an), \
        _fam(hists, PLACEBO, modes, reference, an)
    rows = []
    for m in modes:
        r = raw[m]
        row = dict(size=size, mode=m, percentile=PERCENTILE, blocks=r.get("blocks"),
                   raw_overhead_pct=r.get("overhead_pct"), raw_overhead_lo=r.get("overhead_lo"),
                   raw_overhead_hi=r.get("overhead_hi"), raw_se=r.get("se"), raw_mde_pct=r.get("mde_pct"),
                   raw_verdict=r["verdict"], **reasons[m])
        if fp is not None:
            j = modes.index(m)
            row.update(placebo_overhead_pct=100 * np.expm1(fp["mean"][j]), placebo_verdict=verdict_of(fp, j, reference))
            row["placebo_same"] = row["placebo_verdict"] == r["verdict"]
        if m in kept and fc is not None:
            i = kept.index(m)
            row.update(blocks=int(fc["n"][i]), overhead_pct=100 * np.expm1(fc["mean"][i]),
                       overhead_lo=100 * np.expm1(fc["lo"][i]), overhead_hi=100 * np.expm1(fc["hi"][i]),
                       log_ratio=fc["mean"][i], se=fc["se"][i], mde_pct=100 * np.expm1(fc["mde"][i]),
                       p=fc["p"][i], p_holm=fc["p_holm"][i], p_tost=fc["p_tost"][i],
                       p_tost_holm=fc["p_tost_holm"][i], verdict=verdict_of(fc, i, reference),
                       se_ratio=fc["se"][i] / r["se"] if pd.notna(r.get("se")) and r["se"] > 0 else np.nan)
            if fw is not None:
                row.update(wide_overhead_pct=100 * np.expm1(fw["mean"][i]), wide_verdict=verdict_of(fw, i, reference))
        else:
            row["verdict"] = f"withheld: {row['withheld']}" if row["withheld"] else "not recorded"
        rows.append(row)
    return rows + [dict(size=size, mode=m, percentile=PERCENTILE, blocks=0, raw_verdict=raw[m]["verdict"],
                        verdict=stats.NOT_SUSTAINED, withheld="") for m in ns]


def by_load(ds: Dataset, an: stats.Analysis, reference: str = REFERENCE) -> pd.DataFrame:
    """Per size x band load x arm, descriptive: the pooled raw and outside-steal p99 of its ok runs,
    their ratios to the reference's, and the mean left-out share (the band rows carry the tests)."""
    if not ds.variants.get(CONDITIONAL):
        return pd.DataFrame(columns=LOAD_COLS)
    att = band_attempts(ds, an.band)
    ok = att[att["state"] == "ok"]
    rows = []
    for (size, rate), g in ok.groupby(["size", "target_rate"], sort=False):
        q = {m: [pooled_quantiles([src[r] for r in c["run_id"] if r in src], [PERCENTILE])[0]
                 for src in (ds.hist, ds.variants[CONDITIONAL])] for m, c in g.groupby("mode")}
        ref = q.get(reference, [np.nan, np.nan])
        for m, c in g.groupby("mode"):
            rows.append(dict(size=size, target_rate=float(rate), load_fraction=float(c["load_fraction"].median()),
                             mode=m, runs=len(c), raw_p99_us=q[m][0], outside_steal_p99_us=q[m][1],
                             raw_ratio=q[m][0] / ref[0], outside_steal_ratio=q[m][1] / ref[1],
                             left_out_pct=100 * float(c[share_col(CONDITIONAL)].mean())))
    return stats.sort_rows(pd.DataFrame(rows, columns=LOAD_COLS))


def summarize(table: pd.DataFrame, recorded: bool = True) -> dict:
    """The study-level figures: the median SE ratio, the demotion, the placebo's flag."""
    modes = table[~table["mode"].map(stats.is_twin)] if len(table) else table
    kept = modes[modes["withheld"].fillna("").eq("")] if len(modes) else modes
    ratios = kept["se_ratio"].dropna().to_numpy(float) if len(kept) else np.array([])
    med = float(np.median(ratios)) if len(ratios) else np.nan
    changed = table[table["placebo_same"].eq(False)] if len(table) else table
    twin = table[table["mode"].map(stats.is_twin)] if len(table) else table
    mde = kept["mde_pct"].dropna() if "mde_pct" in kept else pd.Series(dtype=float)
    return {"recorded": bool(recorded), "percentile": PERCENTILE, "cells": int(len(modes)),
            "mde_min_pct": float(mde.min()) if len(mde) else np.nan,
            "mde_max_pct": float(mde.max()) if len(mde) else np.nan, "twin_cells": int(len(twin)),
            "verdicts": _tally(kept["verdict"]) if len(kept) else {},
            "twin_false": int(twin["verdict"].astype(str).str.match(r"(slower|faster)").sum()) if len(twin) else 0,
            "withheld": int(len(modes) - len(kept)), "se_ratio_median": med, "se_ratio_limit": SE_RATIO_LIMIT,
            "demoted": bool(med > SE_RATIO_LIMIT) if med == med else False,
            "placebo_changed": [f"{r['mode']} {r['size']}" for _, r in changed.iterrows()],
            "share_margin_pp": 100 * SHARE_MARGIN}


def _tally(verdicts: pd.Series) -> dict:
    v = verdicts.astype(str)
    kinds = {k: int(v.str.startswith(k).sum()) for k in ("slower", "faster", "equivalent")}
    kinds["without a verdict"] = int(len(v) - sum(kinds.values()))  # inconclusive, too few pairs, not sustained
    return {k: n for k, n in kinds.items() if n}


def summary_text(s: dict) -> str:
    """One or two sentences on the conditional figures, for the answer and the report."""
    if not s.get("recorded"):
        return "Tail outside hypervisor steal: not recorded (records made before it)."
    mde = s.get("mde_min_pct", np.nan)
    text = (f"Tail outside hypervisor steal (p{s['percentile']:g}, beside the raw one): {s['withheld']} of "
            f"{s['cells']} cells withheld by their guards"
            + (f"; the others {', '.join(f'{n} {k}' for k, n in s['verdicts'].items())}" if s.get("verdicts") else "")
            + (f" (MDE {pct_text(mde)}–{pct_text(s['mde_max_pct'])})" if mde == mde else "")
            + "; median conditional ÷ raw SE "
            + (f"{s['se_ratio_median']:.2f}" if s["se_ratio_median"] == s["se_ratio_median"] else "— (no cell)"))
    if s["demoted"]:
        text += (f", above {s['se_ratio_limit']:g}: the conditional figures gain too little precision to lead, "
                 "so they stay in the report but leave the headline table")
    text += "."
    if s.get("twin_cells"):
        text += f" A/A twin outside steal: {s['twin_false']} false separation(s) in {s['twin_cells']}."
    if s["placebo_changed"]:
        text += (" Placebo check FAILED: the same masks at random times changed the raw verdict of "
                 + ", ".join(s["placebo_changed"]) + " — distrust the conditional figures.")
    return text


def save(c: Conditional, out_dir) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c.table.to_csv(out / "stats_conditional.csv", index=False)
    c.loads.to_csv(out / "stats_conditional_loads.csv", index=False)
    (out / "stats_conditional.json").write_text(json.dumps(c.summary, indent=1, default=str))


def load(out_dir) -> Conditional | None:
    out = Path(out_dir)
    try:
        c = Conditional(pd.read_csv(out / "stats_conditional.csv"),
                        json.loads((out / "stats_conditional.json").read_text()))
    except (OSError, ValueError):
        return None
    if (out / "stats_conditional_loads.csv").exists():
        c.loads = pd.read_csv(out / "stats_conditional_loads.csv")
    return c

