"""The C builder's message when a build fails (issue 27): the compiler's first `error:` line and,
for a missing system header, the package to install -- from the real compiler's output."""

import shutil
import subprocess

import pytest

from cnibench.infra import cbuild
from cnibench.workload import loadgen


def _compile(tmp_path, text: str) -> subprocess.CompletedProcess:
    src = tmp_path / "x.c"
    src.write_text(text)
    return subprocess.run(["sh", "-c", cbuild.build_script(), "cnib-build", str(tmp_path / "x"), str(src)],
                          capture_output=True, text=True)


needs_cc = pytest.mark.skipif(shutil.which(cbuild.COMPILER) is None, reason="no C compiler (cc) on this machine")


@needs_cc
@pytest.mark.parametrize("header, package", [("linux/cnib_missing.h", "linux-libc-dev"),
                                             ("sys/cnib_missing.h", "libc6-dev"),
                                             ("bpf/cnib_missing.h", "libbpf-dev")])
def test_a_missing_header_names_the_first_error_and_the_package(tmp_path, header, package):
    r = _compile(tmp_path, f"#include <{header}>\nint main(void) {{ return 0; }}\n")
    assert r.returncode != 0 and "compilation terminated" in r.stderr  # what the old message showed
    why = cbuild.build_failure(r.stderr, r.returncode)
    assert f"fatal error: {header}: No such file or directory" in why, why
    assert why.endswith(f"apt-get install -y {package}") and "compilation terminated" not in why


@needs_cc
def test_a_syntax_error_shows_its_first_error_line(tmp_path):
    r = _compile(tmp_path, "int main(void) { return 0 }\nint f(void) { return undeclared_cnib; }\n")
    why = cbuild.build_failure(r.stderr, r.returncode)
    assert "error:" in why and "expected" in why and "undeclared_cnib" not in why and "apt-get" not in why, why


def test_no_error_line_keeps_the_last_line_or_the_exit():
    assert cbuild.build_failure("no compiler (cc): apt-get install -y build-essential\n", 3).startswith("no compiler")
    assert cbuild.build_failure("", 7) == "exit 7"
    assert cbuild.header_package("stdio.h") == "libc6-dev" and cbuild.header_package("asm/types.h") == "linux-libc-dev"


def test_loadgen_is_a_csource():
    prog = loadgen.PROGRAMS["openloop"]
    assert isinstance(prog, cbuild.CSource) and prog.read() == loadgen.source("openloop")
    assert loadgen.binary_path("openloop") == prog.path()
