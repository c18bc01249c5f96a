"""What a study design can tell, for given spreads of log quantiles (simulation, seconds).

    python3 benchmarks/stats_power.py                       # lab.yml's design, the stated spreads
    python3 benchmarks/stats_power.py --block 0.06 --run 0.12 --margin 0.2
    python3 benchmarks/stats_power.py --blocks 6 --loads-per-block 2   # 6 blocks of both loads

    python3 benchmarks/stats_power.py --from-study lab     # the pooled estimator on a study's histograms
    python3 benchmarks/stats_power.py --from-study tests/fixtures/lab-b0 --resamples 200

Spreads: standard deviations of log p99 between blocks (one mode set up once in one repetition)
and between runs inside a block; for each design prints: false separations and 95 % coverage
with no true difference, the share of exact-zero effects called equivalent, the share of +30 %
effects detected, and the median MDE (the block-t estimator, synthetic.simulate_design).

--from-study NAME|DIR (data/processed/<name>, or a processed directory such as the committed
fixture) simulates the pooled estimator by resampling the study's own reference runs
(analysis/resample.py): two arms of --blocks pairs, one with --effect added as a per-request
delay drawn from the reference's own distribution; per size and percentile, detection at Holm's
first step over --modes, false separations, and the SE of the pooled and block-t estimators.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from cnibench.analysis import synthetic  # noqa: E402
from cnibench.study.matrix import loads_of_repetition  # noqa: E402
from cnibench.study.spec import load_study  # noqa: E402

STATED = ((0.05, 0.05), (0.07, 0.10), (0.10, 0.10))  # keep in step with tests/unit/test_stats_design.py


def lab_design(path="studies/lab.yml"):
    s = load_study(Path(__file__).resolve().parents[1] / path)
    return s.repetitions, len(loads_of_repetition(s, 1)), len(s.modes) - 1, s.analysis.get("equivalence_margin", 0.10)


def from_study(a) -> int:
    import pandas as pd

    from cnibench.analysis import dataset, resample
    from cnibench.infra import config

    path = Path(a.from_study) if Path(a.from_study).is_dir() else config.PROCESSED / a.from_study
    ds = dataset.load(Path(a.from_study).name, path)
    print(f"{path}: {a.resamples} resamples of {a.blocks} pairs of the reference's own runs, effect "
          f"+{100 * a.effect:.0f} % as an added delay, detection at alpha / {a.modes}")
    for size in ds.sizes():
        df = resample.resample(ds, size, a.effect, a.resamples, a.blocks, a.modes)
        with pd.option_context("display.width", 200):
            print(f"\n{size}\n" + resample.summary(df).round(3).to_string())
    return 0


def main(argv=None) -> int:
    blocks, lpb, modes, margin = lab_design()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=float, help="block-to-block SD of log p99 (default: the stated spreads)")
    ap.add_argument("--run", type=float, help="run-to-run SD of log p99")
    ap.add_argument("--blocks", type=int, default=blocks)
    ap.add_argument("--loads-per-block", type=int, default=lpb)
    ap.add_argument("--modes", type=int, default=modes, help="modes compared with the reference")
    ap.add_argument("--margin", type=float, default=margin)
    ap.add_argument("--effect", type=float, default=0.30)
    ap.add_argument("--studies", type=int, default=4000)
    ap.add_argument("--from-study", help="resample this study's histograms (data/processed/<name> or a directory)")
    ap.add_argument("--resamples", type=int, default=200)
    a = ap.parse_args(argv)
    spreads = [(a.block, a.run)] if a.block is not None and a.run is not None else STATED
    if a.from_study:
        return from_study(a)
    print(f"design: {a.blocks} blocks x {a.loads_per_block} loads per block, {a.modes} modes vs the reference, "
          f"margin +-{100 * a.margin:.0f} %, effect +{100 * a.effect:.0f} %, {a.studies} studies")
    print("block  run   | false sep. | coverage | equivalent | detected | median MDE")
    for sb, sr in spreads:
        r = synthetic.simulate_design(a.blocks, a.loads_per_block, a.modes, sb, sr, a.margin, a.effect,
                                      studies=a.studies)
        print(f"{sb:<6.3g} {sr:<5.3g} | {r['false_separation']:10.3f} | {r['coverage']:8.3f} | {r['equivalent']:10.3f} "
              "| "
              f"{r['detected']:8.3f} | {100 * r['mde']:8.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
