"""Wall time of a whole study (`run-all`: testbed, precheck, calibration, runs, notebooks,
analysis) and the fraction of it spent inside measurement windows.

Run as root, alone on the machine (it uses the shared testbed):
    flock /run/cnibench-dev.lock python3 benchmarks/pipeline_bench.py --study quick
    flock /run/cnibench-dev.lock python3 benchmarks/pipeline_bench.py --study lab
Option: --notebooks warm|fresh|measure|none (override the study's). Calibration counts in
when the testbed has none saved yet (data/calibration/<inventory>/), else it is reused.

The study runs under a bench-only name in a temporary data directory, so real data is never
touched and every run is executed (nothing is resumed). Writes
benchmarks/results/pipeline-<study>-<notebooks>.json and prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cnibench.infra import config
from cnibench.pipeline import run_all
from cnibench.study.spec import resolve_study_path

RESULTS = Path(__file__).resolve().parent / "results"


def bench_study_file(study: str, workdir: Path) -> Path:
    """A copy of the study under a bench-only name, with its inventory made absolute."""
    src = resolve_study_path(study)
    data = yaml.safe_load(src.read_text())
    inv = data.get("inventory")
    data["inventory"] = str((src.parent / inv).resolve()) if inv else str(config.DEFAULT_INVENTORY)
    data["name"] = f"bench-{data.get('name') or src.stem}"
    dst = workdir / f"{data['name']}.yml"
    dst.write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="quick")
    ap.add_argument("--notebooks", default=None, choices=["warm", "fresh", "measure", "none"])
    ap.add_argument("--keep-data", action="store_true", help="keep the temporary data directory")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="cnib-bench-"))
    study_file = bench_study_file(args.study, work)
    t = time.monotonic()
    summary = run_all(study_file, progress=False, raw_dir=work / "raw", runs_dir=work / "runs",
                      reports_dir=work / "reports", notebooks=args.notebooks)
    wall = time.monotonic() - t
    runs = max(1, summary["executed"])
    result = {
        "study": args.study,
        "notebooks": args.notebooks or "study default",
        "wall_s": round(wall, 1),
        "runs": summary["executed"],
        "statuses": {k: summary[k] for k in ("ok", "invalid", "failed")},
        "measure_s": summary["measure_s"],
        "warmup_s": summary["warmup_s"],
        "fraction_in_measurement_windows": round(summary["measure_s"] / wall, 3),
        "fraction_under_load_incl_warmup": round((summary["measure_s"] + summary["warmup_s"]) / wall, 3),
        # calibration runs once per testbed (saved under data/calibration/): later run-alls skip it
        "fraction_without_calibration": round(summary["measure_s"] / max(1e-9, wall - summary["calibration_s"]), 3),
        "phases_s": {
            "study session (runner)": summary["wall_s"],
            "testbed up/down + precheck": round(wall - summary["wall_s"] - (summary.get("analysis_s") or 0), 1),
            "calibration": summary["calibration_s"],
            "runs (incl. per-run setup)": summary["runs_s"],
            "notebooks": summary["notebooks_s"],
            "modes up/down": summary["modes_s"],
            "analysis": summary.get("analysis_s"),
        },
        "per_run_overhead_s": round((summary["runs_s"] - summary["measure_s"] - summary["warmup_s"]) / runs, 2),
        "per_run_notebook_s": round(summary["notebooks_s"] / runs, 2),
        "report": summary.get("report"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pipeline-{Path(args.study).stem}-{args.notebooks or 'default'}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    if not args.keep_data:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"data kept in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
