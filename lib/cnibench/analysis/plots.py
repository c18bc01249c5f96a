"""Publication figures in one house style. Each mode has one colour, marker and place everywhere.

Colours are Okabe-Ito (distinguishable with the common colour-vision deficiencies); every line
also has its own marker, so figures survive greyscale printing.
Each figure function takes a Dataset and/or Analysis and returns a matplotlib Figure; `save`
writes it as PDF, SVG and 300-dpi PNG; `make_all` draws the whole set for a study.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from . import stats
from .dataset import MODES, REFERENCE, Dataset, order_modes
from .recordparts import PINNED

# Okabe-Ito's eight, then Tol's wine for the ninth mode (ebpf-redirect).
OKABE_ITO = ["#000000", "#D55E00", "#0072B2", "#56B4E9", "#009E73", "#CC79A7", "#E69F00", "#B8A000", "#882255"]
COLOURS = dict(zip(MODES, OKABE_ITO))  # host black; vxlan vermillion; ... (yellow darkened for white)
MARKERS = dict(zip(MODES, ["o", "s", "^", "v", "D", "P", "X", "*", "h"]))
FORMATS = ("pdf", "svg", "png")
DPI = 300
# The study's x axis: percentile on a scale that spreads the tail (-log10 of the exceedance).
TAIL_TICKS = (90, 99, 99.9, 99.99, 99.999)
CPU_KINDS = ("user", "system", "softirq")


def style() -> None:
    """The house style: paper context, white background, light grid, readable sizes."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.15,
                  rc={"axes.spines.top": False, "axes.spines.right": False, "grid.color": "#e5e5e5",
                      "legend.frameon": False, "figure.dpi": 100, "savefig.bbox": "tight",
                      "svg.fonttype": "none", "pdf.fonttype": 42})


TWIN_COLOUR = "#7A5195"  # the reference's A/A twin: its own colour, never a mode's


def colour(mode: str) -> str:
    """A mode's fixed colour; the twin's own; any other arm a colour of its own from an endless
    hue wheel (stable across runs: crc32, not Python's salted hash), never a silent grey."""
    if mode in COLOURS:
        return COLOURS[mode]
    if stats.is_twin(mode):
        return TWIN_COLOUR
    import colorsys
    import zlib
    h = (zlib.crc32(mode.encode()) % 360) / 360.0
    r, g, b = colorsys.hls_to_rgb(h, 0.42, 0.75)
    return "#{:02X}{:02X}{:02X}".format(int(r * 255), int(g * 255), int(b * 255))


def marker(mode: str) -> str:
    return MARKERS.get(mode, "d" if stats.is_twin(mode) else "o")


def tail_x(p):
    """Percentile -> position on the tail-spreading axis."""
    return -np.log10(1 - np.asarray(p, float) / 100.0)


def tail_percentiles(lo: float = 85.0, hi: float = 99.999, n: int = 80) -> np.ndarray:
    return 100 - 100 * np.power(10.0, -np.linspace(tail_x(lo), tail_x(hi), n))


def _tail_axis(ax, lo=85.0, hi=99.999):
    ticks = [t for t in TAIL_TICKS if lo - 1e-9 <= t <= hi + 1e-9]
    ax.set_xticks(tail_x(ticks))
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlim(tail_x(lo), tail_x(hi))


def _plain_log(ax):
    """Log scale with plain numbers (0.5, 1, 2), not 5x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
    ax.yaxis.set_minor_formatter(fmt)


def _legend(fig, modes, **kw):
    handles = [plt.Line2D([], [], color=colour(m), marker=marker(m), label=m) for m in modes]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(modes), 4),
               bbox_to_anchor=(0.5, -0.02), **kw)


def _rate_label(rate: float) -> str:
    return f"{rate / 1000:g}k rps"


def latency_by_percentile(ds: Dataset, size: str, rates=None, modes=None, p_range=(85.0, 99.999)):
    """The study's figure: latency against percentile, a panel per load, one line per mode."""
    style()
    v = ds.valid[ds.valid["size"] == size]
    rates = sorted(v["target_rate"].unique()) if rates is None else list(rates)
    modes = order_modes(v["mode"].unique()) if modes is None else order_modes(modes)
    ncol = min(4, max(1, len(rates)))
    nrow = int(np.ceil(len(rates) / ncol)) or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow + 0.6), squeeze=False, sharey=True)
    ps = tail_percentiles(*p_range)
    lf = v.groupby("target_rate")["load_fraction"].median()
    for ax, rate in zip(axes.flat, rates):
        for mode in modes:
            y = stats.percentile_curve(ds, size, rate, mode, ps) / 1000.0
            if np.all(np.isnan(y)):
                continue
            ax.plot(tail_x(ps), y, color=colour(mode), lw=1.4)
            ends = [0, len(ps) - 1]  # a marker at each end identifies the line without clutter
            ax.plot(tail_x(ps)[ends], y[ends], ls="", marker=marker(mode), color=colour(mode), ms=4)
        frac = lf.get(rate, np.nan)
        ax.set_title(_rate_label(rate) + (f" ({frac:.0%} of max)" if np.isfinite(frac) else ""))
        _tail_axis(ax, *p_range)
        _plain_log(ax)
    for ax in axes.flat[len(rates):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("latency (ms)")
    for ax in axes[-1, :]:
        ax.set_xlabel("percentile")
    fig.suptitle(f"Latency by percentile — {size} responses", y=1.0)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _legend(fig, modes)
    return fig


def latency_vs_load(an: stats.Analysis, ds: Dataset | None = None, percentiles=(50.0, 99.0, 99.9), modes=None):
    """p50/p99/p99.9 against load with 95 % CI bands; a column per size, a row per percentile."""
    style()
    q = an.quantiles
    sizes = [s for s in ("small", "large") if s in set(q["size"])] + sorted(set(q["size"]) - {"small", "large"})
    modes = order_modes(q["mode"].unique()) if modes is None else order_modes(modes)
    fig, axes = plt.subplots(len(percentiles), len(sizes), figsize=(4.6 * len(sizes), 2.6 * len(percentiles) + 0.8),
                             squeeze=False)
    for c, size in enumerate(sizes):
        qs = q[q["size"] == size]
        for r, p in enumerate(percentiles):
            ax = axes[r, c]
            for mode in modes:
                d = qs[(qs["mode"] == mode) & (qs["percentile"] == p)].sort_values("target_rate")
                if d.empty:
                    continue
                x = d["target_rate"] / 1000
                ax.plot(x, d["estimate"] / 1000, color=colour(mode), marker=marker(mode), ms=4, lw=1.3)
                ax.fill_between(x, d["lo"] / 1000, d["hi"] / 1000, color=colour(mode), alpha=0.18, lw=0)
            _plain_log(ax)
            ax.set_ylabel(f"p{p:g} (ms)")
            _band_shade(ax, qs)
            if r == len(percentiles) - 1:
                ax.set_xlabel("request rate (k rps)")
            if r == 0:
                ax.set_title(f"{size} responses")
                _percent_axis(ax, qs)
    fig.suptitle("Latency of a typical run against load (95 % CI over repetitions; shaded: 30–50 % of max)", y=1.0)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _legend(fig, modes)
    return fig


def _max_rate_of(qs) -> float | None:
    """Host's calibrated max at this size, recovered from target rate / load fraction."""
    d = qs.dropna(subset=["load_fraction"])
    d = d[d["load_fraction"] > 0]
    if d.empty:
        return None
    return float(np.median(d["target_rate"] / d["load_fraction"]))


def _band_shade(ax, qs):
    mx = _max_rate_of(qs)
    if mx:
        ax.axvspan(stats.BAND[0] * mx / 1000, stats.BAND[1] * mx / 1000, color="#f0f0f0", zorder=0)


def _percent_axis(ax, qs):
    mx = _max_rate_of(qs)
    if mx:
        sec = ax.secondary_xaxis("top", functions=(lambda x: x * 1000 / mx * 100, lambda y: y * mx / 100 / 1000))
        sec.set_xlabel("% of host's max rate")


def overhead_forest(an: stats.Analysis):
    """Overhead vs host over the 30–50 % band: ratio with 95 % CI per mode, p50 to p99.9."""
    style()
    h = an.headline
    sizes = [s for s in ("small", "large") if s in set(h["size"])] + sorted(set(h["size"]) - {"small", "large"})
    sizes = sizes or ["(no data)"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.8 * len(sizes), 3.6), squeeze=False, sharey=True)
    modes = [m for m in order_modes(h["mode"].unique())] if not h.empty else []
    offsets = {50.0: -0.27, 90.0: -0.09, 99.0: 0.09, 99.9: 0.27}
    styles = {50.0: dict(marker="^", mfc="white"), 90.0: dict(marker="v", mfc="white"),
              99.0: dict(marker="o", mfc=None), 99.9: dict(marker="s", mfc="white")}
    for ax, size in zip(axes[0], sizes):
        hs = h[h["size"] == size]
        for i, mode in enumerate(modes):
            for p, off in offsets.items():
                row = hs[(hs["mode"] == mode) & (hs["percentile"] == p)]
                if row.empty or pd.isna(row.iloc[0]["overhead_pct"]):
                    continue  # not sustained or no comparison: nothing to draw
                row = row.iloc[0]
                r, lo, hi = (1 + row[k] / 100 for k in ("overhead_pct", "overhead_lo", "overhead_hi"))
                lo, hi = (r if pd.isna(lo) else lo), (r if pd.isna(hi) else hi)  # "—": no bound to draw
                ax.errorbar([r], [i + off], xerr=[[r - lo], [hi - r]], color=colour(mode), capsize=2.5,
                            marker=styles[p]["marker"], mfc=styles[p]["mfc"] or colour(mode), ms=5, lw=1.3)
        ax.axvline(1.0, color="#555555", lw=0.9, ls="--")
        ax.set_yticks(range(len(modes)))
        ax.set_yticklabels(modes)
        ax.set_ylim(len(modes) - 0.5, -0.5)  # first mode on top (shared axis: set, not toggle)
        ax.set_xlabel(f"latency ratio to {REFERENCE} (95 % CI)")
        ax.set_title(f"{size} responses")
    handles = [plt.Line2D([], [], color="#333333", marker=st["marker"], mfc=st["mfc"] or "#333333", ls="",
                          label=f"p{p:g}") for p, st in styles.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.02))
    lo, hi = an.band
    fig.suptitle(f"Overhead versus {REFERENCE} at {lo:.0%}–{hi:.0%} of max load", y=1.0)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def max_rates(ds: Dataset) -> tuple[dict, dict]:
    """({size: {mode: rps}}, {size: {mode: "calibrated"}}): measured maxima only. The highest rate
    tested is not a maximum (it read as one: 20k for every mode), so it is not drawn."""
    rates: dict = {}
    sources: dict = {}
    for mode, by_size in (ds.calibration or {}).items():
        for size, cal in by_size.items():
            if cal.get("max_rate"):
                rates.setdefault(size, {})[mode] = float(cal["max_rate"])
                sources.setdefault(size, {})[mode] = "calibrated"
    return rates, sources


def max_rate(ds: Dataset):
    """Maximum sustainable rate per mode, a panel per size."""
    style()
    rates, sources = max_rates(ds)
    sizes = [s for s in ("small", "large") if s in rates] + sorted(set(rates) - {"small", "large"}) or ["(no data)"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes), 3.4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        by_mode = rates.get(size, {})
        modes = order_modes(by_mode)
        vals = [by_mode[m] / 1000 for m in modes]
        hatches = ["" if sources[size][m] == "calibrated" else "//" for m in modes]
        bars = ax.barh(range(len(modes)), vals, color=[colour(m) for m in modes], edgecolor="white")
        for bar, h in zip(bars, hatches):
            bar.set_hatch(h)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:,.0f}k", va="center", fontsize=8)
        ax.set_yticks(range(len(modes)))
        ax.set_yticklabels(modes)
        ax.invert_yaxis()
        ax.set_xlabel("requests per second (thousands)")
        ax.set_title(f"{size} responses")
        ax.set_xlim(0, max(vals + [1]) * 1.18)
    fig.suptitle("Maximum sustainable rate (calibrated: measured maxima only)", y=1.0)
    fig.tight_layout()
    return fig


def cpu_per_request(ds: Dataset, size: str, modes=None):
    """CPU time per request by kind against load: a row per host role, a column per kind."""
    style()
    v = ds.valid[ds.valid["size"] == size]
    modes = order_modes(v["mode"].unique()) if modes is None else order_modes(modes)
    roles = sorted({c.split("_")[1] for c in v.columns if c.startswith("cpu_") and c.endswith("_us")},
                   key=lambda r: {"client": 0, "server": 1}.get(r, 2)) or ["client", "server"]
    fig, axes = plt.subplots(len(roles), len(CPU_KINDS), figsize=(3.4 * len(CPU_KINDS), 2.6 * len(roles) + 0.8),
                             squeeze=False, sharex=True)
    for r, role in enumerate(roles):
        for c, kind in enumerate(CPU_KINDS):
            ax = axes[r, c]
            col = f"cpu_{role}_{kind}_us"
            if col in v:
                med = v.groupby(["mode", "target_rate"])[col].median().dropna()
                for mode in modes:
                    if mode in med.index.get_level_values(0):
                        d = med.loc[mode]
                        ax.plot(d.index / 1000, d.values, color=colour(mode), marker=marker(mode), ms=4, lw=1.3)
            else:
                ax.text(0.5, 0.5, "no metrics", ha="center", va="center", transform=ax.transAxes, color="#888888")
            ax.set_title(f"{role}: {kind}")
            ax.set_ylim(bottom=0)
            if c == 0:
                ax.set_ylabel("CPU µs per request")
            if r == len(roles) - 1:
                ax.set_xlabel("request rate (k rps)")
    pinned = "cpu_scope" in v and v["cpu_scope"].eq(PINNED).all() and len(v)
    scope = "the pinned cores" if pinned else "every CPU of the machine"
    fig.suptitle(f"CPU time per request on {scope} — {size} responses (median of runs)", y=1.0)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _legend(fig, modes)
    return fig


def save(fig, out_dir: Path, name: str, close: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI if fmt == "png" else None, metadata=_metadata(fmt))
        paths[fmt] = path
    if close:
        plt.close(fig)
    return paths


def _metadata(fmt: str) -> dict | None:
    # Fixed metadata keeps regenerated figures byte-stable (no creation dates in the files).
    if fmt == "pdf":
        return {"CreationDate": None, "Creator": "cnibench"}
    if fmt == "svg":
        return {"Date": None, "Creator": "cnibench"}
    return {"Software": "cnibench"}


def make_all(ds: Dataset, an: stats.Analysis, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Every publication figure of a study -> {name: {format: path}}."""
    figs = {}
    for size in ds.sizes():
        if (ds.valid["size"] == size).any():
            figs[f"latency_by_percentile_{size}"] = lambda s=size: latency_by_percentile(ds, s)
    figs["latency_vs_load"] = lambda: latency_vs_load(an, ds)
    figs["overhead_vs_host"] = lambda: overhead_forest(an)
    calibrated = {m for m, by_size in (ds.calibration or {}).items()
                  if any(c.get("max_rate") for c in by_size.values())}
    if calibrated - {REFERENCE}:  # a study that calibrates only the reference has no maxima to compare
        figs["max_rate"] = lambda: max_rate(ds)
    for size in ds.sizes():
        if (ds.valid["size"] == size).any():
            figs[f"cpu_per_request_{size}"] = lambda s=size: cpu_per_request(ds, s)
    return {name: save(draw(), out_dir, name) for name, draw in figs.items()}
