"""The run record: schema, histogram codec, atomic write-once storage, and a loader.

A run record is one JSON file per run under data/raw/<study>/<mode>/<size>/<rate>/rep<k>.json.
It is written once (temporary file, then a hard link: a second writer fails) and never
edited. Everything downstream is regenerated from these files.

The record's type, its parts and the schema policy are record.py (RunRecord); this module is
its storage. Record keys (schema 2; record.upgrade reads schema 1):
  schema            int, SCHEMA_VERSION
  run_id            "<study>/<arm path>/<size>/<rate>/rep<k>" (the arm's path part is the mode's
                    name for every arm that is a mode: matrix.arm_path)
  study, size       str; size is "small" (350 B on the wire) or "large" (4096 B body)
  arm, mode         str: the label the analysis compares; the mode kind that was set up
  implementation    str ("project"), node str ("bare"): who built the mode, the node profile
  target_rate       float, requests/s the generator was asked for (all connections together)
  load_fraction     float | None, target_rate / calibrated max of the reference mode
  repetition        int (1-based)
  generator         str ("h2load", "tcpkali")
  settings          dict: connections, threads, duration_s, warmup_s, pipeline, ... as run
  status            "ok" | "invalid" | "failed"
  reason            str ("" when ok; "invalid: achieved 93% of target", "failed: nginx died", ...)
  started_at, ended_at   ISO-8601 UTC strings
  achieved_rate     float, responses/s inside the measurement window
  counts            {"requests", "ok", "errors", "timeouts"} inside the measurement window
  generator_cpu     float, fraction of one CPU the generator used (1.0 = one full core)
  latency           {"unit": "us",
                     "histogram": <HdrHistogram, encoded: corrected / open-loop, what we report>,
                     "histogram_uncorrected": <encoded> | None (as the generator measured it),
                     "percentiles": {"50": us, "90": ..., "99.999": ..., "100": max}}
  timeline          [{"t": s since window start, "rate": rps, "p50_us", "p99_us", "errors"}]
  metrics           {host name: {"period_s": 1.0, "format": "columns", "dt": [...], "cpu": [...], ...}}
                    (workload/metrics.compact; metrics_rows reads it back as per-sample dicts)
  provenance        str, path of the study's manifest relative to data/raw, or None
  order             int | None, position of this run in the executed sequence
  hygiene           dict, the guards' figures, checks, flags and verdict (workload/hygiene.py)
  notes             [str], what the workload noticed on the way
  attempt, earlier_attempts   a redone run's attempt number and its earlier attempts (policy.py)
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from hdrh.histogram import HdrHistogram

from .record import SCHEMA_VERSION, RunRecord, record_json, upgrade

STATUSES = ("ok", "invalid", "failed")
# HdrHistogram range: 1 us to 100 s, 3 significant digits (as the study's tools record).
HIST_LOWEST_US = 1
HIST_HIGHEST_US = 100_000_000
HIST_DIGITS = 3
PERCENTILES = (50, 90, 95, 99, 99.5, 99.9, 99.99, 99.999)
METRICS_COLUMNS = "columns"  # a host's metrics stored as columns (issue 27; before: "samples", a list of dicts)
CPU_UNIT_PCT = 0.1  # per-CPU shares in the columns: integers of this many percent (fixed point)
REQUIRED_KEYS = (
    "schema", "run_id", "study", "arm", "mode", "size", "target_rate", "repetition", "generator",
    "status", "reason", "achieved_rate", "counts", "latency",
)


# A rate is sustained when this percentile of latency, counted from the intended send time,
# stays within the bound: the definition of the calibrated maximum (workload/calibrate.py) and of
# a run that kept up with its rate (dataset.py). p90, not p99: a machine stall fails a p99 bound
# long before the queue stops draining (calibrate.py says why).
SUSTAINED_PERCENTILE = 90
SUSTAINED_BOUND_MS = 10.0
# One run of a study cannot be voted on as a calibration probe is (2 of 3), and a disturbance of a
# few hundred ms near a mode's capacity fails its p90 (seen: p50 82 us, p90 35 ms, steal and a
# 12 ms stall in the last second). So a study's run is judged on its median against the same
# bound: "not sustained" when half its requests waited longer (the queue did not drain for most
# of the window; seen: p50 15-363 ms).
RUN_SUSTAINED_PERCENTILE = 50


def sustained(percentiles: dict | None, bound_ms: float = SUSTAINED_BOUND_MS,
              percentile: float = SUSTAINED_PERCENTILE) -> bool | None:
    """Did the run keep up with its rate? None when the record has no such percentile (pure)."""
    v = (percentiles or {}).get(percentile_key(percentile))
    return None if v is None else float(v) <= bound_ms * 1000


def metrics_rows(host_metrics: dict) -> list[dict]:
    """A host's samples as {"t", "dt", "cpu": [[% per kind] per CPU], "ctxt_per_s", ..., "net": {...}}
    from either stored shape: the columns (workload/metrics.compact) or the per-sample list of
    records before issue 27."""
    if host_metrics.get("format") != METRICS_COLUMNS:
        return list(host_metrics.get("samples") or [])
    unit = float(host_metrics.get("cpu_unit_pct") or CPU_UNIT_PCT)
    net = host_metrics.get("net") or {}
    retrans_c = host_metrics.get("tcp_retrans_container") or [None] * len(host_metrics["dt"])
    out, t = [], 0.0
    for i, dt in enumerate(host_metrics["dt"]):
        t += dt
        n = {k: v[i] for k, v in net.items()}
        out.append({"t": round(t, 3), "dt": dt,
                    "cpu": [None if c is None else [round(x * unit, 1) for x in c] for c in host_metrics["cpu"][i]],
                    "ctxt_per_s": host_metrics["ctxt_per_s"][i], "intr_per_s": host_metrics["intr_per_s"][i],
                    "net": None if not n or any(v is None for v in n.values()) else n,
                    "tcp_retrans": host_metrics["tcp_retrans"][i], "tcp_retrans_container": retrans_c[i]})
    return out


def now_iso(timespec: str = "seconds") -> str:
    """Now, as an ISO-8601 UTC string: the one timestamp format of records and manifests."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def zero_counts() -> dict:
    return {"requests": 0, "ok": 0, "errors": 0, "timeouts": 0}


def empty_latency() -> dict:
    return {"unit": "us", "histogram": None, "histogram_uncorrected": None, "percentiles": {}}


def new_record(*, run_id: str, study: str, mode: str, size: str, target_rate: float,
               load_fraction: float | None, repetition: int, generator: str, settings: dict,
               arm: str | None = None, **parts: Any) -> dict:
    """A run record with every key of the schema (record.RunRecord.new, as a dict); a run starts
    "failed" with no measurement and the workload fills in what it measured. `parts`: status,
    reason, started_at, ended_at, achieved_rate, counts, generator_cpu, latency, timeline,
    metrics, provenance, order, implementation, node."""
    return RunRecord.new(run_id=run_id, study=study, mode=mode, size=size, target_rate=target_rate,
                         load_fraction=load_fraction, repetition=repetition, generator=generator,
                         settings=settings, arm=arm, **parts).to_json()


def failed_record(run, reason: str, settings: Mapping[str, Any], started_at: str, ended_at: str,
                  provenance: str | None) -> dict:
    """The record of a planned run (matrix.PlannedRun) that produced no measurement: its reason
    is the result."""
    return new_record(run_id=run.run_id, study=run.study, mode=run.mode, arm=getattr(run, "arm", None), size=run.size,
                      target_rate=run.target_rate, load_fraction=run.load_fraction,
                      repetition=run.repetition, generator=settings.get("generator", "h2load"),
                      settings=dict(settings), reason=reason, started_at=started_at,
                      ended_at=ended_at, provenance=provenance, order=run.order)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def encode_histogram(h: HdrHistogram) -> str:
    return h.encode().decode("ascii")


def decode_histogram(s: str) -> HdrHistogram:
    return HdrHistogram.decode(s.encode("ascii") if isinstance(s, str) else s)


def percentile_key(p: float) -> str:
    """'50', '99.9', '99.999', '100' — the keys of a record's percentile table."""
    return f"{p:g}"


def percentile_table(h: HdrHistogram, percentiles: Iterable[float] = PERCENTILES) -> dict[str, int]:
    table = {percentile_key(p): int(h.get_value_at_percentile(p)) for p in percentiles}
    table["100"] = int(h.get_max_value())
    return table


def run_id(study: str, mode: str, size: str, rate: float | int, repetition: int) -> str:
    """`mode`: the arm's path part (matrix.arm_path), the mode's name for an arm that is a mode."""
    return f"{study}/{mode}/{size}/{rate_label(rate)}/rep{repetition}"


def rate_label(rate: float | int) -> str:
    """A rate as a path part: whole numbers without a decimal point."""
    return str(int(rate)) if float(rate).is_integer() else f"{rate:g}"


def record_path(raw_dir: Path, rid: str) -> Path:
    return Path(raw_dir) / f"{rid}.json"


def validate_record(rec: Any) -> list[str]:
    """Problems that make a record unusable (empty list: it is complete)."""
    if not isinstance(rec, dict):
        return ["not a JSON object"]
    problems = [f"missing '{k}'" for k in REQUIRED_KEYS if k not in rec]
    if problems:
        return problems
    if rec["schema"] != SCHEMA_VERSION:
        problems.append(f"schema {rec['schema']} is not {SCHEMA_VERSION}")
    if rec["status"] not in STATUSES:
        problems.append(f"status '{rec['status']}' is not one of {STATUSES}")
    if rec["status"] != "failed" and not rec["latency"].get("histogram"):
        problems.append("no latency histogram in a run that did not fail")
    return problems


def write_record(raw_dir: Path, rec: dict) -> Path:
    """Write a run record once, atomically: a reader sees the whole file or none of it. The
    record goes through its type (record.RunRecord) on the way, so what is stored is schema 2."""
    rec = upgrade(rec) if isinstance(rec, dict) else rec
    problems = validate_record(rec)
    if problems:
        raise ValueError(f"refusing to write an incomplete run record {rec.get('run_id')}: {'; '.join(problems)}")
    path = record_path(raw_dir, rec["run_id"])
    write_once_text(path, json.dumps(record_json(rec), separators=(",", ":"), sort_keys=True))
    return path


def write_once_text(path: Path, text: str) -> None:
    """Create `path` with `text`, whole, or raise FileExistsError: a hard link from a complete
    temporary file never replaces an existing name (rename would), so of two writers racing
    for one record, the second fails. The directory is fsynced so the new name survives."""
    path = Path(path)
    tmp = _complete_temp(path, text)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(f"{path} exists: run records are write-once") from None
        _fsync_dir(path.parent)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete_temp(path: Path, text: str) -> str:
    """A temporary file beside `path` holding `text`, synced to disk, readable by all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are for every reader
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = _complete_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_record(path: Path) -> dict | None:
    """A complete record, or None when the file is missing, torn or incomplete."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(rec, dict):
        rec = upgrade(rec)  # schema 1 -> 2: arm, implementation, node (record.py)
    return rec if not validate_record(rec) else None


def iter_records(raw_dir: Path, study: str | None = None) -> Iterator[dict]:
    base = Path(raw_dir) / study if study else Path(raw_dir)
    if not base.exists():
        return
    for path in sorted(base.rglob("rep*.json")):
        rec = read_record(path)
        if rec is not None:
            yield rec
