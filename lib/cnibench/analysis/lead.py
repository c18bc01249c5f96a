"""The report's answer first (issue 23): one sentence of what the study can and cannot say, the
warning when the machine was too disturbed to answer, and cells that never print nan.

`headline_sentence(ds, an)` is the first paragraph of the report and the last line of `run-all`.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

from . import conditional, cpucost, provenance, stats
from .dataset import REFERENCE, Dataset
from .tables import WIDEST_PCT, pct_text

DISTURBED_SHARE = 0.20  # above this share of disturbed records the machine was too disturbed
STEAL_LEVEL = 0.02  # ... or above this median steal on the pinned cores (the steal guard's limit)
ANSWER_PERCENTILES = (50.0, 99.0)


def disturbance(ds: Dataset) -> dict:
    """Share of the records the noise guards invalidated, and the median / highest steal."""
    runs = ds.runs
    n = len(runs)
    dist = int(runs["disturbed"].fillna(False).astype(bool).sum()) if n and "disturbed" in runs else 0
    steal = runs["steal"].dropna().to_numpy(float) if "steal" in runs else np.array([])
    return {"records": n, "disturbed": dist, "share": dist / n if n else 0.0,
            "steal_median": float(np.median(steal)) if len(steal) else np.nan,
            "steal_max": float(steal.max()) if len(steal) else np.nan, "cause": main_cause(runs)}


def main_cause(runs: pd.DataFrame) -> str | None:
    """The noise guard named most often in the disturbed runs' reasons ("foreign CPU on the
    generator's core" from "invalid: foreign CPU on the generator's core 5.3% (limit 5.0%)")."""
    if not len(runs) or "disturbed" not in runs or "reason" not in runs:
        return None
    reasons = runs.loc[runs["disturbed"].fillna(False).astype(bool), "reason"].dropna().astype(str)
    causes = [re.split(r"\s[\d(]", part.strip().split(": ", 1)[-1], maxsplit=1)[0]
              for r in reasons for part in r.split(";") if part.strip().startswith(("invalid", "disturbed"))]
    return Counter(causes).most_common(1)[0][0] if causes else None


def too_disturbed(d: dict) -> bool:
    return d["share"] > DISTURBED_SHARE or (pd.notna(d["steal_median"]) and d["steal_median"] > STEAL_LEVEL)


def _count(h: pd.DataFrame, p: float) -> str:
    g = h[h["percentile"] == p]
    if g.empty:
        return f"p{p:g}: nothing to compare"
    v = g["verdict"].astype(str)
    kinds = {"slower": v.str.startswith("slower").sum(), "faster": v.str.startswith("faster").sum(),
             "equivalent": v.str.startswith("equivalent").sum(),
             "inconclusive": v.eq("inconclusive").sum(),
             "too few pairs": v.str.startswith("cannot separate").sum() + v.eq(stats.NO_BLOCK).sum(),
             "not sustained": v.eq(stats.NOT_SUSTAINED).sum()}
    parts = ", ".join(f"{int(k)} {name}" for name, k in kinds.items() if k)
    mde = g["mde_pct"].dropna() if "mde_pct" in g else pd.Series(dtype=float)
    span = f" (MDE {pct_text(mde.min())}–{pct_text(mde.max())})" if len(mde) else ""
    return f"p{p:g}: {parts}{span}"


def _can(h: pd.DataFrame, cells: int) -> str:
    """Where the study answers: the percentiles at which most cells got a verdict, and not."""
    said = {p: int(h[(h["percentile"] == p)]["verdict"].astype(str).str.match(r"(slower|faster|equivalent)").sum())
            for p in ANSWER_PERCENTILES} if len(h) else {}
    yes = [f"p{p:g} ({k} of {cells} cells)" for p, k in said.items() if cells and k > cells / 2]
    no = [f"p{p:g} ({k} of {cells})" for p, k in said.items() if not cells or k <= cells / 2]
    return (f"It can answer at {', '.join(yes)}" if yes else "It can answer at no percentile") + \
        (f"; it cannot at {', '.join(no)}." if no else ".")


def headline_sentence(ds: Dataset, an: stats.Analysis, reference: str = REFERENCE, cond=None, cpu=None) -> str:
    """What the study can and cannot say, in one paragraph (plain text); with the conditional
    figures (conditional.Conditional) and CPU per request (cpucost.analyze) when given."""
    h = an.headline
    modes = h[~h["mode"].map(stats.is_twin)] if len(h) else h
    twin = h[h["mode"].map(stats.is_twin)] if len(h) else h
    lo, hi = an.band
    cells = modes[["size", "mode"]].drop_duplicates() if len(modes) else modes
    text = (f"Study {ds.study}, {lo:.0%}–{hi:.0%} of max load, {len(cells)} mode × size cells against "
            f"{reference}, {an.design.get('estimator', 'block-t')} estimator: "
            + "; ".join(_count(modes, p) for p in ANSWER_PERCENTILES) + ".")
    text += " " + _can(modes, len(cells))
    if len(twin):
        false = twin[twin["verdict"].astype(str).str.match(r"(slower|faster)")]
        text += (f" A/A twin: {len(false)} false separation(s) in {len(twin)} comparisons"
                 + (" — the study's own check failed, distrust its separations." if len(false) else "."))
    if cond is not None:
        text += " " + conditional.summary_text(cond.summary)
    if cpu is not None:
        text += " " + cpucost.summary_text(cpu, testbed=provenance.is_testbed(ds.manifest) is True)
    d = disturbance(ds)
    if too_disturbed(d):  # said first: every figure after it is read in its light
        cause = f", most often by {d['cause']}" if d.get("cause") else ""
        text = (f"The machine was too disturbed to answer: {d['disturbed']} of {d['records']} runs "
                f"({d['share']:.0%}) were invalidated by the noise guards{cause}; median steal "
                f"{d['steal_median']:.1%} (highest {d['steal_max']:.1%}) against a limit of "
                f"{DISTURBED_SHARE:.0%} disturbed runs or {STEAL_LEVEL:.0%} steal. Run it again on a "
                "quieter machine, on real hosts, or with a longer budget (more repetitions). " + text)
    return text


def interval_text(r) -> str:
    """An overhead with its 95 % interval; "—" with the reason when it cannot be estimated."""
    n = int(r["blocks"]) if pd.notna(r.get("blocks")) else 0
    if pd.isna(r.get("overhead_pct")):
        return str(r.get("verdict") or "—")
    if n < 6:  # 1 / 2^n > alpha / 2: no swap test over so few pairs bounds a 95 % interval
        return f"—: {n} pairs"
    lo, hi, est = r.get("overhead_lo"), r.get("overhead_hi"), r["overhead_pct"]
    if pd.isna(lo) or pd.isna(hi) or abs(lo) > WIDEST_PCT or abs(hi) > WIDEST_PCT:
        return f"{_signed(est)} [—: wider than ±{WIDEST_PCT:,.0f} %]"
    return f"{_signed(est)} [{lo:+.1f}, {hi:+.1f}]"


def _signed(v: float) -> str:
    return f"> +{WIDEST_PCT:,.0f} %" if v > WIDEST_PCT else f"{v:+.1f} %"


def mde_text(v) -> str:
    return "—" if pd.isna(v) else pct_text(float(v))


def effect_text(r, verdict: bool = True) -> str:
    """A paired-t figure (CPU per request) with its interval (and short verdict)."""
    if pd.isna(r.get("overhead_pct")):
        return str(r.get("verdict") or "—")
    v = str(r["verdict"])
    short = v.split()[0] if v.startswith(("slower", "faster", "equivalent")) else v
    lo, hi = r.get("overhead_lo"), r.get("overhead_hi")
    span = f" [{lo:+.1f}, {hi:+.1f}]" if pd.notna(lo) and pd.notna(hi) and max(abs(lo), abs(hi)) <= WIDEST_PCT else ""
    return f"{_signed(r['overhead_pct'])}{span}" + (f" {short}" if verdict else "")


def with_conditional_and_cpu(table: pd.DataFrame, cond=None, cpu=None, kind: str = "softirq") -> pd.DataFrame:
    """The headline table (report.headline_table) with, after the raw p99, the p99 outside
    hypervisor steal (unless the 0.7 rule demoted it) and CPU `kind` per request per pinned core."""
    if table.empty:
        return table
    out = table.copy()
    key = list(zip(out["size"], out["mode"]))
    at = (list(out.columns).index("p99 verdict") + 1) if "p99 verdict" in out else len(out.columns)
    new: dict[str, list] = {}
    if cond is not None and not cond.summary.get("demoted"):
        c = {(r["size"], r["mode"]): r for _, r in cond.table.iterrows()}
        rec = cond.summary.get("recorded")
        new["p99 outside steal overhead"] = [interval_text(c[k]) if k in c else "" for k in key]
        new["p99 outside steal MDE"] = [mde_text(c[k].get("mde_pct")) if k in c else "" for k in key]
        new["p99 outside steal verdict"] = [c[k]["verdict"] if k in c else
                                            ("" if rec else "not recorded") for k in key]
    if cpu is not None:
        for core in ("client", "server"):
            g = cpu[(cpu["kind"] == kind) & (cpu["core"] == core)] if len(cpu) else cpu
            c = {(r["size"], r["mode"]): r for _, r in g.iterrows()}
            new[f"CPU {kind}/request {core} core"] = [effect_text(c[k]) if k in c else "not recorded" for k in key]
    for i, (name, values) in enumerate(new.items()):
        out.insert(at + i, name, values)
    return out
