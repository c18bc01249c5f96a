"""How one run record reads: a summary line, a summary table, latency by percentile, timeline.

Used by the runner's per-run line and by notebooks/run.ipynb (the lab-notebook entry of a run).
Plots import matplotlib lazily so the runner does not pay for it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..results import decode_histogram, read_record

# The study plots latency against percentile from 85 to 100 (the "nines" axis).
CURVE_PERCENTILES = (85, 90, 95, 97, 98, 99, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100)


def load(path: Path | str) -> dict:
    rec = read_record(Path(path))
    if rec is None:
        raise FileNotFoundError(f"{path}: no complete run record there (missing, torn or incomplete)")
    return rec


def _us(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v / 1000:.2f} ms" if v >= 10_000 else f"{v:.0f} us"


def summary_line(rec: dict, seconds: float | None = None) -> str:
    """One line per run: id, status, achieved vs target rate, p50/p99/p99.9/max."""
    p = (rec.get("latency") or {}).get("percentiles") or {}
    parts = [f"{rec['run_id']:<48}", f"{rec['status']:<7}"]
    if rec["status"] == "failed":
        parts.append(rec.get("reason") or "")
    else:
        parts.append(f"{rec.get('achieved_rate', 0):>9.0f}/{rec['target_rate']:<9.0f} rps")
        parts.append(f"p50 {_us(p.get('50'))}  p99 {_us(p.get('99'))}  p99.9 {_us(p.get('99.9'))}  max "
                     f"{_us(p.get('100'))}")
        if rec["status"] == "invalid" and rec.get("reason"):
            parts.append(f"({rec['reason']})")
    if seconds is not None:
        parts.append(f"[{seconds:.1f} s]")
    return "  ".join(parts)


def summary_rows(rec: dict) -> list[tuple[str, Any]]:
    s = rec.get("settings") or {}
    c = rec.get("counts") or {}
    rows = [
        ("run", rec["run_id"]), ("status", rec["status"]), ("reason", rec.get("reason") or ""),
        ("mode", rec["mode"]), ("size", rec["size"]), ("repetition", rec["repetition"]),
        ("order in study", rec.get("order")),
        ("target rate (req/s)", rec["target_rate"]),
        ("load fraction", rec.get("load_fraction")),
        ("achieved rate (resp/s)", round(float(rec.get("achieved_rate") or 0), 1)),
        ("requests / ok / errors / timeouts",
         f"{c.get('requests', 0)} / {c.get('ok', 0)} / {c.get('errors', 0)} / {c.get('timeouts', 0)}"),
        ("generator", rec.get("generator")), ("generator CPU", rec.get("generator_cpu")),
        ("duration / warm-up (s)", f"{s.get('duration_s')} / {s.get('warmup_s')}"),
        ("connections", s.get("connections")),
        ("started / ended", f"{rec.get('started_at')} / {rec.get('ended_at')}"),
        ("provenance", rec.get("provenance")),
    ]
    for k, v in ((rec.get("latency") or {}).get("percentiles") or {}).items():
        rows.append((f"latency p{k} (us)" if k != "100" else "latency max (us)", v))
    return rows


def summary_frame(rec: dict):
    import pandas as pd

    return pd.DataFrame(summary_rows(rec), columns=["", "value"]).set_index("")


def percentile_curve(rec: dict, percentiles=CURVE_PERCENTILES) -> list[tuple[float, int]]:
    """[(percentile, latency us)] from the record's (corrected) histogram; [] for a failed run."""
    enc = (rec.get("latency") or {}).get("histogram")
    if not enc:
        return []
    h = decode_histogram(enc)
    if h.get_total_count() == 0:
        return []
    return [(p, int(h.get_max_value() if p >= 100 else h.get_value_at_percentile(p))) for p in percentiles]


def nines(p: float) -> float:
    """Percentile on a log 'nines' axis: 90 -> 1, 99 -> 2, 99.9 -> 3 (100 is capped at 6)."""
    return 6.0 if p >= 100 else -math.log10(1 - p / 100)


def plot_percentiles(rec: dict, ax=None):
    import matplotlib.pyplot as plt

    curve = percentile_curve(rec)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    if not curve:
        ax.text(0.5, 0.5, f"no latency data ({rec['status']}: {rec.get('reason') or 'no histogram'})", ha="center",
                va="center", transform=ax.transAxes)
        return ax
    xs = [nines(p) for p, _ in curve]
    ax.plot(xs, [v / 1000 for _, v in curve], marker="o")
    ax.set_xticks(xs, [f"{p:g}" if p < 100 else "max" for p, _ in curve], rotation=45)
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{rec['mode']} {rec['size']} {rec['target_rate']:.0f} req/s (rep {rec['repetition']})")
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_timeline(rec: dict, ax=None):
    import matplotlib.pyplot as plt

    tl = rec.get("timeline") or []
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    if not tl:
        ax.text(0.5, 0.5, "no timeline in this record", ha="center", va="center", transform=ax.transAxes)
        return ax
    t = [row.get("t") for row in tl]
    ax.plot(t, [row.get("rate") for row in tl], label="achieved rate (rps)", color="C0")
    ax.axhline(rec["target_rate"], color="C0", ls=":", lw=1, label="target rate")
    ax.set_xlabel("seconds since the measurement window began")
    ax.set_ylabel("requests/s")
    if any(row.get("p99_us") is not None for row in tl):
        ax2 = ax.twinx()
        ax2.plot(t, [(row.get("p99_us") or float("nan")) / 1000 for row in tl], color="C3", label="p99 (ms)")
        ax2.plot(t, [(row.get("p50_us") or float("nan")) / 1000 for row in tl], color="C2", label="p50 (ms)")
        ax2.set_ylabel("latency (ms)")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    return ax
