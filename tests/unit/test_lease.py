"""The session lease without SSH: its decisions (pure) and its shell script under a real flock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from cnibench.infra import lease
from cnibench.infra.lease import LEASE_SH, Owner, describe, holder_of, parse_reply, refusal, stale_reason

HERE = "driver1"


def owner(**kw) -> dict:
    base = dict(session="s1", driver=HERE, pid=4242, pid_start=77, user="root", command="run-all --study lab",
                started_at="2026-01-01T00:00:00+00:00")
    return {**base, **kw}


def test_a_dead_holder_on_this_driver_is_certainly_stale_a_live_one_never():
    dead = lambda pid, start: False  # noqa: E731
    alive = lambda pid, start: True  # noqa: E731
    assert stale_reason(owner(), 5, HERE, dead) == ("its process 4242 on driver1 is gone", True)
    assert stale_reason(owner(), 10_000, HERE, alive) == (None, False)  # alive: its heartbeat age does not matter


def test_a_holder_elsewhere_is_stale_only_after_the_heartbeat_stops_and_not_certainly():
    never = lambda pid, start: pytest.fail("a pid on another machine must not be looked up here")  # noqa: E731
    assert stale_reason(owner(driver="other"), 10, HERE, never) == (None, False)
    reason, certain = stale_reason(owner(driver="other"), lease.STALE_AFTER_S + 1, HERE, never)
    assert "no heartbeat" in reason and not certain
    assert stale_reason(None, 1, HERE, never) == ("its lease file is not a lease record", False)


def test_pid_reuse_is_not_the_holder():
    me = os.getpid()
    start = lease.process_start(me)
    assert lease.pid_alive(me, start) and not lease.pid_alive(me, start + 1)
    assert not lease.pid_alive(2**22 + 7, None)


def test_reply_parsing_and_what_is_shown_of_a_holder():
    rec = json.dumps(owner(command="bench\x1b[31m --rate 1"))
    status, age, raw = parse_reply(f"HELD\n12\n{rec}\n")
    assert (status, age, raw) == ("HELD", 12.0, rec)
    text = describe(holder_of(raw), raw)
    assert "pid 4242 on driver1" in text and "\x1b" not in text and "user root" in text
    assert parse_reply("ACQUIRED\n") == ("ACQUIRED", None, "")
    assert "unreadable" in describe(holder_of("garbage"), "garbage")


def test_refusal_names_the_holder_and_the_hosts_once():
    who = describe(owner(), json.dumps(owner()))
    msg = refusal({"client": (who, None), "server": (who, None)}, clean=False)
    assert msg.count("run-all --study lab") == 1 and "client, server are leased to" in msg and "Nothing was changed" in msg
    msg = refusal({"client": (who, "no heartbeat for 99 s")}, clean=False)
    assert "only 'invoke clean' takes it over" in msg


@pytest.mark.skipif(not shutil.which("flock"), reason="needs flock (util-linux)")
def test_lease_script_acquire_refuse_takeover_release(tmp_path):
    d, f = tmp_path / "lease", str(tmp_path / "lease" / "h.json")

    def op(name, me, seen=""):
        argv = ["sh", "-c", lease._LOCKED_SH, "x", str(d), "5", LEASE_SH, name, f, me, seen]
        return parse_reply(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)

    a, b = Owner("a", HERE, 1, 1, "u", "run-all", "t").record(), Owner("b", HERE, 2, 2, "u", "bench", "t").record()
    assert op("acquire", a)[0] == "ACQUIRED"
    assert op("acquire", a)[0] == "ACQUIRED"  # ours already
    status, age, raw = op("acquire", b)
    assert status == "HELD" and raw == a and 0 <= age < 5
    assert op("refresh", b)[0] == "LOST" and op("refresh", a)[0] == "OK"
    assert op("release", b)[0] == "RELEASED" and open(f).read().strip() == a  # not b's to release
    assert op("takeover", b, seen="something else")[0] == "CHANGED"  # compare-and-swap
    assert op("takeover", b, seen=raw)[0] == "ACQUIRED" and open(f).read().strip() == b
    assert op("release", b)[0] == "RELEASED" and not os.path.exists(f)


def test_a_zombie_holder_is_gone():
    """A SIGKILLed run-all is a zombie until its parent reaps it: a run-all started at once must
    not be refused by it (issue 22: one of two tries was)."""
    import time

    child = subprocess.Popen(["sleep", "30"])
    try:
        start = lease.process_start(child.pid)
        assert lease.pid_alive(child.pid, start)
        child.kill()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not lease._zombie(child.pid):
            time.sleep(0.01)
        assert lease.process_start(child.pid) == start  # still in /proc, not reaped
        assert not lease.pid_alive(child.pid, start)
    finally:
        child.wait()
