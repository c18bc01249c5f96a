"""infra/packages.py: the CNI parts are in `invoke test`'s list, and an install leaves no
service a package brought running or enabled, and any earlier policy-rc.d as it was."""

from __future__ import annotations

import os
import subprocess

import pytest

from cnibench.infra import packages


def test_cni_parts_are_installed_for_the_tests():
    pkgs = set(packages.FOR_TESTS.values())
    assert {"containernetworking-plugins", "bird2", "iptables"} <= pkgs


def test_bird_is_disabled_and_stopped_only_under_a_running_systemd():
    assert packages.service_commands(["bird2", "curl"], running=True) == [["systemctl", "disable", "--now", "bird.service"]]
    assert packages.service_commands(["bird2"], running=False) == [["systemctl", "disable", "bird.service"]]
    assert packages.service_commands(["curl"], running=True) == []
    assert packages.service_commands(["nginx-light", "openssh-server"], running=False) == [["systemctl", "disable", "nginx.service"]]


def _refuses(path):
    return subprocess.run([path, "bird", "start"]).returncode == 101  # invoke-rc.d's "forbidden"


def test_policy_rc_refuses_starts_and_is_removed_when_there_was_none(tmp_path):
    path = str(tmp_path / "policy-rc.d")
    with packages.services_refused(path):
        assert _refuses(path)
    assert not os.path.exists(path)


def test_an_earlier_policy_rc_is_put_back_byte_for_byte(tmp_path):
    path = tmp_path / "policy-rc.d"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o700)
    with pytest.raises(RuntimeError):
        with packages.services_refused(str(path)):
            assert _refuses(str(path))
            raise RuntimeError("the install failed")
    assert path.read_text() == "#!/bin/sh\nexit 0\n" and (path.stat().st_mode & 0o777) == 0o700
