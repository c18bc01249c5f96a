#!/usr/bin/env python3
"""Nothing outlives a killed study (issue 22): SIGKILL `invoke run-all --study quick` at a
random time, then check that nothing it started is left, that `invoke bench` works at once,
and that the same run-all resumes to a complete, clean study.

    sudo flock /run/cnibench-dev.lock python3 benchmarks/kill_bench.py --trials 10

Each trial: start run-all; SIGKILL the invoke process (only it: whatever it started must die
by itself) at a uniformly random time in the kill window after its start; wait 5 s and list
what that run started and is still running; run `invoke bench --mode host --size small
--rate 5000 --duration 2`; run the same run-all to completion. A process counts as started by
the run when it is new since the trial began and either carries the trial's environment marker
(local children: notebook kernels, ...) or runs in one of the testbed's network namespaces and
is not the testbed's own sshd listener (nginx, generator, samplers, hiccup meters, SSH
sessions). The output goes to a scratch CNIBENCH_OUTPUT (the clone's data/ is never touched);
the reference's calibration is kept between trials, the study's records are not.

Prints one line per trial and a verdict; exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "CNIBENCH_KILL_TRIAL"
INVOKE = [sys.executable, "-m", "invoke"]
BENCH = ["bench", "--mode", "host", "--size", "small", "--rate", "5000", "--duration", "2"]


def pids() -> set[int]:
    return {int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()}


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def testbed_netns() -> set[int]:
    """Inodes of the testbed's network namespaces (hosts and pods: named cnib-*)."""
    out = set()
    for p in Path("/run/netns").glob("cnib-*") if Path("/run/netns").exists() else []:
        try:
            out.add(p.stat().st_ino)
        except OSError:
            pass
    return out


def netns_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[:1] not in (["Z"], ["X"])


def started_by(trial: str, before: set[int], spaces: set[int]) -> list[str]:
    """What the killed run started and is still running: '<pid> <command line>' each."""
    out = []
    for pid in sorted(pids() - before):
        if pid == os.getpid() or not alive(pid):
            continue
        cmd = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        marked = f"{MARK}={trial}".encode() in _read(f"/proc/{pid}/environ")
        in_testbed = netns_of(pid) in spaces
        listener = cmd.startswith("sshd") and "@" not in cmd  # the testbed's own sshd (testbed.up)
        if marked or (in_testbed and not listener):
            out.append(f"{pid} {cmd[:100]}")
    return out


def invoke(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([*INVOKE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def check_study(output: Path, study: str) -> list[str]:
    """Each planned run has exactly one record (attempts aside), and no temporary file is left."""
    raw = output / "data" / "raw" / study
    problems = []
    try:
        planned = json.loads((raw / "manifest.json").read_text())["order"]
    except (OSError, ValueError, KeyError) as exc:
        return [f"no manifest ({exc.__class__.__name__})"]
    for rid in planned:
        n = len(list((output / "data" / "raw").glob(f"{rid}.json")))
        if n != 1:
            problems.append(f"{rid}: {n} records")
    temps = [str(p) for p in (output / "data").rglob("*.tmp")]
    if temps:
        problems.append(f"temporary files left: {temps[:3]}")
    return problems


def trial(k: int, args, env: dict) -> dict:
    for d in ("raw", "runs", "processed"):
        shutil.rmtree(Path(env["CNIBENCH_OUTPUT"]) / "data" / d / args.study, ignore_errors=True)
    mark = uuid.uuid4().hex[:12]
    before, t0 = pids(), time.monotonic()
    run = subprocess.Popen([*INVOKE, "run-all", "--study", args.study, "--no-progress"], cwd=ROOT,
                           env={**env, MARK: mark}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_at = random.uniform(*args.kill_window)
    time.sleep(max(0.0, kill_at - (time.monotonic() - t0)))
    finished_first = run.poll() is not None
    run.send_signal(signal.SIGKILL)
    run.wait()
    time.sleep(5)
    left = started_by(mark, before, testbed_netns())
    bench = invoke(BENCH, env, 300)
    again = invoke(["run-all", "--study", args.study, "--no-progress"], env, args.timeout)
    problems = check_study(Path(env["CNIBENCH_OUTPUT"]), args.study)
    out = {"trial": k, "killed_at_s": round(kill_at, 1), "finished_before_kill": finished_first, "left": left,
           "bench_exit": bench.returncode, "run_all_exit": again.returncode, "problems": problems}
    if bench.returncode:
        out["bench_tail"] = (bench.stderr or bench.stdout).strip().splitlines()[-3:]
    if again.returncode:
        out["run_all_tail"] = (again.stderr or again.stdout).strip().splitlines()[-3:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--study", default="quick")
    ap.add_argument("--kill-window", type=float, nargs=2, default=(5.0, 60.0), metavar=("FROM_S", "TO_S"),
                    help="SIGKILL run-all uniformly in this many seconds after its start (default 5 60)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds the resumed run-all may take")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--output", type=Path, default=None,
                    help="scratch CNIBENCH_OUTPUT (default: a new temporary directory)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("kill_bench needs root (the testbed)", file=sys.stderr)
        return 2
    random.seed(args.seed)
    output = args.output or Path(tempfile.mkdtemp(prefix="cnib-kill-bench-"))
    env = {**os.environ, "CNIBENCH_OUTPUT": str(output), "PYTHONPATH": str(ROOT / "lib")}
    results, bad = [], 0
    for k in range(1, args.trials + 1):
        r = trial(k, args, env)
        results.append(r)
        ok = not r["left"] and r["bench_exit"] == 0 and r["run_all_exit"] == 0 and not r["problems"]
        bad += not ok
        print(f"trial {k}: killed at {r['killed_at_s']} s{' (had finished)' if r['finished_before_kill'] else ''}; "
              f"left {len(r['left'])}; bench exit {r['bench_exit']}; run-all exit {r['run_all_exit']}; "
              f"problems {len(r['problems'])}"
              f"{'' if ok else '  ' + json.dumps({k_: r[k_] for k_ in r if k_ not in ('trial',)})}",
              flush=True)
    commands = 2 * len(results)
    exits = sum((r["bench_exit"] == 0) + (r["run_all_exit"] == 0) for r in results)
    print(f"{len(results)} trials: {sum(not r['left'] for r in results)} left nothing running, "
          f"{exits} of {commands} commands exited 0, "
          f"{sum(not r['problems'] for r in results)} complete and clean studies; "
          f"output in {output}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
