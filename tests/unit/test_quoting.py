"""Commands are argv lists; values with shell syntax stay literal."""

import shlex
import subprocess

import pytest

from cnibench.infra.hosts import in_netns, quote

NASTY = ["a b", "it's", '"dq"', "x; rm -rf /tmp/nothing", "$(id)", "`id`", "$HOME", "a|b", "*", "", "new\nline", "back\\slash"]


@pytest.mark.parametrize("value", NASTY)
def test_value_survives_a_real_shell(value):
    # What sshd does with the command string: hand it to a shell. The value must come back as is.
    out = subprocess.run(["sh", "-c", quote(["printf", "%s", value])], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout == value


def test_argv_count_is_preserved():
    argv = ["echo", *NASTY]
    assert shlex.split(quote(argv)) == argv


def test_strings_are_refused():
    with pytest.raises(TypeError):
        quote("ip link show")


def test_in_netns():
    assert in_netns("cnib-a-pod", ["ip", "addr"]) == ["ip", "netns", "exec", "cnib-a-pod", "ip", "addr"]
    assert in_netns(None, ["ip", "addr"]) == ["ip", "addr"]
