"""A pytest plugin: writes {test id: outcome} to $CNIBENCH_OUTCOMES when the session ends."""

import json
import os

_OUT: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        if report.nodeid not in _OUT or report.outcome != "passed":
            _OUT[report.nodeid] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("CNIBENCH_OUTCOMES")
    if path:
        with open(path, "w") as f:
            json.dump(_OUT, f, indent=1)
