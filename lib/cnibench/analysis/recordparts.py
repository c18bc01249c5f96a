"""What a run record says beyond its raw latency (issue 25), as run-table fields. Pure.

  outside_steal          latency.outside_steal: the histogram of the requests whose intended time
                         lies outside every hypervisor-steal episode of either pinned core (widened
                         by L before, D(S) after), its left-out share and, when the generator could
                         not tell steal apart on a core, `withheld` with the reason
  outside_steal_wide     the same with 2x L and D (sensitivity)
  outside_steal_placebo  the same episodes moved to random times (placebo)
  window_cpu             metrics.window_cpu: user / system / softirq / irq / steal / idle seconds of
                         each role's pinned cores over the measurement window; divided by the
                         requests answered in the window (counts.ok) it is CPU per request
  instructions           metrics.instructions: per role, or null where the hypervisor hides the PMU

Records made before these fields stay readable: their fields are NaN and `<variant>_withheld`
says "not recorded".
"""

from __future__ import annotations

import math

VARIANTS = ("outside_steal", "outside_steal_wide", "outside_steal_placebo")
CONDITIONAL = VARIANTS[0]
ROLES = ("client", "server")
WINDOW_KINDS = ("user", "system", "irq", "softirq", "steal")  # seconds in window_cpu: <kind>_s
NOT_RECORDED = "not recorded"
PINNED, MACHINE = "pinned cores", "machine"  # what a run's cpu_<role>_<kind>_us columns sum


def share_col(variant: str) -> str:
    return f"{variant}_share"


def withheld_col(variant: str) -> str:
    return f"{variant}_withheld"


def _float(v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def conditional_fields(rec: dict) -> tuple[dict, dict[str, str]]:
    """(row fields, {variant: encoded histogram}) of one record's conditional histograms.

    A variant is withheld (its histogram not used) when the record says so, when it has no
    histogram, or when it does not cover both pinned cores (steal on a core not observed stays
    inside the "outside steal" histogram, so it would not be what its name says)."""
    lat = rec.get("latency") or {}
    row: dict = {}
    encoded: dict[str, str] = {}
    for v in VARIANTS:
        part = lat.get(v)
        if not isinstance(part, dict):
            row[share_col(v)], row[withheld_col(v)] = math.nan, NOT_RECORDED
            continue
        row[share_col(v)] = _float(part.get("left_out_share"))
        h = part.get("hist") or part.get("histogram")
        cores = set(part.get("cores") or [])
        reason = part.get("withheld") or ""
        if not reason and not h:
            reason = "no histogram"
        if not reason and not set(ROLES) <= cores:
            missing = ", ".join(r for r in ROLES if r not in cores)
            reason = f"steal on the {missing} core not observed"
        row[withheld_col(v)] = str(reason)
        if not reason:
            encoded[v] = h
    return row, encoded


def answered(rec: dict) -> float:
    """Requests answered in the measurement window: counts.ok (the requests counted in the
    latency histogram), else counts.requests."""
    counts = rec.get("counts") or {}
    n = _float(counts.get("ok"))
    return n if n == n else _float(counts.get("requests"))


def window_cpu_fields(rec: dict) -> dict:
    """cpu_<role>_<kind>_us (CPU µs per answered request on the role's pinned cores) and
    instructions_<role>_per_request, with cpu_scope = PINNED; {} for records without window_cpu
    (their machine-wide figures, dataset.cpu_per_request, stay, scope MACHINE)."""
    metrics = rec.get("metrics") or {}
    w = metrics.get("window_cpu") if isinstance(metrics, dict) else None
    n = answered(rec)
    if not isinstance(w, dict) or not n or n != n or n <= 0:
        return {}
    out: dict = {"cpu_scope": PINNED}
    for role in ROLES:
        cpu = w.get(role)
        for kind in WINDOW_KINDS:
            s = _float(cpu.get(f"{kind}_s")) if isinstance(cpu, dict) else math.nan
            out[f"cpu_{role}_{kind}_us"] = s / n * 1e6
        idle, span = (_float(cpu.get(k)) if isinstance(cpu, dict) else math.nan for k in ("idle_s", "span_s"))
        out[f"cpu_{role}_idle_share"] = idle / span if span and span > 0 else math.nan
    instr = metrics.get("instructions")
    for role in ROLES:
        v = instr.get(role) if isinstance(instr, dict) else None
        if isinstance(v, dict):
            v = v.get("instructions")
        out[f"instructions_{role}_per_request"] = _float(v) / n
    return out


FIELDS_OF_RECORD = ("window_cpu", "instructions")  # metrics keys that are not hosts (dataset.cpu_per_request)
