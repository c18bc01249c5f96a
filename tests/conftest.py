"""Shared fixtures. Integration tests use the real local testbed (root, namespaces, sshd).

The testbed is one per machine, so tests (and people) that use it take an exclusive lock on
LOCK_PATH; wrap manual use in `flock /run/cnibench-dev.lock …`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Tests never write into the project's data/, figures/ or reports/ (nor read its calibrations):
# set before any cnibench module is imported, inherited by child processes and notebook kernels.
_OWN_OUTPUT = "CNIBENCH_OUTPUT" not in os.environ
os.environ.setdefault("CNIBENCH_OUTPUT", tempfile.mkdtemp(prefix="cnibench-tests-"))


def pytest_sessionfinish(session, exitstatus):
    if _OWN_OUTPUT and not os.environ.get("CNIBENCH_LOCK_HELD"):
        shutil.rmtree(os.environ["CNIBENCH_OUTPUT"], ignore_errors=True)

# tests/meta/ (the tests of the tests: a broken generator and an always-ok guard must fail the
# timing tests) runs on demand only: `invoke test-the-tests`.
collect_ignore = [] if os.environ.get("CNIBENCH_TEST_THE_TESTS") == "1" else ["meta"]

LOCK_PATH = "/run/cnibench-dev.lock"
INTEGRATION = Path(__file__).parent / "integration"


# The long tier: cases that repeat a path another case of the suite already drives (another
# mode of the same plugin chain, the other signal, ...). They run with `invoke test --long`
# (CNIBENCH_LONG_TESTS=1); the README's test command leaves them out so that the suite stays
# under its 10-minute budget on 2 cores.
LONG = os.environ.get("CNIBENCH_LONG_TESTS") == "1"
LONG_REASON = "long tier (the suite keeps to 10 minutes): run it with `invoke test --long`"


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ needs root and the testbed: marked `root` by its path.
    Tests marked `long` skip, saying so, unless the long tier was asked for."""
    for item in items:
        if INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.root)
        if not LONG and item.get_closest_marker("long"):
            item.add_marker(pytest.mark.skip(reason=LONG_REASON))


def root_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the testbed creates network namespaces (run the tests as root)"
    for tool in ("ip", "sshd", "ssh-keygen", "nsenter"):
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")):
            return f"needs '{tool}' (apt-get install -y iproute2 openssh-server openssh-client util-linux)"
    probe = subprocess.run(["ip", "netns", "add", "cnib-probe-ns"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "cnib-probe-ns"], capture_output=True)
    return None


_REASON = None


def _needs_root_reason():
    global _REASON
    if _REASON is None:
        _REASON = root_skip_reason() or ""
    return _REASON


@pytest.fixture(scope="session")
def needs_root():
    reason = _needs_root_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def testbed_lock(needs_root):
    if os.environ.get("CNIBENCH_LOCK_HELD"):  # a child pytest run by a test that holds it
        yield
        return
    with open(LOCK_PATH, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def testbed(testbed_lock):
    """The local testbed, up for the whole session and down at the end (also on failure)."""
    from cnibench.infra import testbed as tb
    from cnibench.infra.config import load_inventory

    tb.down()  # a clean start even if an earlier run was killed
    try:
        tb.up()
        yield load_inventory(tb.generated_inventory_path())
    finally:
        tb.down()


@pytest.fixture
def with_fleet(testbed):
    """Run `async def body(fleet, *args)` with a connected Fleet over the testbed.

    asyncssh connections belong to one event loop, so each call opens its own loop and fleet:
        def test_x(with_fleet):
            async def body(fleet):
                return await fleet.client.run(["true"])
            assert with_fleet(body).ok
    """
    from cnibench.infra.hosts import Fleet

    def run(body, *args):
        async def main():
            async with Fleet(testbed) as fleet:
                return await body(fleet, *args)

        return asyncio.run(main())

    return run


# The quiet-machine check the studies run before each block (workload/quiet.py), for timing tests:
# other processes (not ours) may use at most max_cpu cores, waited for up to max_wait_s.
QUIET_CHECK = {"max_cpu": 0.15, "window_s": 0.5, "max_wait_s": 20}


@pytest.fixture
def quiet_machine(with_fleet):
    """A timing test's precondition: skip, naming the measured figure, when other processes keep
    the machine busy (what such a test measures would then be theirs, not the project's)."""
    from cnibench.workload.quiet import wait_quiet

    entry = with_fleet(lambda fleet: wait_quiet(fleet, QUIET_CHECK, out=lambda _: None))
    if not entry["quiet"]:
        pytest.skip(f"the machine is not quiet: other processes used {entry['other_cpu']} cores (quiet check, limit "
                    f"{QUIET_CHECK['max_cpu']} cores) after waiting {entry['waited_s']} s")
    return entry
