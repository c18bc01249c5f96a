"""A pytest plugin for the tests of the tests only: every run's guards say "ok" whatever their
figures (`-p always_ok_guard` with this folder on sys.path). The hog test must then fail."""

from cnibench.workload import guards


def pytest_configure(config):
    guards.verdict_of = lambda checks: ("ok", "", [])
    guards.disturbed = lambda checks: False
