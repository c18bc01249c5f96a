"""A study's hygiene policy: redo of disturbed runs, the quiet-machine check, required host
tuning (pure; the runner and store.py do the I/O).

Study keys (all optional):

    redo:    {max_attempts: 3}          # a disturbed run is run at most this often (default 1: never redone)
    quiet:   {max_cpu: 0.10, window_s: 0.5, max_wait_s: 30}
    require: {governor: performance, max_cstate: 1, mtu: 1500, offloads: {tso: true}}

Redo. A run is *disturbed* when a noise guard made it invalid (guards.disturbed: foreign CPU,
steal, hiccups, send lag). With `max_attempts` > 1 the runner runs it again right away, in the
same mode block, under the same run id; the earlier record is moved unchanged (write-once
kept) to `<rate>/attempts/attempt<k>-rep<r>.json` and the new record says `attempt` and lists
`earlier_attempts`. A study resumed later (or whose max_attempts was raised) redoes disturbed
runs that still have attempts left (`redo_ids`). On this VM about 6 of 21 six-second runs hit a
hiccup above 1 ms: those are flagged, not redone; only stalls summing to more than 20 ms (what
moves p99) invalidate, so 3 attempts leave few disturbed runs (at a third disturbed per
attempt, 0.3^3 = 3 %). `redo_counts` gives the report and `invoke status` their counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError

REDO_DEFAULTS = {"max_attempts": 1}
QUIET_DEFAULTS = {"max_cpu": 0.10, "window_s": 0.5, "max_wait_s": 30.0}
REQUIRE_KEYS = ("governor", "max_cstate", "cpuidle_driver", "mtu", "offloads")
ATTEMPTS_DIR = "attempts"


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_redo(raw: Any, path) -> dict:
    if raw is None:
        return dict(REDO_DEFAULTS)
    if not isinstance(raw, dict) or set(raw) - set(REDO_DEFAULTS):
        raise ConfigError(path, "redo", f"'{raw}' is not a redo policy",
                          "Write e.g. 'redo: {max_attempts: 3}' (1: never redo).")
    n = raw.get("max_attempts", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise ConfigError(path, "redo.max_attempts", f"'{n}' is not a whole number from 1 to 10",
                          "Write e.g. 'max_attempts: 3'.")
    return {"max_attempts": n}


def parse_quiet(raw: Any, path) -> dict:
    if raw is None:
        return dict(QUIET_DEFAULTS)
    if not isinstance(raw, dict) or set(raw) - set(QUIET_DEFAULTS):
        raise ConfigError(path, "quiet", f"'{raw}' is not a quiet-machine check",
                          "Write e.g. 'quiet: {max_cpu: 0.1, window_s: 0.5, max_wait_s: 60}' (keys: "
                          f"{', '.join(QUIET_DEFAULTS)}).")
    out = {**QUIET_DEFAULTS, **raw}
    for k in QUIET_DEFAULTS:
        if not _num(out[k]) or out[k] < 0 or (k == "window_s" and out[k] <= 0):
            raise ConfigError(path, f"quiet.{k}", f"'{out[k]}' is not a usable number",
                              "max_cpu in cores (0.1 = 10 % of one core), seconds otherwise.")
    return out


def parse_require(raw: Any, path) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - set(REQUIRE_KEYS):
        bad = sorted(set(raw) - set(REQUIRE_KEYS)) if isinstance(raw, dict) else raw
        raise ConfigError(path, "require", f"{bad} are not host settings a study can require",
                          f"Known: {', '.join(REQUIRE_KEYS)}.")
    if "offloads" in raw and not (isinstance(raw["offloads"], dict)
                                  and all(isinstance(v, bool) for v in raw["offloads"].values())):
        raise ConfigError(path, "require.offloads", "must map offload names to true/false",
                          "Write e.g. 'offloads: {tcp-segmentation-offload: true}'.")
    return dict(raw)


def tuning_mismatches(required: Mapping[str, Any], tuning: Mapping[str, Any] | None, host: str) -> list[str]:
    """What a host's recorded tuning (provenance.parse_tuning) lacks of the study's `require`."""
    if not required:
        return []
    t = tuning or {}
    out = []
    for key, want in required.items():
        if key == "offloads":
            have = t.get("offloads") or {}
            for name, on in want.items():
                if have.get(name) is not on:
                    out.append(f"{host}: offload {name} is {_onoff(have.get(name))}, the study requires {_onoff(on)}")
            continue
        have = t.get(key)
        if key == "governor":
            govs = set((have or {}).values()) if isinstance(have, dict) else {have}
            if govs != {want}:
                out.append(f"{host}: CPU frequency governor is {', '.join(sorted(map(str, govs))) or 'unknown'}, the "
                           f"study requires {want}")
        elif str(have) != str(want):
            out.append(f"{host}: {key} is {have if have is not None else 'unknown'}, the study requires {want}")
    return out


def _onoff(v) -> str:
    return "unknown" if v is None else "on" if v else "off"


def is_disturbed(rec: Mapping) -> bool:
    return rec.get("status") == "invalid" and bool((rec.get("hygiene") or {}).get("disturbed"))


def attempt_of(rec: Mapping) -> int:
    return int(rec.get("attempt") or 1)


def is_not_sustained(rec: Mapping) -> bool:
    """The not-sustained guard (workload/guards.py) made the run invalid: its median crossed the
    sustainability bound."""
    if rec.get("status") != "invalid":
        return False
    checks = (rec.get("hygiene") or {}).get("checks") or []
    return any(c.get("guard") == "sustained" and c.get("verdict") == "invalid" for c in checks)


# A run that did not sustain its rate is redone once, like a disturbed run: one stall near a
# mode's capacity can fail its median; the cell is "not sustained" only if the redo fails too.
NOT_SUSTAINED_ATTEMPTS = 2


def should_redo(rec: Mapping, max_attempts: int) -> bool:
    if is_not_sustained(rec):
        return attempt_of(rec) < max(max_attempts, NOT_SUSTAINED_ATTEMPTS)
    return is_disturbed(rec) and attempt_of(rec) < max_attempts


def redo_why(rec: Mapping) -> str:
    return "not sustained" if is_not_sustained(rec) else "disturbed"


def redo_ids(records: Iterable[Mapping], max_attempts: int) -> set[str]:
    """Run ids whose recorded run was disturbed and has attempts left (redone on resume)."""
    return {r["run_id"] for r in records if should_redo(r, max_attempts)}


def attempt_path(record_file: Path, attempt: int) -> Path:
    """Where an earlier attempt's record goes: <rate>/attempts/attempt<k>-rep<r>.json (the name
    does not start with 'rep', so it is never read as the run's record)."""
    record_file = Path(record_file)
    return record_file.parent / ATTEMPTS_DIR / f"attempt{attempt}-{record_file.name}"


def attempt_entry(rec: Mapping, dest: Path) -> dict:
    """What the next attempt lists about an earlier one set aside at `dest` (pure; the move is
    store.RecordStore.set_aside)."""
    return {"attempt": attempt_of(rec), "status": rec.get("status"), "reason": rec.get("reason"),
            "flags": (rec.get("hygiene") or {}).get("flags") or [], "record": str(Path(ATTEMPTS_DIR) / Path(dest).name)}


def next_attempt(rec: dict, earlier: list[dict]) -> dict:
    """The new attempt's record with its number and the earlier attempts listed (pure)."""
    return {**rec, "attempt": len(earlier) + 1, "earlier_attempts": list(earlier)}


def redo_counts(records: Iterable[Mapping]) -> dict:
    """For the report and `invoke status`: runs recorded, redone (more than one attempt), still
    disturbed (out of attempts), attempts in all, and flagged runs by flag."""
    out = {"runs": 0, "redone": 0, "disturbed": 0, "attempts": 0, "flagged_runs": 0, "flagged": {}}
    for r in records:
        out["runs"] += 1
        n = attempt_of(r)
        out["attempts"] += n
        out["redone"] += n > 1
        out["disturbed"] += is_disturbed(r)
        flags = (r.get("hygiene") or {}).get("flags") or []
        out["flagged_runs"] += bool(flags)
        for f in flags:
            out["flagged"][f] = out["flagged"].get(f, 0) + 1
    return out


def quiet_verdict(other_cpu: float | None, max_cpu: float) -> bool:
    """Quiet enough to measure: other processes used at most max_cpu cores (unknown: yes)."""
    return other_cpu is None or other_cpu <= max_cpu
