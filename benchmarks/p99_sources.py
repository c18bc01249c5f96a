"""What the p99 standard error of a stored study is made of (issue 23's acceptance 2, by source).

    python3 benchmarks/p99_sources.py tests/fixtures/lab-b0
    python3 benchmarks/p99_sources.py data/processed/lab --raw data/raw/lab --k 5

Per mode x size cell of the 30-50 % band: the SE of the band log p99 ratio against the reference
under both estimators, block-t (SD of the per-block log p99 differences / sqrt n) and pooled
(analysis/pooled.compare over the same complete pairs), first with every complete pair, then with
the pairs that hold a "catastrophic window" left out: a run whose p99 exceeds K times the median
p99 of its arm, size and load. The median over cells of pooled / block-t is the issue's gate.
With --raw (the study's raw records), each catastrophic window is listed with what the record
says happened in it: the second its p99 came from, TCP retransmits per request, steal on the
pinned cores, the generator's off-CPU time by cause, the hiccup meter's largest stall.

Leaving pairs out is a diagnosis, not an estimator: the report never does it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from cnibench.analysis import dataset, pooled  # noqa: E402

BAND = (0.29, 0.51)


def in_band_runs(runs: pd.DataFrame, k: float) -> pd.DataFrame:
    """The band's ok runs, each marked `catastrophic` when its p99 > k x its arm/size/load median."""
    ok = runs[runs["valid"] & (runs["status"] == "ok") & runs["load_fraction"].between(*BAND)].copy()
    med = ok.groupby(["arm", "size", "target_rate"])["p99"].transform("median")
    return ok.assign(median_p99=med, catastrophic=ok["p99"] > k * med)


def complete_pairs(runs: pd.DataFrame, size: str, arm: str, ref: str) -> list[tuple]:
    """(repetition, load, run of arm, run of ref) for every block both arms completed."""
    r = runs[runs["size"] == size]
    a = {(x.repetition, x.target_rate): x for x in r[r["arm"] == arm].itertuples()}
    b = {(x.repetition, x.target_rate): x for x in r[r["arm"] == ref].itertuples()}
    return [(k[0], k[1], a[k], b[k]) for k in sorted(set(a) & set(b))]


def se_both(hist: dict, pairs: list[tuple], p: float = 99.0) -> tuple[float, float]:
    """(block-t SE, pooled SE) of the band log ratio over these pairs."""
    if len(pairs) < 2:
        return float("nan"), float("nan")
    d = np.log([a.p99 for *_, a, _ in pairs]) - np.log([b.p99 for *_, _, b in pairs])
    block_t = float(d.std(ddof=1) / np.sqrt(len(d)))
    blocks = [(i, load, (hist[a.run_id], hist[b.run_id])) for i, (_, load, a, b) in enumerate(pairs)]
    return block_t, float(pooled.compare(pooled.Pairs.of(blocks), p, 0.15, 0.05)["se"])


def cells(ds: dataset.Dataset, k: float, ref: str = "host") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per cell: n, both SEs and their ratio, with every pair and without the catastrophic ones."""
    runs = in_band_runs(ds.runs, k)
    rows = []
    for size in sorted(set(runs["size"])):
        for arm in sorted(set(runs["arm"]) - {ref}):
            if "·" in arm:  # the A/A twin is not a cell
                continue
            all_pairs = complete_pairs(runs, size, arm, ref)
            calm = [x for x in all_pairs if not (x[2].catastrophic or x[3].catastrophic)]
            bt, po = se_both(ds.hist, all_pairs)
            bt2, po2 = se_both(ds.hist, calm)
            rows.append(dict(size=size, arm=arm, n=len(all_pairs), se_block_t=bt, se_pooled=po, ratio=po / bt,
                             n_calm=len(calm), se_block_t_calm=bt2, se_pooled_calm=po2, ratio_calm=po2 / bt2))
    return pd.DataFrame(rows), runs[runs["catastrophic"]]


def _check(rec: dict, guard: str):
    return next((c.get("value") for c in rec.get("hygiene", {}).get("checks", []) if c.get("guard") == guard), None)


def window_facts(rec: dict) -> dict:
    """What a raw record says about its window (all read as data, nothing executed)."""
    tl = rec.get("timeline") or []
    worst = max(tl, key=lambda s: s.get("p99_us", 0)) if tl else {}
    gi = (rec.get("settings") or {}).get("generator_info") or {}
    return dict(started=str(rec.get("started_at", ""))[11:19], worst_second=worst.get("t"),
                worst_second_p99_ms=round(worst.get("p99_us", 0) / 1000, 1),
                retransmits_per_request=_check(rec, "retransmits"), steal=_check(rec, "steal"),
                offcpu_ms_by_cause=gi.get("stall_ms_by_cause"), hiccup_max_us=_check(rec, "hiccup"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("processed", help="a processed study directory (data/processed/<study> or a fixture)")
    ap.add_argument("--raw", help="the study's raw directory (data/raw/<study>), to describe each window")
    ap.add_argument("--k", type=float, default=5.0, help="catastrophic: run p99 > K x its arm/size/load median")
    a = ap.parse_args(argv)
    path = Path(a.processed)
    ds = dataset.load(path.name, path)
    df, cat = cells(ds, a.k)
    with pd.option_context("display.width", 200):
        print(df.round(3).to_string(index=False))
    n_runs = int(in_band_runs(ds.runs, a.k).shape[0])
    print(f"\n{len(cat)} catastrophic windows (run p99 > {a.k:g} x median) of {n_runs} band runs")
    print(f"median over cells of pooled / block-t p99 SE: every pair {df['ratio'].median():.3f}; "
          f"without the catastrophic windows' pairs {df['ratio_calm'].median():.3f}")
    print(f"median p99 SE, block-t / pooled: every pair {df['se_block_t'].median():.3f} / "
          f"{df['se_pooled'].median():.3f}; without {df['se_block_t_calm'].median():.3f} / "
          f"{df['se_pooled_calm'].median():.3f}")
    for x in cat.sort_values("p99", ascending=False).itertuples():
        line = f"  {x.arm} {x.size} {x.target_rate:.0f} rep{x.repetition}: p99 {x.p99 / 1000:.1f} ms " \
               f"(median {x.median_p99 / 1000:.2f} ms)"
        rec_path = Path(a.raw or "") / x.arm.replace("·", "-").replace("/", "-") / x.size / \
            f"{x.target_rate:.0f}" / f"rep{x.repetition}.json"
        if a.raw and rec_path.exists():
            line += f" {window_facts(json.loads(rec_path.read_text()))}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
