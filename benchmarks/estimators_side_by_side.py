"""Every band cell of a stored study under both estimators, side by side (issue 23's acceptance 4).

    python3 benchmarks/estimators_side_by_side.py data/processed/lab
    python3 benchmarks/estimators_side_by_side.py tests/fixtures/lab-b0 --markdown

Per size, mode (the A/A twin included, marked) and headline percentile: MDE and verdict of the
old estimator (block-t: mean of per-block log differences, paired t) and of the study's default
(pooled: ratio of pooled quantiles, exact swap test), and the median MDE per percentile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from cnibench.analysis import dataset, stats  # noqa: E402
from cnibench.analysis.estimators import BLOCK_T, POOLED  # noqa: E402

KEYS = ["size", "mode", "percentile"]


def side_by_side(ds: dataset.Dataset) -> pd.DataFrame:
    heads = {e: stats.analyze(ds, estimator=e).headline for e in (BLOCK_T, POOLED)}
    cols = KEYS + ["blocks", "mde_pct", "verdict"]
    m = heads[BLOCK_T][cols].merge(heads[POOLED][cols], on=KEYS, suffixes=("_block_t", "_pooled"))
    return m[m["percentile"].isin([50.0, 99.0])].reset_index(drop=True)


def _pct(v: float) -> str:
    return "—" if pd.isna(v) else ("> 1,000 %" if v > 1000 else f"{v:,.1f} %")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("processed", help="a processed study directory (data/processed/<study> or a fixture)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    a = ap.parse_args(argv)
    path = Path(a.processed)
    df = side_by_side(dataset.load(path.name, path))
    out = df.assign(mde_pct_block_t=df["mde_pct_block_t"].map(_pct), mde_pct_pooled=df["mde_pct_pooled"].map(_pct))
    if a.markdown:
        print("| size | mode | pct | blocks | MDE block-t | verdict block-t | MDE pooled | verdict pooled |")
        print("|---|---|---|---|---|---|---|---|")
        for r in out.itertuples():
            print(f"| {r.size} | {r.mode} | p{r.percentile:g} | {r.blocks_pooled} | {r.mde_pct_block_t} | "
                  f"{r.verdict_block_t} | {r.mde_pct_pooled} | {r.verdict_pooled} |")
    else:
        with pd.option_context("display.width", 200, "display.max_rows", 200):
            print(out.to_string(index=False))
    modes = df[~df["mode"].str.contains("·")]
    for p, g in modes.groupby("percentile"):
        print(f"p{p:g}: median MDE block-t {_pct(g['mde_pct_block_t'].median())}, "
              f"pooled {_pct(g['mde_pct_pooled'].median())}; answered (not inconclusive) block-t "
              f"{int((~g['verdict_block_t'].str.contains('inconclusive|cannot')).sum())} / pooled "
              f"{int((~g['verdict_pooled'].str.contains('inconclusive|cannot')).sum())} of {len(g)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
