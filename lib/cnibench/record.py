"""The typed run record: one dataclass with its parts, one constructor, `to_json`, and a reader
that upgrades older schemas (so existing data/raw folders still load).

    rec = RunRecord.new(run_id=..., study=..., mode="host", size="small", ...)
    rec.to_json()                        # the dict written to data/raw (results.write_record)
    RunRecord.from_json(d)               # any stored schema, upgraded to SCHEMA_VERSION

Schema policy. Adding an optional part (a key a reader may lack) does not bump the version:
readers take its default. Removing or renaming a key does, with an upgrade step in `upgrade`
that turns the old form into the new one, so every stored record stays readable.

Schema 2 (issue 22) separates what the analysis compares from what was set up:
  arm             the label the analysis compares (default: the mode's name; an A/A twin of
                  the reference is e.g. "host·A/A")
  mode            the kind that was set up (modes.MODES)
  implementation  who built the mode ("project" unless a study says otherwise)
  node            the node profile it ran on ("bare" unless a study says otherwise)
Schema 1 records are upgraded by filling these (arm = mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SCHEMA_VERSION = 2
DEFAULT_IMPLEMENTATION = "project"
DEFAULT_NODE = "bare"
# A run record's JSON must stay below this (a 4 s lab run's record; test_record_size holds it):
# the analysis reads every record of a study into memory, and one study has hundreds.
RECORD_BUDGET_BYTES = 64 * 1024


@dataclass
class Counts:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    extra: dict = field(default_factory=dict)  # e.g. "unfinished" (the workload's own counts)

    def to_json(self) -> dict:
        return {"requests": self.requests, "ok": self.ok, "errors": self.errors, "timeouts": self.timeouts,
                **self.extra}

    @classmethod
    def from_json(cls, d: Mapping | None) -> "Counts":
        d = dict(d or {})
        own = {k: d.pop(k) for k in ("requests", "ok", "errors", "timeouts") if k in d}
        return cls(**own, extra=d)


@dataclass
class Latency:
    unit: str = "us"
    histogram: str | None = None  # HdrHistogram, encoded: corrected / open-loop (what is reported)
    histogram_uncorrected: str | None = None
    percentiles: dict | None = field(default_factory=dict)
    # Everything else the workload measured (send_lag, pacing, percentiles_uncorrected, correction,
    # source, outside_steal and its variants), kept as written: a part the type does not name is
    # never dropped (until 2026-12-03 it was, so records since issue 22 lack these parts).
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"unit": self.unit, "histogram": self.histogram, "histogram_uncorrected": self.histogram_uncorrected,
                "percentiles": self.percentiles, **self.extra}

    @classmethod
    def from_json(cls, d: Mapping | None) -> "Latency":
        d = dict(d or {})
        own = {k: d.pop(k) for k in ("histogram", "histogram_uncorrected") if k in d}
        return cls(unit=d.pop("unit", "us"), percentiles=d.pop("percentiles", {}), **own, extra=d)


@dataclass
class Attempts:
    """A redone run: which attempt this record is, and what the earlier ones were (policy.py).
    Absent (None) in a run measured once."""

    attempt: int | None = None
    earlier: list | None = None

    def to_json(self) -> dict:
        out: dict = {}
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.earlier is not None:
            out["earlier_attempts"] = list(self.earlier)
        return out


@dataclass
class Provenance:
    manifest: str | None = None  # the study's manifest, relative to data/raw
    order: int | None = None  # position in the executed sequence
    started_at: str | None = None
    ended_at: str | None = None

    def to_json(self) -> dict:
        return {"provenance": self.manifest, "order": self.order, "started_at": self.started_at,
                "ended_at": self.ended_at}


# The keys of the record that are not parts above; unknown keys of a stored record are kept
# in `extra`, so a reader never drops what a newer writer added.
_PLAIN = ("run_id", "study", "arm", "mode", "implementation", "node", "size", "target_rate",
          "load_fraction", "repetition", "generator", "settings", "status", "reason",
          "achieved_rate", "generator_cpu", "timeline", "metrics")
_PARTS = ("counts", "latency", "hygiene", "notes", "attempt", "earlier_attempts", "provenance",
          "order", "started_at", "ended_at", "schema")


@dataclass
class RunRecord:
    run_id: str
    study: str
    arm: str
    mode: str
    size: str
    target_rate: float
    repetition: int
    generator: str
    implementation: str = DEFAULT_IMPLEMENTATION
    node: str = DEFAULT_NODE
    load_fraction: float | None = None
    settings: dict = field(default_factory=dict)
    status: str = "failed"
    reason: str = ""
    achieved_rate: float = 0.0
    generator_cpu: float | None = None
    counts: Counts = field(default_factory=Counts)
    latency: Latency = field(default_factory=Latency)
    hygiene: dict | None = None  # the guards' figures and verdicts (workload/hygiene.py)
    notes: list | None = None  # what the workload noticed (e.g. a slow nginx stop)
    attempts: Attempts = field(default_factory=Attempts)
    provenance: Provenance = field(default_factory=Provenance)
    timeline: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def new(cls, *, run_id: str, study: str, mode: str, size: str, target_rate: float, repetition: int,
            generator: str, arm: str | None = None, **kw: Any) -> "RunRecord":
        """The one constructor: a run starts "failed" with no measurement; arm defaults to the mode."""
        parts = {k: kw.pop(k) for k in ("provenance", "order", "started_at", "ended_at") if k in kw}
        counts, latency = kw.pop("counts", None), kw.pop("latency", None)
        return cls(run_id=run_id, study=study, arm=arm or mode, mode=mode, size=size, target_rate=target_rate,
                   repetition=repetition, generator=generator,
                   counts=Counts.from_json(counts) if counts is not None else Counts(),
                   latency=Latency.from_json(latency) if latency is not None else Latency(),
                   provenance=Provenance(parts.get("provenance"), parts.get("order"), parts.get("started_at"),
                                         parts.get("ended_at")),
                   **{k: v for k, v in kw.items() if v is not None or k in ("load_fraction", "generator_cpu")})

    def to_json(self) -> dict:
        """The stored form: every key of schema 1, plus arm, implementation and node."""
        out = {k: getattr(self, k) for k in _PLAIN}
        out.update(schema=SCHEMA_VERSION, counts=self.counts.to_json(), latency=self.latency.to_json(),
                   **self.provenance.to_json(), **self.attempts.to_json())
        if self.hygiene is not None:
            out["hygiene"] = self.hygiene
        if self.notes is not None:
            out["notes"] = self.notes
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, d: Mapping) -> "RunRecord":
        """A stored record of any known schema, upgraded; KeyError/TypeError when it is not one."""
        d = upgrade(d)
        plain = {k: d[k] for k in _PLAIN if k in d}
        extra = {k: v for k, v in d.items() if k not in _PLAIN and k not in _PARTS}
        return cls(**plain, counts=Counts.from_json(d.get("counts")), latency=Latency.from_json(d.get("latency")),
                   hygiene=d.get("hygiene"), notes=d.get("notes"),
                   attempts=Attempts(d.get("attempt"), d.get("earlier_attempts")),
                   provenance=Provenance(d.get("provenance"), d.get("order"), d.get("started_at"), d.get("ended_at")),
                   extra=extra)


def upgrade(d: Mapping) -> dict:
    """A stored record's dict in the current schema (pure; the file is never rewritten)."""
    d = dict(d)
    version = d.get("schema")
    if version == 1:  # 1 -> 2: arm, implementation and node, defaults as every run had them
        d.setdefault("arm", d.get("mode"))
        d.setdefault("implementation", DEFAULT_IMPLEMENTATION)
        d.setdefault("node", DEFAULT_NODE)
        d["schema"] = 2
    return d


def record_json(rec: Mapping) -> dict:
    """A record dict normalized through the type (what the one writer stores)."""
    return RunRecord.from_json(rec).to_json()
