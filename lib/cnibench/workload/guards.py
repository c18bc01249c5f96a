"""Generator honesty guards: a run that did not deliver what was asked is `invalid`, kept but
never silently used. Pure functions of the measured numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuardLimits:
    min_achieved_fraction: float = 0.99  # achieved rate / target rate
    max_error_fraction: float = 0.001  # (errors + timeouts) / requests
    max_generator_cpu: float = 0.90  # per generator thread (1.0 = one full core each)


def check(target_rate: float | None, achieved_rate: float, requests: int, errors: int, timeouts: int,
          generator_cpu: float | None, threads: int = 1, limits: GuardLimits = GuardLimits()) -> list[str]:
    """Reasons the run is invalid (empty: it is valid)."""
    reasons = []
    if target_rate:  # closed-loop runs have no target to miss
        frac = achieved_rate / target_rate
        if frac < limits.min_achieved_fraction:
            reasons.append(f"achieved {100 * frac:.1f}% of the target rate ({achieved_rate:.0f} of {target_rate:.0f} req/s)")
    bad = errors + timeouts
    if requests > 0 and bad / requests > limits.max_error_fraction:
        reasons.append(f"{100 * bad / requests:.2f}% errors/timeouts ({errors} errors, {timeouts} timeouts of {requests})")
    if generator_cpu is not None and generator_cpu / max(threads, 1) >= limits.max_generator_cpu:
        reasons.append(f"generator used {100 * generator_cpu / max(threads, 1):.0f}% of its CPU: it may be the bottleneck")
    return reasons


def verdict(reasons: list[str]) -> tuple[str, str]:
    """(status, reason) for the record."""
    return ("invalid", "invalid: " + "; ".join(reasons)) if reasons else ("ok", "")
