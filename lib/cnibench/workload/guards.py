"""Validity guards: a run that did not deliver what was asked, or was disturbed by something
other than the network mode, is marked `invalid` (kept, never silently used) or flagged.

Every guard is a pure function of figures in the run record and returns one `Check`:

    {"guard", "value", "unit", "flag_at", "invalid_at", "verdict": ok|flag|invalid|report|skipped,
     "noise": bool, "reason"}

Two thresholds per guard (None: that verdict is off): `max_*` makes the run invalid, `flag_*`
only flags it (the run stays valid; the flag is counted and the analysis may leave it out).
`noise` marks guards that catch a disturbance from outside the measured system (another
process, the hypervisor): a run invalid for one of those is *disturbed* and the study's redo
policy may run it again (runner.py). The defaults below are documented in docs/method.md.

    checks = judge(rec, limits)            # rec: the run record with its "hygiene" figures
    status, reason, flags = verdict(checks)

"Not sustained" is a guard too (`sustained`, issue 22): a run whose median latency, counted
from the intended send time, crossed the sustainability bound (results.SUSTAINED_BOUND_MS at
results.RUN_SUSTAINED_PERCENTILE) did not keep up with its rate: invalid, its reason starting
"not sustained". The study redoes it once (policy.should_redo); the cell is not sustained only
if the redo fails too. The verdict is decided here, once, with the bound in force when the run
was measured; re-analysing a stored study with another bound re-judges only the runs that
were valid (analysis/dataset.py): a run recorded as not sustained stays so.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ..results import RUN_SUSTAINED_PERCENTILE, SUSTAINED_BOUND_MS, percentile_key

# Generators that busy-poll their core: their CPU share says nothing about saturation; their
# send lag (actual - intended send time, in the record) is judged instead.
BUSY_POLLING = frozenset({"openloop"})


@dataclass(frozen=True)
class GuardLimits:
    # The generator delivered what was asked.
    min_achieved_fraction: float = 0.99  # achieved rate / target rate
    max_error_fraction: float = 0.001  # (errors + timeouts) / requests
    # per generator thread (1.0 = one full core each); not for busy-polling generators
    max_generator_cpu: float | None = 0.90
    # Send lag of open-loop generators that record it (latency.send_lag). Normal: p99 30-40 us.
    max_send_lag_p99_us: float | None = 200.0  # 1 % of sends this late: the client was disturbed (noise)
    flag_send_lag_p999_us: float | None = 1000.0
    # The pinned cores (the generator's and nginx's) during the run, as a share of their time.
    max_foreign_cpu: float | None = 0.05  # CPU taken by processes that are not ours (noise)
    max_steal: float | None = 0.02  # time the hypervisor gave to someone else (noise)
    flag_steal: float | None = 0.005
    # Hiccup meter (hiccup/): any oversleep from flag_hiccup_us up flags; their sum invalidates.
    flag_hiccup_us: float | None = 1000.0
    max_hiccup_total_us: float | None = 20000.0  # ~0.4 % of a 5.5 s window: the requests above p99.6 (noise)
    # Network during the window: judged, flagged (a mode's own losses are a result, not noise).
    flag_retrans_per_request: float | None = 0.001  # TCP segments retransmitted per request
    flag_nic_drops: float | None = 0  # packets dropped on the data NICs (more than this flags)
    # Per-second stability: max / median of the per-second p99 in the window.
    flag_p99_ratio: float | None = 3.0  # above: the run is flagged "unstable"
    stability_min_requests: int = 1000  # seconds with fewer answered requests are not compared
    # The rate was sustained: the run's median latency (from the intended send time) within this.
    max_run_median_ms: float | None = SUSTAINED_BOUND_MS


NOISE_GUARDS = ("foreign_cpu", "steal", "hiccup", "send_lag")
NOISE_INVALID_KEYS = ("max_send_lag_p99_us", "max_foreign_cpu", "max_steal", "max_hiccup_total_us")


def noise_reported_only(limits: GuardLimits = GuardLimits()) -> GuardLimits:
    """The same limits with the noise guards' invalid thresholds off (they still measure and
    flag): for tests of mechanics that must pass on a shared, busy machine."""
    from dataclasses import replace

    return replace(limits, **dict.fromkeys(NOISE_INVALID_KEYS))


def _check(guard: str, value, unit: str, flag_at=None, invalid_at=None, noise=False, what: str = "", fmt=None) -> dict:
    """One guard's verdict: invalid beyond `invalid_at`, flagged beyond `flag_at` (strictly)."""
    fmt = fmt or (lambda v: f"{v:g}")
    out = {"guard": guard, "value": value, "unit": unit, "flag_at": flag_at, "invalid_at": invalid_at,
           "noise": noise, "verdict": "ok", "reason": ""}
    if value is None:
        out["verdict"] = "skipped"
        return out
    if flag_at is None and invalid_at is None:
        out["verdict"] = "report"
        return out
    if invalid_at is not None and value > invalid_at:
        out["verdict"], limit = "invalid", invalid_at
    elif flag_at is not None and value > flag_at:
        out["verdict"], limit = "flag", flag_at
    else:
        return out
    out["reason"] = f"{what} {fmt(value)} (limit {fmt(limit)})"
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def achieved(target_rate: float | None, achieved_rate: float, limits: GuardLimits) -> dict:
    if not target_rate:  # closed-loop runs have no target to miss
        return _check("achieved", None, "fraction")
    frac = achieved_rate / target_rate
    c = _check("achieved", round(frac, 4), "fraction")
    if frac < limits.min_achieved_fraction:
        c.update(verdict="invalid", invalid_at=limits.min_achieved_fraction,
                 reason=f"achieved {100 * frac:.1f}% of the target rate ({achieved_rate:.0f} of {target_rate:.0f} "
                 "req/s)")
    return c


def errors(requests: int, errs: int, timeouts: int, limits: GuardLimits) -> dict:
    if requests <= 0:
        return _check("errors", None, "fraction")
    frac = (errs + timeouts) / requests
    c = _check("errors", round(frac, 6), "fraction", invalid_at=limits.max_error_fraction)
    if c["verdict"] == "invalid":
        c["reason"] = f"{100 * frac:.2f}% errors/timeouts ({errs} errors, {timeouts} timeouts of {requests})"
    return c


def generator_cpu(cpu: float | None, threads: int, generator: str, limits: GuardLimits) -> dict:
    if cpu is None or generator in BUSY_POLLING:
        return _check("generator_cpu", None if cpu is None else round(cpu, 4), "cores")
    per = cpu / max(threads, 1)
    c = _check("generator_cpu", round(per, 4), "share of its cores", invalid_at=limits.max_generator_cpu)
    if limits.max_generator_cpu is not None and per >= limits.max_generator_cpu:  # at the limit counts
        c.update(verdict="invalid", reason=f"generator used {100 * per:.0f}% of its CPU: it may be the bottleneck")
    return c


def send_lag(percentiles: dict | None, limits: GuardLimits) -> dict:
    """From latency.send_lag.percentiles (us) of generators that record it; skipped otherwise."""
    if not percentiles:
        return _check("send_lag", None, "us")
    p99, p999 = percentiles.get("99"), percentiles.get("99.9")
    c = _check("send_lag", p99, "us (p99)", invalid_at=limits.max_send_lag_p99_us, noise=True,
               what="send lag p99", fmt=lambda v: f"{v:.0f} us")
    if c["verdict"] == "ok" and p999 is not None:
        c2 = _check("send_lag", p999, "us (p99.9)", flag_at=limits.flag_send_lag_p999_us, noise=True,
                    what="send lag p99.9", fmt=lambda v: f"{v:.0f} us")
        if c2["verdict"] == "flag":
            return c2
    return c


def foreign_cpu(share: float | None, limits: GuardLimits) -> dict:
    return _check("foreign_cpu", share, "share of the pinned cores", invalid_at=limits.max_foreign_cpu, noise=True,
                  what="foreign CPU on the pinned cores", fmt=_pct)


def steal(share: float | None, limits: GuardLimits) -> dict:
    return _check("steal", share, "share of the pinned cores", flag_at=limits.flag_steal, invalid_at=limits.max_steal,
                  noise=True, what="steal time on the pinned cores", fmt=_pct)


def hiccup(max_us: float | None, total_us: float | None, limits: GuardLimits) -> dict:
    """Flag on the largest oversleep; invalid on the sum of those from flag_hiccup_us up."""
    if max_us is None:
        return _check("hiccup", None, "us")
    if limits.max_hiccup_total_us is not None and total_us is not None and total_us > limits.max_hiccup_total_us:
        c = _check("hiccup", total_us, "us (sum)", invalid_at=limits.max_hiccup_total_us, noise=True,
                   what="hiccups (sum of stalls)", fmt=lambda v: f"{v / 1000:.1f} ms")
        c["reason"] += f", largest {max_us / 1000:.1f} ms"
        return c
    return _check("hiccup", max_us, "us (largest)", flag_at=limits.flag_hiccup_us, noise=True,
                  what="hiccup", fmt=lambda v: f"{v / 1000:.1f} ms")


def irq_share(irq: float | None, softirq: float | None) -> dict:
    """Reported only: interrupt work on the pinned cores is part of a mode's cost."""
    value = None if irq is None or softirq is None else round(irq + softirq, 4)
    return _check("irq_softirq", value, "share of the pinned cores")


def retransmits(retrans: int | None, requests: int, limits: GuardLimits) -> dict:
    if retrans is None or requests <= 0:
        return _check("retransmits", None, "per request")
    return _check("retransmits", round(retrans / requests, 6), "per request", flag_at=limits.flag_retrans_per_request,
                  what=f"TCP retransmits ({retrans})", fmt=lambda v: f"{v:.4f}/request")


def nic_drops(drops: int | None, limits: GuardLimits) -> dict:
    return _check("nic_drops", drops, "packets", flag_at=limits.flag_nic_drops, what="packets dropped on the data NICs",
                  fmt=lambda v: f"{v:.0f}")


def p99_ratio(timeline: list[dict] | None, min_requests: int) -> float | None:
    """max / median of the per-second p99 over seconds with at least `min_requests` answered."""
    p99s = [s["p99_us"] for s in timeline or [] if s.get("p99_us") and (s.get("rate") or 0) >= min_requests]
    if len(p99s) < 3:
        return None
    med = statistics.median(p99s)
    return round(max(p99s) / med, 3) if med > 0 else None


def stability(timeline: list[dict] | None, limits: GuardLimits) -> dict:
    c = _check("unstable", p99_ratio(timeline, limits.stability_min_requests), "max/median of per-second p99",
               flag_at=limits.flag_p99_ratio, what="per-second p99 max/median", fmt=lambda v: f"{v:.1f}x")
    return c


def sustained(percentiles: dict | None, limits: GuardLimits) -> dict:
    """Did the run keep up with its rate: its median within the bound (not noise: a mode past
    its capacity is a result)."""
    v = (percentiles or {}).get(percentile_key(RUN_SUSTAINED_PERCENTILE))
    bound = None if limits.max_run_median_ms is None else limits.max_run_median_ms * 1000
    return _check("sustained", None if v is None else float(v), "us", invalid_at=bound,
                  what=f"p{RUN_SUSTAINED_PERCENTILE:g}", fmt=lambda x: f"{x / 1000:.1f} ms")


def judge(rec: dict, limits: GuardLimits) -> list[dict]:
    """Every guard on one run record (its counts, latency, timeline and hygiene figures)."""
    counts = rec.get("counts") or {}
    fig = (rec.get("hygiene") or {}).get("figures") or {}
    lag = ((rec.get("latency") or {}).get("send_lag") or {}).get("percentiles")
    threads = int((rec.get("settings") or {}).get("threads") or 1)
    requests = int(counts.get("requests") or 0)
    return [
        achieved(rec.get("target_rate"), float(rec.get("achieved_rate") or 0.0), limits),
        errors(requests, int(counts.get("errors") or 0), int(counts.get("timeouts") or 0), limits),
        generator_cpu(rec.get("generator_cpu"), threads, rec.get("generator") or "", limits),
        send_lag(lag, limits),
        foreign_cpu(fig.get("foreign_cpu"), limits),
        steal(fig.get("steal"), limits),
        hiccup(fig.get("hiccup_max_us"), fig.get("hiccup_total_us"), limits),
        irq_share(fig.get("irq"), fig.get("softirq")),
        retransmits(fig.get("tcp_retransmits"), requests, limits),
        nic_drops(fig.get("nic_drops"), limits),
        stability(rec.get("timeline"), limits),
        sustained((rec.get("latency") or {}).get("percentiles"), limits),
    ]


def verdict_of(checks: list[dict]) -> tuple[str, str, list[str]]:
    """(status, reason, flags) from the checks: invalid when any guard says so; the reason starts
    "not sustained: " when the rate was not sustained (the analysis and policy.py read that)."""
    bad = [c["reason"] for c in checks if c["verdict"] == "invalid" and c["guard"] != "sustained"]
    slow = [c["reason"] for c in checks if c["verdict"] == "invalid" and c["guard"] == "sustained"]
    flags = sorted({c["guard"] for c in checks if c["verdict"] == "flag"})
    if slow:
        return "invalid", "; ".join([f"not sustained: {slow[0]}"]
                                    + ([f"invalid: {'; '.join(bad)}"] if bad else [])), flags
    return ("invalid", "invalid: " + "; ".join(bad), flags) if bad else ("ok", "", flags)


def disturbed(checks: list[dict]) -> bool:
    """Invalid because of a noise guard: the run may be redone (runner.py, study key `redo`)."""
    return any(c["verdict"] == "invalid" and c.get("noise") for c in checks)


# The older interface, kept for callers of the generator guards alone.

def check(target_rate: float | None, achieved_rate: float, requests: int, errors_: int, timeouts: int,
          generator_cpu_: float | None, threads: int = 1, limits: GuardLimits = GuardLimits(),
          generator: str = "") -> list[str]:
    """Reasons the run is invalid by the generator guards alone (empty: valid)."""
    checks = [achieved(target_rate, achieved_rate, limits), errors(requests, errors_, timeouts, limits),
              generator_cpu(generator_cpu_, threads, generator, limits)]
    return [c["reason"] for c in checks if c["verdict"] == "invalid"]


def verdict(reasons: list[str]) -> tuple[str, str]:
    """(status, reason) for the record."""
    return ("invalid", "invalid: " + "; ".join(reasons)) if reasons else ("ok", "")
