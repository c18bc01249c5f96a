"""Benchmark: analysis + figures over 1,000 synthetic runs (target <= 60 s), raw bytes per run (<= 64 KB).

    python benchmarks/analysis_bench.py [--runs 1000] [--repeat 3]

Writes the synthetic study once into a temporary directory, then times dataset -> statistics ->
figures (-> report) `repeat` times and prints the median, plus max and mean record size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from cnibench.analysis import dataset, plots, report, stats, synthetic  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    # 8 modes x 2 sizes x 9 loads = 144 cells; repetitions to reach the run count
    loads = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.7, 0.9)
    reps = max(1, round(args.runs / (8 * 2 * len(loads))))
    with tempfile.TemporaryDirectory(prefix="cnib-bench-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        paths = synthetic.write_study(base / "raw", loads=loads, reps=reps, seed=7,
                                      invalid_fraction=0.02, failed_fraction=0.01, duration_s=30)
        gen = time.perf_counter() - t
        sizes = [p.stat().st_size for p in paths]
        print(f"{len(paths)} synthetic runs written in {gen:.1f} s "
              f"(30 s windows, 2 hosts x 2 CPUs of metrics, 1 s timeline)")
        print(f"raw storage per run: max {max(sizes) / 1024:.1f} KB, mean {statistics.mean(sizes) / 1024:.1f} KB "
              f"(limit 64 KB)")
        times, stages = [], []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            ds = dataset.build_and_save("synthetic", base / "raw", base / f"proc{i}")
            t1 = time.perf_counter()
            an = stats.analyze(ds)
            t2 = time.perf_counter()
            plots.make_all(ds, an, base / f"fig{i}")
            t3 = time.perf_counter()
            times.append(t3 - t0)
            stages.append((t1 - t0, t2 - t1, t3 - t2))
            print(f"run {i + 1}: {t3 - t0:.1f} s (dataset {t1 - t0:.1f}, statistics {t2 - t1:.1f}, figures "
                  f"{t3 - t2:.1f})")
        t = time.perf_counter()
        report.build_all("synthetic", base / "raw", base / "rep", base / "procR", base / "figR")
        full = time.perf_counter() - t
        med = statistics.median(times)
        print(f"analysis + figures, median of {args.repeat}: {med:.1f} s (limit 60 s); "
              f"whole build_all incl. report: {full:.1f} s")
        return 0 if med <= 60 and max(sizes) <= 64 * 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
