"""A pytest plugin: writes {test id: [outcome, reason]} to $CNIBENCH_OUTCOMES when the session ends."""

import json
import os

_OUT: dict[str, list] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        if report.nodeid not in _OUT or report.outcome != "passed":
            if report.skipped and isinstance(report.longrepr, tuple):
                reason = str(report.longrepr[2])[:400]
            else:  # a failure: the head of its crash message (what failed) and the end of the report
                crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", "") or ""
                reason = crash[:300] + " ... " + str(report.longrepr or "")[-1200:]
            _OUT[report.nodeid] = [report.outcome, reason]


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("CNIBENCH_OUTCOMES")
    if path:
        with open(path, "w") as f:
            json.dump(_OUT, f, indent=1)
