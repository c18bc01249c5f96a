"""The timing tests can fail: run on demand (`invoke test-the-tests`; CNIBENCH_TEST_THE_TESTS=1),
not in every suite run (about 5 minutes on the testbed).

- A deliberately broken generator (CNIBENCH_BREAK_PACING=1 builds cnib-openloop with
  CNIB_BREAK_PACING: it sleeps 300 us every 10 ms of its schedule) must fail every pacing test
  of tests/integration/test_openloop.py. Its sleeps are its own stalls, which the tests do not
  excuse; a test may still skip when the machine took the generator's core away beyond the cap
  (that is the machine, and the skip names it), but none may pass.
- A guard that always says "ok" (the always_ok_guard plugin) must fail the hog test of
  tests/integration/test_hygiene_study.py.

Each runs the real tests in a child pytest and reads its outcome per test from a JSON report
written by the small plugin below (no parsing of pytest's text)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PACING = ("test_uniform_sends_keep_the_schedule or test_poisson_arrivals_have_dispersion_one or "
          "test_two_threads_interleave_into_one_schedule or test_a_stopped_generator_lists_the_stall")


def outcomes(args: list[str], env: dict[str, str], tmp_path: Path) -> dict[str, tuple[str, str]]:
    """{test id: (passed|failed|skipped, reason)} of a child pytest over `args` (printed too)."""
    report = tmp_path / "outcomes.json"
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "CNIBENCH_OUTCOMES": str(report)}
    env.pop("CNIBENCH_TEST_THE_TESTS", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "outcome_report", "-p", "no:cacheprovider", *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    print(r.stdout[-6000:])
    assert report.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    got = json.loads(report.read_text())
    for test, (outcome, reason) in got.items():
        print(f"{outcome:8s} {test} {reason[-300:]}")
    return {test: (outcome, reason) for test, (outcome, reason) in got.items()}


def test_a_generator_that_sleeps_by_itself_fails_every_pacing_test(tmp_path):
    got = outcomes(["tests/integration/test_openloop.py", "-k", PACING], {"CNIBENCH_BREAK_PACING": "1"}, tmp_path)
    assert len(got) >= 11, got
    passed = [t for t, (o, _) in got.items() if o == "passed"]
    failed = [t for t, (o, why) in got.items() if o == "failed"]
    assert not passed, f"the broken generator passed {passed} (all outcomes: {got})"
    assert failed, f"no pacing test failed: {got}"
    # ... and each failed on its criterion, not on something else
    wrong = [t for t in failed if "no attempt met the criterion" not in got[t][1] and "missed criterion 1" not in got[t][1]]
    assert not wrong, f"failed for another reason: {[(t, got[t][1]) for t in wrong]}"


def test_a_guard_that_always_says_ok_fails_the_hog_test(tmp_path):
    got = outcomes(["tests/integration/test_hygiene_study.py", "-k", "test_hog_marks_the_run", "-p", "always_ok_guard"], {},
                   tmp_path)
    ((outcome, why),) = got.values()
    if outcome == "skipped":
        pytest.skip(f"the hog test skipped, so it could not be shown to fail: {why}")
    assert outcome == "failed" and "the guard said 'ok'" in why, got
