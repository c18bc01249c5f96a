"""The report's sections for issue 25's figures: the tail outside hypervisor steal beside the raw
one, with its guards, and CPU per request per pinned core (conditional.py, cpucost.py)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from . import conditional, cpucost, lead, provenance
from .dataset import REFERENCE
from .tables import to_html


def _esc(s) -> str:
    return html.escape(str(s))


def _raw(r) -> dict:
    return {"blocks": r.get("blocks"), "overhead_pct": r.get("raw_overhead_pct"),
            "overhead_lo": r.get("raw_overhead_lo"), "overhead_hi": r.get("raw_overhead_hi"),
            "verdict": r.get("raw_verdict")}


def _pct(v) -> str:
    return "" if pd.isna(v) else f"{v:.2f} %"


def conditional_table(cond) -> pd.DataFrame:
    """Per size x mode: raw p99 beside p99 outside steal, the guards' figures, wide and placebo."""
    if cond is None or cond.table.empty:
        return pd.DataFrame()
    rows = []
    for _, r in cond.table.iterrows():
        rows.append({"size": r["size"], "mode": r["mode"], "raw p99 overhead": lead.interval_text(_raw(r)),
                     "raw MDE": lead.mde_text(r.get("raw_mde_pct")), "raw verdict": r["raw_verdict"],
                     "outside steal overhead": lead.interval_text(r) if pd.notna(r.get("overhead_pct")) else "—",
                     "outside steal MDE": lead.mde_text(r.get("mde_pct")), "outside steal verdict": r["verdict"],
                     f"left out ({REFERENCE})": _pct(r.get("share_ref_pct")),
                     "left out (mode)": _pct(r.get("share_mode_pct")),
                     "SE ratio": "" if pd.isna(r.get("se_ratio")) else f"{r['se_ratio']:.2f}",
                     "2× L, D verdict": r.get("wide_verdict") if isinstance(r.get("wide_verdict"), str) else "",
                     "placebo verdict": r.get("placebo_verdict") if isinstance(r.get("placebo_verdict"), str) else "",
                     "placebo = raw": {True: "yes", False: "NO"}.get(_bool(r.get("placebo_same")), "")})
    return pd.DataFrame(rows)


def _bool(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    return {"True": True, "False": False}.get(str(v))


def headline_note(head: pd.DataFrame) -> str:
    """What the headline's issue-25 columns are, when it has them."""
    cols = set(head.columns)
    said = []
    if "p99 outside steal overhead" in cols:
        said.append("“p99 outside steal”: the same estimator on the requests no hypervisor-steal episode of either "
                    "pinned core touched, beside the raw p99 (its guards: below)")
    if any(c.startswith("CPU ") for c in cols):
        said.append("“CPU softirq/request”: softirq CPU per answered request on each pinned core, paired t over "
                    "blocks (below)")
    return f"<p>{_esc('; '.join(said))}.</p>" if said else ""


def conditional_section(cond) -> list[str]:
    parts = ["<h2 id='outside-steal'>The tail outside hypervisor steal, beside the raw one</h2>"]
    if cond is None or not cond.summary.get("recorded"):
        return parts + ["<p>Not recorded: these records have no histogram outside hypervisor steal "
                        "(made before issue 25).</p>"]
    s = cond.summary
    parts.append(
        f"<p>{_esc(conditional.summary_text(s))}</p><p>A request is left out when its intended time lies "
        "in a steal episode of either pinned core, widened by L before and D(S) after (docs/method.md); the "
        "same estimator as the raw figure over the same blocks. Guards: a cell's conditional verdict is "
        f"withheld when its left-out share is not shown within ±{s['share_margin_pp']:g} percentage point of "
        f"{REFERENCE}'s (paired TOST over blocks) or a record withheld it; the placebo (the same episodes at "
        "random times) must leave the raw verdict unchanged; the 2× L, D column is the sensitivity check. "
        "Never read the conditional figure alone: what it leaves out is the hypervisor's share of the tail, "
        "which a user on the same kind of machine also sees.</p>")
    if s.get("demoted"):
        parts.append(f"<p class='caveat'>Median conditional ÷ raw SE {s['se_ratio_median']:.2f} &gt; "
                     f"{s['se_ratio_limit']:g}: the conditional figures are shown here only and left out of the "
                     "headline table.</p>")
    if s.get("placebo_changed"):
        parts.append(f"<p class='caveat'>Placebo check failed in: {_esc(', '.join(s['placebo_changed']))}.</p>")
    parts.append(to_html(conditional_table(cond), table_id="outside-steal-table"))
    if len(cond.loads):
        parts.append("<details><summary>Per load (descriptive: pooled p99 of the ok runs and its ratio to "
                     f"{REFERENCE}'s, mean left-out share; the tests are the band's, above) — "
                     f"{len(cond.loads)} rows</summary>"
                     f"{to_html(cond.loads)}</details>")
    return parts


def cpu_table(cpu) -> pd.DataFrame:
    if cpu is None or cpu.empty:
        return pd.DataFrame()
    rows = [{"size": r["size"], "mode": r["mode"], "core": r["core"], "kind": r["kind"],
             f"{REFERENCE} per request": f"{r['ref_value']:.3g} {r['unit']}",
             "mode per request": f"{r['mode_value']:.3g} {r['unit']}", "difference": lead.effect_text(r, False),
             "MDE": _mde(r.get("mde_pct")), "blocks": int(r["blocks"]), "verdict": r["verdict"]}
            for _, r in cpu.iterrows()]
    return pd.DataFrame(rows)


def _mde(v) -> str:
    """A CPU figure's MDE: one decimal below 100 % (acceptance quotes it against 15 %)."""
    return lead.mde_text(v) if pd.isna(v) or v >= 100 else f"{v:.1f} %"


def cpu_section(cpu, ds) -> list[str]:
    parts = ["<h2 id='cpu-per-request'>CPU per request per pinned core</h2>"]
    if cpu is None or cpu.empty:
        return parts + ["<p>Not recorded: these records have no per-core CPU counters over the measurement "
                        "window (made before issue 25); the CPU figures below sum every CPU of the machine "
                        "and are not compared.</p>"]
    testbed = " On the testbed this CPU cost is what the latency differences are made of: both hosts share " \
        "one machine, so a mode's latency is its per-packet CPU work." if provenance.is_testbed(ds.manifest) else ""
    parts.append(
        f"<p>{_esc(cpucost.summary_text(cpu, testbed=False))}{_esc(testbed)} User, system and "
        "softirq seconds of the client's and of the server's pinned cores over the measurement window, divided "
        f"by the requests answered in it; hypervisor steal is not CPU time of the guest, so it cannot inflate "
        f"this figure. Compared with {REFERENCE} by the paired block design (paired t on the per-block log "
        "ratios, Holm over the modes per size, core and kind; equivalence by TOST at the study's margin).</p>")
    return parts + [to_html(cpu_table(cpu), table_id="cpu-table")]


def redo_table(ds) -> pd.DataFrame:
    """Per arm and size: runs used, those from a redone repetition (its chosen attempt > 1), and
    those still disturbed (no undisturbed attempt within the budget)."""
    r = ds.runs
    if r.empty:
        return pd.DataFrame(columns=["arm", "size", "runs", "from_redone_repetitions", "still_disturbed"])
    attempt = r["attempt"] if "attempt" in r else pd.Series(1, index=r.index)
    g = r.assign(redone=attempt > 1).groupby(["arm", "size"], sort=False)
    return pd.DataFrame({"runs": g.size(), "from_redone_repetitions": g["redone"].sum(),
                         "still_disturbed": g["disturbed"].sum()}).reset_index()


def redo_section(ds) -> list[str]:
    """Redo counts by arm (issue 25): a disturbed repetition is redone whole, never one run."""
    t = redo_table(ds)
    if t.empty:
        return []
    n = int(t["from_redone_repetitions"].sum())
    return ["<h2 id='redo'>Redone repetitions</h2>",
            f"<p>{n} of {int(t['runs'].sum())} runs used come from a redone repetition: a repetition with a "
            "disturbed run is redone as a whole (every arm, fresh order) while the budget lasts, and the "
            "analysis uses its first undisturbed attempt, else its first. A single run is never redone.</p>",
            to_html(t)]
