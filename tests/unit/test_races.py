"""Process and file races (issue 12, item 10), without the testbed: write-once records under two
writers, the testbed's /run/sshd while another sshd runs, the probe namespaces clean sweeps.
(The nginx pid check of the workload sweep is in test_workload_session_parts.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

from cnibench import results
from cnibench.infra import testbed_proc
from cnibench.modes.clean import sweep_plan


def test_of_two_writers_of_one_record_exactly_one_wins(tmp_path, monkeypatch):
    path = tmp_path / "raw" / "s" / "rep1.json"
    barrier = threading.Barrier(2)
    real_link = os.link

    def link_together(src, dst):  # both writers reach the commit at the same moment
        barrier.wait(timeout=10)
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", link_together)
    outcomes = []

    def write(text):
        try:
            results.write_once_text(path, text)
            outcomes.append(("ok", text))
        except FileExistsError as exc:
            outcomes.append(("exists", str(exc)))

    threads = [threading.Thread(target=write, args=(t,)) for t in ('{"a": 1}', '{"b": 2}')]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    kinds = sorted(k for k, _ in outcomes)
    assert kinds == ["exists", "ok"], outcomes
    winner = next(t for k, t in outcomes if k == "ok")
    assert path.read_text() == winner
    assert os.listdir(path.parent) == ["rep1.json"]  # no temporary file left behind
    assert "write-once" in next(m for k, m in outcomes if k == "exists")


def test_testbed_down_keeps_a_run_sshd_another_sshd_uses(tmp_path):
    """A process whose command is `sshd` (the system's, started after testbed.up) is found and
    keeps the directory; once none runs, the (empty) directory the testbed made goes."""
    fake = tmp_path / "sshd"
    shutil.copy("/bin/sleep", fake)  # its comm is "sshd"
    run_sshd = tmp_path / "run-sshd"
    run_sshd.mkdir()
    proc = subprocess.Popen([str(fake), "100"])
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in testbed_proc.sshd_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.pid in testbed_proc.sshd_pids()
        assert testbed_proc.release_run_sshd(str(run_sshd)) is False and run_sshd.is_dir()
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in testbed_proc.sshd_pids()
    none = lambda: []  # noqa: E731  (other sshds may run on this machine: the test's own view)
    (run_sshd / "x").write_text("")  # never a directory with something in it
    assert testbed_proc.release_run_sshd(str(run_sshd), none) is False and run_sshd.is_dir()
    (run_sshd / "x").unlink()
    assert testbed_proc.release_run_sshd(str(run_sshd), none) is True and not run_sshd.exists()


def test_clean_sweeps_the_probe_namespaces_a_killed_hosts_check_leaves():
    argvs = [" ".join(a) for a in sweep_plan("client", ["cnib-probe-3fa2c1", "cnib-client-probe", "cnib-server-pod", "cnib-client"], [], [], set())]
    assert "ip netns del cnib-probe-3fa2c1" in argvs and "ip netns del cnib-client-probe" in argvs
    assert not any(a.endswith(("cnib-server-pod", "cnib-client")) for a in argvs)
