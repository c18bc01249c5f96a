"""Tiers: groups of modes the data cannot separate, from a family of pairwise band verdicts."""

from __future__ import annotations

import numpy as np

from .dataset import order_modes


def tier_rows(b, size, p, fam: list[dict], not_sustained: str, is_twin) -> list[dict]:
    """Modes by band latency; a tier is its best mode and every later mode the data cannot
    separate from that leader. Cross-tier pairs that cannot be separated are listed too, so the
    tiers never read as a stricter ranking than the tests allow. Modes not sustained come last."""
    verdict = {(r["mode_a"], r["mode_b"]): r["verdict"] for r in fam}

    def separated(x, y):
        v = verdict.get((x, y)) or verdict.get((y, x))
        return v is not None and v.endswith(" lower")

    sustained = [m for m in b.modes if not b.not_sustained(m) and not is_twin(m)]
    score = {m: float(b.block_values(m).mean()) if len(b.block_values(m)) else np.inf for m in sustained}
    tiers: list[list[str]] = []
    for m in sorted(sustained, key=lambda m: score[m]):
        if tiers and not separated(m, tiers[-1][0]):
            tiers[-1].append(m)
        else:
            tiers.append([m])
    rows = []
    for i, t in enumerate(tiers, 1):
        others = [o for j, tt in enumerate(tiers, 1) if j != i for o in tt]
        overlap = sorted({o for o in others for m in t if not separated(m, o)})
        text = ", ".join(t) + (" (cannot separate)" if len(t) > 1 else "")
        if overlap:
            text += "; not separable either from " + ", ".join(order_modes(overlap))
        rows.append(dict(size=size, percentile=p, tier=i, modes=",".join(t), text=text))
    ns = [m for m in b.modes if m not in sustained and not is_twin(m)]
    if ns:
        rows.append(dict(size=size, percentile=p, tier=len(tiers) + 1, modes=",".join(ns),
                         text=f"{not_sustained}: " + ", ".join(ns)))
    return rows
