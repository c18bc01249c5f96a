"""A declared family of pairs, besides "every arm vs the reference": each arm "<mode>·<impl>"
(study key `implementations`, study/implementations.py) against its own mode's project arm,
Holm over that family, by the study's estimator (the same `arm_family` as the headline's).

`family_rows(ds)` gives, per size and headline percentile, the ratio impl/project over the band
with its 95 % CI and a verdict ("slower", "faster", "equivalent", "cannot separate"); `gate(rows)`
names every pair whose verdict is "slower" or "faster" where the differences list
(modes/cni_differences.yml), written before the run, does not predict that sign. The report's
hook is `section(ds, an)` (one table, none when the study declares no pairs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..study.implementations import SEP, listed_versions, predicted_sign
from .dataset import Dataset, pcol
from .estimators import POOLED, CANNOT, Histograms
from .paired import ALPHA, EQUIVALENT, FASTER, INCONCLUSIVE, MARGIN, SLOWER
from .stats import BAND, HEADLINE_PERCENTILES, NOT_SUSTAINED, Band, arm_family, attempts, in_band, run_values

COLUMNS = ["size", "percentile", "arm", "against", "mode", "blocks", "ratio", "ratio_lo", "ratio_hi", "p_holm",
           "verdict", "predicted", "gate"]
VERDICTS = {SLOWER: "slower", FASTER: "faster", EQUIVALENT: "equivalent", INCONCLUSIVE: "cannot separate",
            CANNOT: "cannot separate"}
SIGN_OF = {"slower": "higher", "faster": "lower"}


def declared(arms) -> list[tuple[str, str, str]]:
    """(arm, its project arm, mode) for every "<mode>·<impl>" arm whose mode ran too (pure)."""
    arms = list(arms)
    out = []
    for a in arms:
        mode, sep, impl = a.partition(SEP)
        if sep and impl != "A/A" and mode in arms:
            out.append((a, mode, mode))
    return out


def family_rows(ds: Dataset, band=BAND, margin: float = MARGIN, alpha: float = ALPHA, estimator: str = POOLED,
                version: str | None = None) -> pd.DataFrame:
    att = attempts(run_values(ds, HEADLINE_PERCENTILES))
    band_att = att[in_band(att["load_fraction"], band)] if not att.empty else att
    pairs = declared(band_att["mode"].unique()) if len(band_att) else []
    rows = []
    for size in (sorted(set(band_att["size"])) if pairs else []):
        a = band_att[band_att["size"] == size]
        hists = Histograms(a, ds.hist, Band.of(a, pcol(50.0)).ok) if estimator == POOLED else None
        for p in HEADLINE_PERCENTILES:
            b = Band.of(a, pcol(p))
            ok = [(x, y, m) for x, y, m in pairs if not b.not_sustained(x) and not b.not_sustained(y)]
            f = arm_family(b, [x for x, _, _ in ok], [y for _, y, _ in ok], p, margin, alpha, hists)
            for i, (x, y, m) in enumerate(ok):
                verdict = VERDICTS[int(f["verdict"][i])] if f["n"][i] >= 2 else "cannot separate"
                rows.append(dict(size=size, percentile=p, arm=x, against=y, mode=m, blocks=int(f["n"][i]),
                                 ratio=np.exp(f["mean"][i]), ratio_lo=np.exp(f["lo"][i]), ratio_hi=np.exp(f["hi"][i]),
                                 p_holm=f["p_holm"][i], verdict=verdict))
            rows += [dict(size=size, percentile=p, arm=x, against=y, mode=m, blocks=0, verdict=NOT_SUSTAINED)
                     for x, y, m in pairs if (x, y, m) not in ok]
    return gate_column(pd.DataFrame(rows, columns=COLUMNS[:-2]), version)


def default_version() -> str | None:
    """The plugin version the signs are read for: the list's only one, else None (unknown)."""
    versions = listed_versions()
    return versions[0] if len(versions) == 1 else None


def gate_column(rows: pd.DataFrame, version: str | None = None) -> pd.DataFrame:
    """Each row's predicted sign and whether its verdict passes the gate (pure)."""
    version = version or default_version()
    rows = rows.copy()
    rows["predicted"] = [predicted_sign(version, m) for m in rows["mode"]] if len(rows) else []
    rows["gate"] = [("pass" if v not in SIGN_OF or SIGN_OF[v] == s else "FAIL: not predicted")
                    for v, s in zip(rows["verdict"], rows["predicted"])] if len(rows) else []
    return rows


def gate(rows: pd.DataFrame) -> list[str]:
    """Every pair called slower or faster without the differences list predicting that sign."""
    bad = rows[rows["gate"].astype(str).str.startswith("FAIL")] if len(rows) else rows
    return [f"{r.size} p{r.percentile:g}: {r.arm} vs {r.against} is {r.verdict}, the list predicts "
            f"latency {r.predicted or 'nothing (version not listed)'}" for r in bad.itertuples()]


def section(ds: Dataset, an) -> list[tuple[str, pd.DataFrame]]:
    """The report's table of the declared pairs (empty list: the study declares none)."""
    rows = family_rows(ds, an.band, an.margin, an.alpha, an.design.get("estimator", POOLED))
    if rows.empty:
        return []
    return [("Declared pairs: each implementation vs its mode's own (ratio, 95 % CI, Holm over the pairs; "
             "gate: slower/faster only where the differences list predicts it)", rows)]
