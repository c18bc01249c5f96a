"""Where mode state lives and what survives a failure (issue 12, items 1-3), without the testbed:
hosts are stand-ins that record the plan's commands, but every file operation (the atomic write
command, cat, rm) runs for real, in a temporary directory."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from test_modes_plans import facts

from cnibench.errors import CommandFailed, HostUnreachable, PlanError
from cnibench.infra.config import HostSpec, Inventory
from cnibench.infra.hosts import CommandResult, Fleet
from cnibench.infra.local import LocalHost
from cnibench.modes import clean as clean_mod
from cnibench.modes import get_mode
from cnibench.modes.base import step
from cnibench.modes.engine import apply, state
from cnibench.modes.engine.apply import run_plan


class FakeHost:
    """Plan commands are recorded (and fail / lose the connection on demand); file commands run."""

    def __init__(self, name, log, fail=(), drop=(), undo_fail=()):
        self.name, self.log = name, log
        self.fail, self.drop, self.undo_fail = set(fail), set(drop), set(undo_fail)
        self.spec = HostSpec(name, "127.0.0.1", "client" if name == "client" else "server", "eth0")

    async def ssh_connection(self):
        return ["198.19.0.1", "40000", "127.0.0.1", "22"]  # a management link, not eth0

    async def run(self, argv, check=True, netns=None, input=None, timeout=None):
        argv = [str(a) for a in argv]
        cmd = " ".join(argv)
        real = argv[0] in ("cat", "rm") or argv[:3] == ["sh", "-c", state.ATOMIC_WRITE_SH]
        if real:
            p = subprocess.run(argv, input=input, capture_output=True, text=True)
            r = CommandResult(self.name, tuple(argv), p.returncode, p.stdout, p.stderr, 0.0)
        else:
            self.log.append((self.name, cmd))
            if cmd in self.drop:
                raise HostUnreachable(self.name, f"connection lost while running {cmd}")
            out = "[]" if argv[:3] in (["ip", "-j", "netns"], ["ip", "-j", "link"]) else ""
            status, err = (2, "RTNETLINK answers: Operation not permitted") if cmd in self.fail | self.undo_fail else (0, "")
            r = CommandResult(self.name, tuple(argv), status, out, err, 0.0)
        if check and r.exit_status:
            raise CommandFailed(r)
        return r


class FakeFleet(Fleet):
    def __init__(self, hosts, name="unit"):
        self.hosts = {h.name: h for h in hosts}
        self.inventory = Inventory(Path("unit.yml"), name, tuple(h.spec for h in hosts), extra={})


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "DRIVER_DIR", tmp_path / "driver")
    monkeypatch.setattr(state, "HOST_DIR", tmp_path / "hosts")
    return tmp_path


def vxlan(fleet, monkeypatch):
    """mode up plans flannel-vxlan for the stand-in hosts (no facts, no kernel probe)."""
    f = facts()
    mode = get_mode("flannel-vxlan")
    steps, endpoint = mode.plan(f, mode.settings()), mode.endpoint(f, mode.settings())

    async def prepare(fleet_, name, settings, implementation=None):
        return mode, mode.settings(), f, steps, endpoint

    async def no_probe(*a):
        return None

    monkeypatch.setattr(apply, "prepare", prepare)
    monkeypatch.setattr(apply, "probe_kernel", no_probe)
    return steps


def run(coro):
    return asyncio.run(coro)


def driver_files(fleet):
    d = state.driver_dir(fleet.inventory)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --- the driver's copy ------------------------------------------------------------------------


def test_driver_state_is_private_and_a_torn_file_counts_as_absent(dirs):
    fleet = FakeFleet([FakeHost("client", []), FakeHost("server", [])])
    doc = {"mode": "host", "status": "up", "steps": [], "started": 0, "endpoint": {
        "mode": "host", "client_netns": None, "server_netns": None, "server_bind": "198.18.0.12", "server_port": 8080,
        "connect_address": "198.18.0.12", "connect_port": 8080}}
    state.write_driver(fleet.inventory, "client", doc)
    d = state.driver_dir(fleet.inventory)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700 and stat.S_IMODE((d / "client.json").stat().st_mode) == 0o600
    (d / ".server.x.tmp").write_text("{")  # a write killed before its rename
    (d / "server.json").write_text('{"mode": "host", "st')  # torn (not by us: by a disk, a person)
    docs, problems = state.read_driver(fleet.inventory)
    assert list(docs) == ["client"] and len(problems) == 1 and "server.json is unreadable" in problems[0]


def test_the_journal_says_which_steps_to_undo():
    steps = [step("a", ["mk", i], ["rm", i]) for i in "123"] + [step("b", ["mk", "b"], ["rm", "b"])]
    st = state.merge({"a": {"steps": [s.to_dict() for s in steps[:3]], "started": 2},
                      "b": {"steps": [steps[3].to_dict()], "started": 0}}, "driver")
    assert state.steps_to_undo(st) == steps[:2]
    st["started"] = {}  # a host's copy has no journal: all of its steps
    assert state.steps_to_undo(st) == steps


# --- files on a host ------------------------------------------------------------------------------


def test_a_write_cut_short_leaves_the_old_file_whole(tmp_path):
    path = str(tmp_path / "modes" / "x.json")
    local = LocalHost()
    run(state.write_atomic(local, path, '{"old": 1}'))
    text = '{"new": "' + "x" * 5000 + '"}'
    # the connection drops after part of stdin: the command sees a short input
    r = run(local.run(state.atomic_write_argv(path, len(text)), input=text[:1000], check=False))
    assert r.exit_status == 3 and "short write" in r.stderr
    assert json.loads(Path(path).read_text()) == {"old": 1}
    assert os.listdir(tmp_path / "modes") == ["x.json"]  # no temporary file left
    run(state.write_atomic(local, path, text))
    assert json.loads(Path(path).read_text())["new"].startswith("xxx")


def test_recorded_originals_are_kept_over_later_values(dirs):
    local = LocalHost()
    run(state.record_originals(local, ["net.ipv4.ip_forward=0"]))
    run(state.record_originals(local, ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.accept_redirects=1"]))
    assert run(state.read_originals(local)) == (["net.ipv4.ip_forward=0", "net.ipv4.conf.all.accept_redirects=1"], None)
    Path(state.originals_path(local.name)).write_text("kernel.core_pattern=|/tmp/x\n")
    originals, why = run(state.read_originals(local))
    assert originals == [] and "not trusted" in why


# --- apply: the step in flight, the journal, a failed rollback ----------------------------------------


def test_a_step_in_flight_when_the_connection_drops_is_undone_and_journalled(dirs):
    log = []
    hosts = {"a": FakeHost("a", log, drop={"mk 2"}), "b": FakeHost("b", log, fail={"mk b2"})}
    steps = [step("a", ["mk", i], ["rm", i]) for i in "123"] + [step("b", ["mk", "b1"], ["rm", "b1"]), step("b", ["mk", "b2"], ["rm", "b2"])]
    journal = []
    _, todo, error = run(run_plan(hosts, steps, lambda t, n: journal.append((t, n))))
    assert error is not None
    names = [" ".join(s.argv) for s in todo]
    assert "mk 2" in names  # it may have run: undone
    assert "mk b2" not in names  # it ran and failed: made nothing
    assert ("a", 2) in journal and ("a", 3) not in journal  # journalled before it ran, nothing after


def test_up_keeps_the_state_when_the_rollback_fails(dirs, monkeypatch):
    log = []
    client = FakeHost("client", log, fail={"ip link set cnibflannel.1 up"}, undo_fail={"ip link del cnibcni0"})
    fleet = FakeFleet([client, FakeHost("server", log)])
    vxlan(fleet, monkeypatch)
    with pytest.raises(PlanError, match="(?s)undoing it left errors.*ip link del cnibcni0.*invoke clean"):
        run(apply.up(fleet, "flannel-vxlan"))
    st = run(state.current_state(fleet))
    assert st["status"] == "rollback-failed" and st["source"] == "driver"
    assert ["ip", "link", "del", "cnibcni0"] in [list(s.undo or ()) for s in state.steps_to_undo(st)]
    # the failure is fixed; clean finishes the rollback and only then forgets the state
    client.undo_fail.clear()
    out = run(clean_mod.clean(fleet))
    assert any("undid the stored plan of flannel-vxlan (rollback-failed)" in line for line in out)
    assert run(state.current_state(fleet)) is None and driver_files(fleet) == []


def test_up_forgets_the_state_after_a_clean_rollback(dirs, monkeypatch):
    log = []
    fleet = FakeFleet([FakeHost("client", log, fail={"ip link set cnibflannel.1 up"}), FakeHost("server", log)])
    vxlan(fleet, monkeypatch)
    with pytest.raises(CommandFailed):
        run(apply.up(fleet, "flannel-vxlan"))
    assert run(state.current_state(fleet)) is None and driver_files(fleet) == []
    assert not list((dirs / "hosts").glob("*")), "host copies and sysctl originals are removed"


def test_down_and_clean_keep_the_state_while_an_undo_fails(dirs, monkeypatch):
    log = []
    client = FakeHost("client", log, undo_fail={"ip link del cnibvclient"})
    fleet = FakeFleet([client, FakeHost("server", log)])
    vxlan(fleet, monkeypatch)
    run(apply.up(fleet, "flannel-vxlan"))
    assert driver_files(fleet) == ["client.json", "server.json"]
    assert Path(state.originals_path("client")).read_text() == "net.ipv4.ip_forward=0\nnet.ipv4.conf.all.accept_redirects=1\n"
    with pytest.raises(PlanError, match="teardown left errors"):
        run(apply.down(fleet, "flannel-vxlan"))
    out = run(clean_mod.clean(fleet))
    assert any("1 undo(s) failed" in line for line in out) and any("state and sysctl originals" in line for line in out)
    assert run(state.current_state(fleet))["mode"] == "flannel-vxlan"
    assert Path(state.originals_path("client")).exists()
    client.undo_fail.clear()
    run(apply.down(fleet, "flannel-vxlan"))
    assert run(state.current_state(fleet)) is None and not Path(state.originals_path("client")).exists()


def test_clean_undoes_only_started_steps_after_a_crash(dirs, monkeypatch):
    log = []
    fleet = FakeFleet([FakeHost("client", log), FakeHost("server", log)])
    steps = vxlan(fleet, monkeypatch)
    real = state.write_driver
    journalled = []

    def die_at_fifth_journal(inv, target, doc, durable=True):
        if doc.get("started"):
            journalled.append(1)
            if len(journalled) == 5:
                os._exit(9)  # killed: no rollback, no finally
        real(inv, target, doc, durable)

    pid = os.fork()
    if pid == 0:  # the driver process that gets killed midway through up
        monkeypatch.setattr(state, "write_driver", die_at_fifth_journal)
        run(apply.up(fleet, "flannel-vxlan"))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    undo = state.steps_to_undo(run(state.current_state(fleet)))
    assert 0 < len(undo) < len(steps)
    run(clean_mod.clean(fleet))
    undone = [c for _, c in log if c.split()[:3] in (["ip", "link", "del"], ["ip", "netns", "del"], ["sysctl", "-q", "-w"])]
    planned = {" ".join(s.undo) for s in steps if s.undo}
    assert set(undone) & planned == {" ".join(s.undo) for s in undo if s.undo}  # started ones only
    assert run(state.current_state(fleet)) is None


def test_a_tampered_host_copy_is_refused_and_clean_still_sweeps(dirs, monkeypatch):
    log = []
    fleet = FakeFleet([FakeHost("client", log), FakeHost("server", log)])
    vxlan(fleet, monkeypatch)
    run(apply.up(fleet, "flannel-vxlan"))
    state.remove_driver(fleet.inventory)  # another driver, or a lost data directory
    p = Path(state.host_state_path("server"))
    doc = json.loads(p.read_text())
    doc["steps"].append({"host": "@local", "argv": ["true"], "undo": ["sh", "-c", f"touch {dirs}/owned"], "netns": None})
    p.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="(?s)server.*not trusted.*addressed to .@local.*invoke clean"):
        run(apply.down(fleet))
    log.clear()
    out = run(clean_mod.clean(fleet))
    assert any(line.startswith("ignored: server") for line in out)
    assert not (dirs / "owned").exists()
    assert ("server", "ip route flush table main proto 203") in log  # the sweep ran on the refused host
    assert ("server", "sysctl -q -w net.ipv4.ip_forward=0 net.ipv4.conf.all.accept_redirects=1") in log  # from its originals
    assert ("client", "ip link del cnibflannel.1") in log  # the client's own copy was fine: undone
    assert not p.exists()
