"""A study's hygiene policy: redo of disturbed repetitions, the quiet-machine check, required
host tuning (pure; the runner and store.py do the I/O).

Study keys (all optional):

    redo:    {max_attempts: 2}          # attempts of a repetition (default 1: never redone)
    quiet:   {max_cpu: 0.10, window_s: 0.5, max_wait_s: 30}
    require: {governor: performance, max_cstate: 1, mtu: 1500, offloads: {tso: true}}

Redo. A run is *disturbed* when a noise guard made it invalid (guards.disturbed: steal or
foreign CPU on the generator's core; the hiccup sum when a study sets a limit on it). A
repetition with a disturbed run is redone as a whole at the end of the study while `budget_s`
lasts, up to `max_attempts` attempts (attempts.py); a single run is never redone on its own,
and a run that did not sustain its rate is a result, not noise: never redone (issue 25; until
then it was redone once, in place, and the quieter attempt kept). `redo_counts` (flags) and
attempts.redo_counts (redos by arm) give the report and `invoke status` their counts.
"""

from __future__ import annotations

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
                          "Write e.g. 'redo: {max_attempts: 2}' (attempts of a repetition; 1: never redo).")
    n = raw.get("max_attempts", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise ConfigError(path, "redo.max_attempts", f"'{n}' is not a whole number from 1 to 10",
                          "Write e.g. 'max_attempts: 3'.")
    return {"max_attempts": n}


def parse_budget(raw: Any, path) -> float | None:
    """`budget_s`: the study's wall-time cap in seconds (None: no cap). Redone repetitions stop
    when the next would exceed it (study_run.py); the estimate is printed beside it."""
    if raw is None:
        return None
    if not _num(raw) or not 0 < raw <= 7 * 86400:
        raise ConfigError(path, "budget_s", f"'{raw}' is not a wall time in seconds",
                          "Write e.g. 'budget_s: 1200' (20 minutes), at most a week.")
    return float(raw)


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


def is_not_sustained(rec: Mapping) -> bool:
    """The not-sustained guard (workload/guards.py) made the run invalid: its median crossed the
    sustainability bound."""
    if rec.get("status") != "invalid":
        return False
    checks = (rec.get("hygiene") or {}).get("checks") or []
    return any(c.get("guard") == "sustained" and c.get("verdict") == "invalid" for c in checks)


def redo_counts(records: Iterable[Mapping]) -> dict:
    """For the report and `invoke status`: runs recorded, still disturbed, and flagged runs by
    flag (redos by arm: attempts.redo_counts)."""
    out = {"runs": 0, "disturbed": 0, "flagged_runs": 0, "flagged": {}}
    for r in records:
        out["runs"] += 1
        out["disturbed"] += is_disturbed(r)
        flags = (r.get("hygiene") or {}).get("flags") or []
        out["flagged_runs"] += bool(flags)
        for f in flags:
            out["flagged"][f] = out["flagged"].get(f, 0) + 1
    return out


def quiet_verdict(other_cpu: float | None, max_cpu: float) -> bool:
    """Quiet enough to measure: other processes used at most max_cpu cores (unknown: yes)."""
    return other_cpu is None or other_cpu <= max_cpu
