"""The tidy dataset: raw run records -> one row per run + the runs' histograms as arrays.

Output (data/processed/<study>/):
  runs.parquet        one row per run: parameters, status/validity, percentiles (us), achieved
                      rate, CPU time per request by kind and host role (cpu_scope: the pinned
                      cores' window figures since issue 25, else the whole machine's), the
                      left-out shares and withheld reasons of the outside-steal histograms
  histograms.parquet  long table (run_id, lo, hi, count) of each run's non-empty HdrHistogram
                      buckets: bucket i holds latencies in [lo, hi) microseconds
  histograms_<v>.parquet  the same for latency.<v>, v in recordparts.VARIANTS, where recorded
  meta.json           manifest, calibration, unreadable files: what the report needs beyond runs

Downstream code (stats, plots, report) reads this and never the raw JSON; hdrh is only needed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..infra import config
from ..study.store import RecordStore
from .. import results
from . import recordparts
from ..catalog import SIZES  # noqa: F401  (re-exported: plots, report, stats)
from ..study.keys import MODES, REFERENCE  # noqa: F401  (re-exported: plots, report, stats)

# Fixed order everywhere (tables, legends, colours). The first is the reference.
CPU_KINDS = ("user", "system", "irq", "softirq")
# Percentiles kept as run columns (us): the record's table, named p50 ... p99_999, pmax.
RUN_PERCENTILES = ("50", "90", "95", "99", "99.5", "99.9", "99.99", "99.999", "100")


def pcol(p: str | float) -> str:
    """Column name of a percentile: '99.9' -> 'p99_9', '100' -> 'pmax'."""
    key = results.percentile_key(float(p))
    return "pmax" if key == "100" else "p" + key.replace(".", "_")


@dataclass
class Dataset:
    study: str
    runs: pd.DataFrame  # one row per run (all statuses)
    hist: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # run_id -> (lo, hi, counts)
    manifest: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)  # {mode: {size: {"max_rate":..}}}
    unreadable: list[str] = field(default_factory=list)  # raw files that are torn/incomplete
    # recordparts.VARIANTS -> run_id -> (lo, hi, counts): the histograms outside hypervisor steal
    variants: dict[str, dict] = field(default_factory=dict)

    @property
    def valid(self) -> pd.DataFrame:
        return self.runs[self.runs["valid"]]

    def modes(self) -> list[str]:
        return order_modes(self.runs["mode"].unique())

    def sizes(self) -> list[str]:
        present = set(self.runs["size"].unique())
        return [s for s in SIZES if s in present] + sorted(present - set(SIZES))


def order_modes(modes: Iterable[str]) -> list[str]:
    """Modes in the fixed order; unknown modes after the known ones, alphabetically."""
    modes = set(modes)
    return [m for m in MODES if m in modes] + sorted(modes - set(MODES))


def bucket_bounds(h) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) in us of every counts index of an HdrHistogram (vectorised hdrh index math)."""
    idx = np.arange(h.counts_len, dtype=np.int64)
    shm = h.sub_bucket_half_count_magnitude
    half = h.sub_bucket_half_count
    bucket = (idx >> shm) - 1
    sub = (idx & (half - 1)) + half
    first = bucket < 0
    sub = np.where(first, sub - half, sub)
    bucket = np.where(first, 0, bucket)
    lo = sub << (bucket + h.unit_magnitude)
    width = np.int64(1) << (bucket + h.unit_magnitude)
    return lo, lo + width


_BOUNDS_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def histogram_arrays(encoded: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, counts) of the non-empty buckets of an encoded histogram."""
    h = results.decode_histogram(encoded)
    key = (h.counts_len, h.sub_bucket_half_count_magnitude, h.unit_magnitude)
    if key not in _BOUNDS_CACHE:  # same layout for every record: compute once
        _BOUNDS_CACHE[key] = bucket_bounds(h)
    lo, hi = _BOUNDS_CACHE[key]
    counts = np.ctypeslib.as_array(h.counts)[: h.counts_len].astype(np.int64)
    nz = np.nonzero(counts)[0]
    return lo[nz].copy(), hi[nz].copy(), counts[nz]


def host_roles(manifest: dict) -> dict[str, str]:
    """Host name -> role, from the manifest if it says so (several shapes accepted)."""
    roles: dict[str, str] = {}
    hosts = manifest.get("hosts") or {}
    items = hosts.items() if isinstance(hosts, dict) else ((h.get("name"), h) for h in hosts if isinstance(h, dict))
    for name, info in items:
        if isinstance(info, dict) and info.get("role") and name:
            roles[str(name)] = str(info["role"])
    return roles


def cpu_per_request(metrics: Any, achieved_rate: float, roles: dict[str, str]) -> dict[str, float]:
    """CPU microseconds per request by kind and host role: cpu_<role>_<kind>_us.

    Two sample shapes are read (results.metrics_rows): the sampler's (workload/metrics.py: "dt"
    seconds and CPU shares in percent) and plain CPU seconds per "period_s". Rates, not totals: CPU seconds per second
    of samples divided by responses per second, so a sampling window that differs a little from
    the measurement window does not bias it. Missing or malformed metrics give no columns (NaN in
    the table), never an error.
    """
    out: dict[str, float] = {}
    if not isinstance(metrics, dict) or not achieved_rate or achieved_rate <= 0:
        return out
    for host, m in metrics.items():
        if host in recordparts.FIELDS_OF_RECORD:
            continue
        try:
            samples = results.metrics_rows(m)
            period = float(m.get("period_s") or 1.0)
            role = roles.get(host, host)  # the testbed names its hosts by role
            totals = dict.fromkeys(CPU_KINDS, 0.0)
            seconds = 0.0
            for s in samples:
                if "dt" in s:  # percent of the interval
                    dt = float(s["dt"])
                    scale = dt / 100.0
                else:  # CPU seconds in the period
                    dt, scale = float(s.get("period_s", period)), 1.0
                seconds += dt
                for cpu in _cpu_rows(m, s):
                    for kind in CPU_KINDS:
                        totals[kind] += float(cpu.get(kind, 0.0) or 0.0) * scale
            if seconds <= 0:
                continue
            for kind, total in totals.items():
                out[f"cpu_{role}_{kind}_us"] = total / seconds / achieved_rate * 1e6
            out["cpu_scope"] = recordparts.MACHINE
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            continue  # metrics format drift: leave this host's columns empty
    return out


def _cpu_rows(host_metrics: dict, sample: dict) -> list[dict]:
    """Per-CPU {kind: value} of one sample: a dict by CPU name, or the record's compact arrays
    (workload/metrics.compact: host-level "cpu_fields" name the columns)."""
    cpu = sample.get("cpu") or {}
    if isinstance(cpu, dict):
        return list(cpu.values())
    fields = host_metrics.get("cpu_fields") or ["user", "system", "irq", "softirq", "idle"]
    return [dict(zip(fields, row)) for row in cpu if row is not None]


def record_row(rec: dict, roles: dict[str, str] | None = None, sustain: tuple[float, float] | None = None) -> dict:
    """One run's row. sustain: (bound_ms, percentile) that says whether the run kept up with its
    rate (results.sustained; sustain_criterion); default p50 <= 10 ms."""
    counts = rec.get("counts") or {}
    settings = rec.get("settings") or {}
    pct = (rec.get("latency") or {}).get("percentiles") or {}
    target = float(rec["target_rate"])
    achieved = float(rec.get("achieved_rate") or 0.0)
    row = {
        # "mode" is the label compared: the record's arm (schema 2; the A/A twin's is its own, so
        # tables, figures and statistics keep it apart from the reference), else its mode
        "run_id": rec["run_id"], "study": rec["study"], "mode": rec.get("arm") or rec["mode"], "size": rec["size"],
        "arm": rec.get("arm") or rec["mode"], "run_mode": rec["mode"],
        "target_rate": target, "load_fraction": rec.get("load_fraction"),
        "repetition": int(rec["repetition"]), "generator": rec.get("generator"),
        "attempt": int(rec.get("repetition_attempt") or 1),  # > 1: from a redone repetition (study/attempts.py)
        "status": rec["status"], "reason": rec.get("reason", ""), "valid": rec["status"] == "ok",
        # invalid because the machine was disturbed (noise guards), not because the mode failed
        "disturbed": bool((rec.get("hygiene") or {}).get("disturbed")) and rec["status"] == "invalid",
        "started_at": rec.get("started_at"), "order": rec.get("order"), "steal": _check(rec, "steal"),
        "achieved_rate": achieved, "achieved_ratio": achieved / target if target else np.nan,
        "requests": counts.get("requests"), "ok": counts.get("ok"),
        "errors": counts.get("errors"), "timeouts": counts.get("timeouts"),
        "generator_cpu": rec.get("generator_cpu"),
        "connections": settings.get("connections"), "duration_s": settings.get("duration_s"),
    }
    for p in RUN_PERCENTILES:
        v = pct.get(p)
        row[pcol(p)] = float(v) if v is not None else np.nan
    bound_ms, percentile = sustain or (results.SUSTAINED_BOUND_MS, results.RUN_SUSTAINED_PERCENTILE)
    row["sustained"] = results.sustained(pct, bound_ms, percentile)
    if row["valid"] and row["sustained"] is False:
        # The queue did not drain: latency grew through the window (a mode past its maximum).
        # The guards judge the measurement; this is the result, so the run is not sustained,
        # never an average of the runs that kept up (stats.attempts).
        row.update(valid=False, status="invalid", reason=f"not sustained: p{percentile:g} "
                   f"{float(pct[results.percentile_key(percentile)]) / 1000:.1f} ms > {bound_ms:g} ms")
    row.update(cpu_per_request(rec.get("metrics"), achieved, roles or {}))
    row.update(recordparts.window_cpu_fields(rec))  # the pinned cores' figures replace the machine's
    row.update(recordparts.conditional_fields(rec)[0])
    return row


def _check(rec: dict, guard: str) -> float:
    """The value a run's hygiene check measured (NaN when the record has none)."""
    for c in (rec.get("hygiene") or {}).get("checks") or []:
        if isinstance(c, dict) and c.get("guard") == guard and c.get("value") is not None:
            return float(c["value"])
    return np.nan


def read_manifest(raw_dir: Path, study: str) -> dict:
    try:
        return json.loads((Path(raw_dir) / study / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def read_calibration(calibration_dir: Path, manifest: dict) -> dict:
    """{mode: {size: {"max_rate": ..}}} from data/calibration/<inventory>/<mode>/<size>.json,
    completed by the manifest's own calibration ({"reference", "max_rates": {size: rps}}).

    The inventory is the manifest's ("inventory": name or {"name": ...}); with no manifest entry
    and exactly one inventory directory, that one.
    """
    base = Path(calibration_dir)
    inv = manifest.get("inventory")
    if isinstance(inv, dict):
        inv = inv.get("name")
    if not inv:
        dirs = [d for d in base.iterdir() if d.is_dir()] if base.is_dir() else []
        inv = dirs[0].name if len(dirs) == 1 else None
    out: dict = {}
    for path in sorted((base / str(inv)).glob("*/*.json")) if inv else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "max_rate" in data:
            out.setdefault(path.parent.name, {})[path.stem] = data
    cal = manifest.get("calibration")
    if isinstance(cal, dict) and isinstance(cal.get("max_rates"), dict):
        ref = out.setdefault(cal.get("reference") or REFERENCE, {})
        for size, rate in cal["max_rates"].items():
            ref.setdefault(size, {"max_rate": float(rate)})
    return out


def record_paths(raw_dir: Path, study: str) -> list[Path]:
    """The record files of a study the analysis reads: per repetition its chosen attempt only
    (whole-repetition redo, study/attempts.choose), plus every file that does not read, so that
    it is listed as unreadable instead of silently dropped."""
    base = Path(raw_dir) / study
    if not base.exists():
        return []
    chosen = set(RecordStore(Path(raw_dir), study).analysis_paths())
    torn = [p for p in sorted(base.rglob("rep*.json")) if p not in chosen and results.read_record(p) is None]
    return sorted(chosen | set(torn))


def build(study: str, raw_dir: Path = config.RAW, calibration_dir: Path | None = None) -> Dataset:
    """Read every raw record of a study into a Dataset (no files written)."""
    raw_dir = Path(raw_dir)
    manifest = read_manifest(raw_dir, study)
    calibration = read_calibration(calibration_dir or raw_dir.parent / "calibration", manifest)
    roles = host_roles(manifest)
    rows, hist, unreadable = [], {}, []
    variants: dict = {v: {} for v in recordparts.VARIANTS}
    for path in record_paths(raw_dir, study):
        rec = results.read_record(path)
        if rec is None:
            unreadable.append(str(path.relative_to(raw_dir)))
            continue
        row = record_row(rec, roles, sustain_criterion(manifest))
        encoded = (rec.get("latency") or {}).get("histogram")
        if encoded:
            try:
                hist[rec["run_id"]] = histogram_arrays(encoded)
            except Exception:  # a corrupt histogram makes the run unusable, not the study
                row.update(valid=False, status="invalid", reason="invalid: histogram does not decode")
        elif row["valid"]:
            row.update(valid=False, status="invalid", reason="invalid: no histogram")
        for v, enc in recordparts.conditional_fields(rec)[1].items():
            try:
                variants[v][rec["run_id"]] = histogram_arrays(enc)
            except Exception:  # a corrupt conditional histogram withholds it, the raw run stays
                row[recordparts.withheld_col(v)] = "histogram does not decode"
        rows.append(row)
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=["run_id", "study", "mode", "size", "target_rate", "load_fraction",
                                     "repetition", "status", "reason", "valid"])
    runs = _fill_load_fraction(runs, calibration)
    return Dataset(study, runs, hist, manifest, calibration, unreadable, {k: v for k, v in variants.items() if v})


def sustain_criterion(manifest: dict) -> tuple[float, float]:
    """(bound_ms, percentile) a run of the study is judged by: the bound its calibration used (its
    manifest; default 10 ms) at the run's percentile (results.RUN_SUSTAINED_PERCENTILE)."""
    details = ((manifest.get("calibration") or {}).get("details") or {}).values()
    bound = next((float(d["bound_ms"]) for d in details if d.get("bound_ms")), results.SUSTAINED_BOUND_MS)
    return bound, float(results.RUN_SUSTAINED_PERCENTILE)


def _fill_load_fraction(runs: pd.DataFrame, calibration: dict) -> pd.DataFrame:
    """Runs without load_fraction get target / the reference's calibrated max at that size."""
    if runs.empty:
        return runs
    runs = runs.copy()
    runs["load_fraction"] = pd.to_numeric(runs["load_fraction"], errors="coerce")
    ref = calibration.get(REFERENCE, {})
    for size, cal in ref.items():
        missing = runs["load_fraction"].isna() & (runs["size"] == size)
        if cal.get("max_rate"):
            runs.loc[missing, "load_fraction"] = runs.loc[missing, "target_rate"] / float(cal["max_rate"])
    return runs


def save(ds: Dataset, out_dir: Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds.runs.to_parquet(out / "runs.parquet", index=False)
    _save_hist(ds.hist, out / "histograms.parquet")
    for v in recordparts.VARIANTS:  # histograms_<variant>.parquet only where recorded
        (out / f"histograms_{v}.parquet").unlink(missing_ok=True)
        if ds.variants.get(v):
            _save_hist(ds.variants[v], out / f"histograms_{v}.parquet")
    meta = {"study": ds.study, "manifest": ds.manifest, "calibration": ds.calibration,
            "unreadable": ds.unreadable}
    results.atomic_write_text(out / "meta.json", json.dumps(meta, indent=1, sort_keys=True, default=str))
    return out


def _save_hist(hist: dict, path: Path) -> None:
    ids, los, his, cnts = [], [], [], []
    for rid, (lo, hi, c) in hist.items():
        ids.append(np.full(len(c), rid, dtype=object))
        los.append(lo), his.append(hi), cnts.append(c)
    cat = pd.Categorical(np.concatenate(ids)) if ids else pd.Categorical([])
    long = pd.DataFrame({
        "run_id": cat,
        "lo": np.concatenate(los) if los else np.array([], np.int64),
        "hi": np.concatenate(his) if his else np.array([], np.int64),
        "count": np.concatenate(cnts) if cnts else np.array([], np.int64),
    })
    long.to_parquet(path, index=False)


def _load_hist(path: Path) -> dict:
    long = pd.read_parquet(path)
    return {str(rid): (g["lo"].to_numpy(), g["hi"].to_numpy(), g["count"].to_numpy())
            for rid, g in long.groupby("run_id", observed=True, sort=False)}


def load(study: str, processed_dir: Path | None = None) -> Dataset:
    base = Path(processed_dir) if processed_dir else config.PROCESSED / study
    runs = pd.read_parquet(base / "runs.parquet")
    hist = _load_hist(base / "histograms.parquet")
    variants = {v: _load_hist(base / f"histograms_{v}.parquet") for v in recordparts.VARIANTS
                if (base / f"histograms_{v}.parquet").exists()}
    meta = json.loads((base / "meta.json").read_text())
    return Dataset(study, runs, hist, meta.get("manifest", {}), meta.get("calibration", {}),
                   meta.get("unreadable", []), variants)


def build_and_save(study: str, raw_dir: Path = config.RAW, processed_dir: Path | None = None,
                   calibration_dir: Path | None = None) -> Dataset:
    ds = build(study, raw_dir, calibration_dir)
    save(ds, processed_dir or config.PROCESSED / study)
    return ds


FIXTURE_COLUMNS = ["run_id", "study", "mode", "arm", "size", "target_rate", "load_fraction", "repetition",
                   "status", "reason", "valid", "disturbed", "steal", "started_at", "generator", "duration_s",
                   "achieved_rate", *(pcol(p) for p in RUN_PERCENTILES), "sustained",
                   *(c for v in recordparts.VARIANTS for c in (recordparts.share_col(v), recordparts.withheld_col(v)))]


def histograms_only(ds: Dataset) -> Dataset:
    """A study reduced to what the statistics read (run keys, status, histograms, calibration),
    without metrics or the manifest's host details: a small test fixture (`save` it)."""
    runs = ds.runs[[c for c in FIXTURE_COLUMNS if c in ds.runs]].copy()
    keep = {k: ds.manifest[k] for k in ("study", "seed", "calibration") if k in ds.manifest}
    return Dataset(ds.study, runs, dict(ds.hist), keep, ds.calibration, list(ds.unreadable), dict(ds.variants))
