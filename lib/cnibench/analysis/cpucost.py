"""CPU per request per pinned core, compared with the reference (issue 25). Pure.

  figure     per run, the user, system and softirq seconds of the client's and of the server's
             pinned cores over the measurement window (metrics.window_cpu), divided by the
             requests answered in it (recordparts.py); instructions per request where the
             hypervisor exposes the PMU. Hypervisor steal is not CPU time of the guest, so steal
             cannot inflate it; on the testbed this cost is what the latency differences are made of
  design     the paired block design of the latency figures: per complete block the mean over the
             band's loads of the log figure, the mode's minus the reference's; paired t over the
             blocks (paired.family): interval, TOST at the study's margin, MDE, Holm over the modes
             per size, core and kind; the A/A twin a family of its own
A core with no idle time in the reference's runs (median idle share under BUSY_IDLE_SHARE) is
withheld: on it the ticks split a core that is busy by design (cnib-openloop spins within 1 ms
of each due send, so its core shows ~100 % busy at any rate), and user/system/softirq there are
where the tick found the spinning thread, not what a request cost (MDEs of 60 % to > 1,000 %
in the lab study). The server core stays: it idles between requests.
Records without window_cpu (before issue 25) say "not recorded": their machine-wide figures
(dataset.cpu_per_request) sum every CPU and are plotted, never compared.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import paired, stats
from .conditional import band_attempts, verdict_of
from .dataset import REFERENCE, Dataset
from .recordparts import PINNED, ROLES
from .tables import pct_text

KINDS = ("user", "system", "softirq")
BUSY_IDLE_SHARE = 0.02  # a core idle less than this in the reference's runs is busy by design: withheld
INSTRUCTIONS = "instructions"
COLS = ["size", "mode", "core", "kind", "unit", "blocks", "ref_value", "mode_value", "overhead_pct", "overhead_lo",
        "overhead_hi", "log_ratio", "se", "mde_pct", "p", "p_holm", "p_tost", "p_tost_holm", "verdict"]


def column(role: str, kind: str) -> str:
    return f"instructions_{role}_per_request" if kind == INSTRUCTIONS else f"cpu_{role}_{kind}_us"


def idle_column(role: str) -> str:
    return f"cpu_{role}_idle_share"


def busy_reason(att: pd.DataFrame, role: str, reference: str = REFERENCE) -> str | None:
    """Why a core's CPU figures are withheld (None: they stand): the reference's runs left it no
    idle time, so the core is busy by design (the generator spins) and its split is no cost."""
    col = idle_column(role)
    if col not in att:
        return None
    idle = att.loc[att["mode"] == reference, col].dropna()
    if not len(idle) or idle.median() >= BUSY_IDLE_SHARE:
        return None
    return (f"withheld: the {role} core is busy by design (idle {100 * idle.median():.1f} % of the window in "
            f"{reference}'s runs; the generator spins near each send), so its split is not a cost")


def run_figures(ds: Dataset, band) -> pd.DataFrame:
    """The band's planned runs with their per-request figures (NaN unless of the pinned cores)."""
    att = band_attempts(ds, band)
    cols = [column(r, k) for r in ROLES for k in (*KINDS, INSTRUCTIONS)] + [idle_column(r) for r in ROLES]
    runs = ds.runs
    pinned = runs["cpu_scope"].eq(PINNED) if "cpu_scope" in runs else pd.Series(False, index=runs.index)
    idle = {idle_column(r) for r in ROLES}  # 0 is a value here: a core with no idle time
    have = {c: runs[c].where(pinned & ((runs[c] >= 0) if c in idle else (runs[c] > 0))) for c in cols if c in runs}
    if not have or not len(att):
        return att.assign(**{c: np.nan for c in cols})
    fig = pd.DataFrame({"run_id": runs["run_id"], **have}).drop_duplicates("run_id")
    return att.merge(fig, on="run_id", how="left")


def analyze(ds: Dataset, an: stats.Analysis, reference: str = REFERENCE) -> pd.DataFrame:
    """Per size x mode x core x kind: the mode's figure against the reference's."""
    att = run_figures(ds, an.band)
    rows = []
    for size in stats.sizes_of(att):
        a = att[att["size"] == size]
        for role in ROLES:
            busy = busy_reason(a, role, reference)
            for kind in (*KINDS, INSTRUCTIONS):
                col = column(role, kind)
                if col in a and a[col].notna().any():
                    got = _rows(a, size, role, kind, col, reference, an.margin, an.alpha)
                    rows += [{**r, "verdict": busy} for r in got] if busy else got
    return stats.sort_rows(pd.DataFrame(rows, columns=COLS))


def _rows(a, size, role, kind, col, reference, margin, alpha) -> list[dict]:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        b = stats.Band.of(a, col)
    if reference not in b.modes:
        return []
    others = [m for m in b.modes if m != reference]
    rows = []
    unit = "instructions" if kind == INSTRUCTIONS else "µs"
    ref_value = float(np.exp(b.block_values(reference).mean()))
    for fam in ([m for m in others if not stats.is_twin(m)], [m for m in others if stats.is_twin(m)]):
        fam = [m for m in fam if not b.not_sustained(m)]
        if not fam:
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            f = paired.family(stats.aligned([b.diffs(m, reference) for m in fam]), margin, alpha)
        for i, m in enumerate(fam):
            rows.append(dict(size=size, mode=m, core=role, kind=kind, unit=unit, blocks=int(f["n"][i]),
                             ref_value=ref_value, mode_value=float(np.exp(b.block_values(m).mean())),
                             overhead_pct=100 * np.expm1(f["mean"][i]), overhead_lo=100 * np.expm1(f["lo"][i]),
                             overhead_hi=100 * np.expm1(f["hi"][i]), log_ratio=f["mean"][i], se=f["se"][i],
                             mde_pct=100 * np.expm1(f["mde"][i]), p=f["p"][i], p_holm=f["p_holm"][i],
                             p_tost=f["p_tost"][i], p_tost_holm=f["p_tost_holm"][i],
                             verdict=verdict_of(f, i, reference)))
    return rows


def summary_text(cpu: pd.DataFrame, kind: str = "softirq", testbed: bool | None = True) -> str:
    """One sentence: the verdicts on CPU per request of one kind, per pinned core (on the testbed,
    what the latency differences are made of)."""
    if cpu is None or cpu.empty:
        return "CPU per request per pinned core: not recorded (records made before it)."
    g = cpu[(cpu["kind"] == kind) & ~cpu["mode"].map(stats.is_twin)]
    parts = []
    for core in ROLES:
        v = g.loc[g["core"] == core, "verdict"].astype(str)
        counts = {w: int(v.str.startswith(w).sum()) for w in ("slower", "faster", "equivalent")}
        rest = len(v) - sum(counts.values())
        counts = {("more CPU" if w == "slower" else "less CPU" if w == "faster" else w): k for w, k in counts.items()}
        text = ", ".join(f"{k} {w}" for w, k in counts.items() if k) or "no verdict"
        busy = v[v.str.startswith("withheld")]
        if len(busy) == len(v) and len(v):
            parts.append(f"{core} core withheld ({busy.iloc[0].split(': ', 1)[1]})")
            continue
        mde = g.loc[g["core"] == core, "mde_pct"].dropna()
        span = f" (MDE {mde.min():.1f}–{pct_text(mde.max()) if mde.max() >= 100 else f'{mde.max():.1f} %'})" \
            if len(mde) else ""
        parts.append(f"{core} core {text}" + (f", {rest} other" if rest else "") + f" of {len(v)}{span}")
    return (f"CPU {kind} per request against {REFERENCE} (pinned cores, steal not included): " + "; ".join(parts)
            + "." + (" On the testbed this CPU cost is what the latency differences are made of." if testbed else ""))


def save(cpu: pd.DataFrame, out_dir) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cpu.to_csv(out / "stats_cpu.csv", index=False)
    (out / "stats_cpu.json").write_text(json.dumps({"kinds": list(KINDS), "cores": list(ROLES)}))


def load(out_dir) -> pd.DataFrame | None:
    try:
        return pd.read_csv(Path(out_dir) / "stats_cpu.csv")
    except (OSError, ValueError):
        return None
