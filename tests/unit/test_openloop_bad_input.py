"""cnib-openloop's own refusals (issue 27), from the real binary compiled here: more connections
than the hard open-file limit allows, a path longer than 512 bytes, values beyond its bounds -- one line on stderr,
exit 2, before any connection is opened (nothing listens on the port given)."""

import shutil
import subprocess

import pytest

from cnibench.workload import loadgen

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("prlimit") is None,
                                reason="needs a C compiler (cc) and prlimit (util-linux)")


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    out = tmp_path_factory.mktemp("ol") / "cnib-openloop"
    argv = loadgen.build_argv("openloop", str(loadgen.PROGRAMS["openloop"].file_path()), str(out))
    subprocess.run(argv, check=True, capture_output=True)
    return str(out)


BASE = ["--host", "127.0.0.1", "--port", "9", "--rate", "100", "--duration", "1", "--warmup", "0"]


def test_more_connections_than_the_hard_limit_is_one_message(binary):
    r = subprocess.run(["prlimit", "--nofile=500:1000", binary, *BASE, "--connections", "2000"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--connections 2000 needs 2064 open files; the hard limit is 1000" in r.stderr


def test_a_path_longer_than_512_bytes_is_one_message(binary):
    """(With a host name of at most 253 bytes the request then always fits its 1,024-byte buffer;
    resolve() checks that too.)"""
    r = subprocess.run([binary, *BASE, "--path", "/" + "x" * 600], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--path must start with /" in r.stderr, r.stderr


@pytest.mark.parametrize("arg, value", [("--threads", "257"), ("--pipeline", "65537"), ("--connections", "1000001")])
def test_beyond_its_bounds_is_one_message(binary, arg, value):
    r = subprocess.run([binary, *BASE, arg, value], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"{arg} must be a number in" in r.stderr, r.stderr
