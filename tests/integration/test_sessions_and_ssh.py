"""Issue 12 on the real testbed: one session per host (lease), `sudo: true` for a non-root
login, SSH settings that come only from the inventory. Needs root (the testbed fixture skips)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnibench.infra.config import load_inventory
from cnibench.infra.hosts import Fleet, Host
from cnibench.infra.lease import LeaseHeld, lease_path, session_lease
from cnibench.modes import mode_down, mode_status, mode_up, mode_verify
from cnibench.modes.engine.hoststate import capture_host, capture_local, diff

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# --- item 4: one session per host ---------------------------------------------------------------

HOLDER = """
import sys, time
from cnibench.infra.config import load_inventory
from cnibench.infra.lease import session_lease
with session_lease(load_inventory(sys.argv[1]), "run-all --study holder-test"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_second_session_is_refused_naming_the_holder_and_clean_takes_over_after_sigkill(testbed, tmp_path):
    inv = str(testbed.path)
    study = tmp_path / "tiny.yml"
    study.write_text(yaml.safe_dump({"name": "tiny", "inventory": inv, "modes": ["host"], "sizes": ["small"],
                                     "load": {"rates": [300]}, "workload": {"duration_s": 1, "warmup_s": 0}, "notebooks": "none"}))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, inv], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        record = json.loads(Path(lease_path("server")).read_text())
        assert record["pid"] == holder.pid and record["command"] == "run-all --study holder-test"

        second = invoke("run-all", "--study", str(study), "--inventory", inv, "--no-progress")
        assert second.returncode == 2, second.stdout + second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "in use by another cnibench session" in err[0]
        assert f"'run-all --study holder-test' (pid {holder.pid} on " in err[0] and "client, server are leased" in err[0]
        assert not (Path(os.environ["CNIBENCH_OUTPUT"]) / "data" / "raw" / "tiny").exists()  # nothing ran

        live = invoke("clean", "--inventory", inv)  # clean never takes a live lease
        assert live.returncode == 2 and f"pid {holder.pid}" in live.stderr
        with pytest.raises(LeaseHeld):  # the library refuses the same way
            with session_lease(load_inventory(inv), "test"):
                pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
    assert Path(lease_path("server")).exists()  # SIGKILL: nothing could release it

    out = invoke("clean", "--inventory", inv)
    assert out.returncode == 0, out.stderr
    assert f"took over the stale session lease of 'run-all --study holder-test' (pid {holder.pid}" in out.stdout
    assert f"its process {holder.pid} on" in out.stdout and "is gone" in out.stdout
    assert not Path(lease_path("client")).exists() and not Path(lease_path("server")).exists()  # clean released it


# --- item 5: sudo: true --------------------------------------------------------------------------

USER = "cnibsudo"
SUDOERS = Path("/etc/sudoers.d/cnibench-test")


@pytest.fixture
def sudo_inventory(testbed, tmp_path):
    """The testbed reached as a non-root user with passwordless sudo; user and rule removed after."""
    if not shutil.which("sudo"):
        pytest.skip("needs sudo (apt-get install -y sudo)")
    subprocess.run(["userdel", USER], capture_output=True)
    # '*': no password, but not a locked account (sshd without PAM refuses locked ones)
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", "-p", "*", USER], check=True)
    try:
        SUDOERS.write_text(f"{USER} ALL=(root) NOPASSWD: ALL\n")
        SUDOERS.chmod(0o440)
        doc = yaml.safe_load(testbed.path.read_text())
        for h in doc["hosts"]:
            h.update(user=USER, sudo=True)
        path = tmp_path / "sudo.yml"
        path.write_text(yaml.safe_dump(doc))
        yield load_inventory(path)
    finally:
        SUDOERS.unlink(missing_ok=True)
        subprocess.run(["userdel", USER], capture_output=True)
    assert not SUDOERS.exists() and subprocess.run(["id", USER], capture_output=True).returncode != 0


async def snapshot(fleet) -> dict:
    snap = {h.name: await capture_host(h) for h in fleet}
    snap["@fabric"] = await capture_local("cnib-fabric")
    return snap


def test_sudo_user_runs_a_mode_up_verify_down_and_leaves_the_hosts_as_found(sudo_inventory):
    async def body():
        async with Fleet(sudo_inventory) as fleet:
            who = (await fleet.server.ssh_connection(), (await fleet.server.run(["id", "-un"])).stdout.strip())
            login = (await fleet.server._conn.run("id -un", check=True)).stdout.strip()
            before = await snapshot(fleet)
            await mode_up(fleet, "flannel-vxlan")
            try:
                owner = (await fleet.server.run(["stat", "-c", "%U %a", "/run/cnibench/modes/server.json"])).stdout.split()
                status = await mode_status(fleet)
                result = await mode_verify(fleet, "flannel-vxlan")
            finally:
                await mode_down(fleet, "flannel-vxlan")
            await fleet.server.write_file("/run/cnibench/t-sudo/f", b"\x00bytes\n", mode=0o600)
            back = await fleet.server.read_file("/run/cnibench/t-sudo/f")
            mode = (await fleet.server.run(["stat", "-c", "%U %a", "/run/cnibench/t-sudo/f"])).stdout.split()
            await fleet.server.run(["rm", "-r", "/run/cnibench/t-sudo"])
            after = await snapshot(fleet)
            return who, login, owner, status, result, back, mode, {h: d for h in before if (d := diff(before[h], after[h]))}

    who, login, owner, status, result, back, mode, d = asyncio.run(body())
    assert login == USER and who[1] == "root"  # logged in as the user, commands as root through sudo
    assert len(who[0]) == 4  # SSH_CONNECTION read without sudo (sudo drops it)
    assert owner == ["root", "644"]  # the state file was written by root, not by the login user over SFTP
    assert all(s and s["status"] == "up" for s in status.values())
    assert result.ok, str(result)
    assert back == b"\x00bytes\n" and mode == ["root", "600"]
    assert d == {}, "\n".join(f"{h}:\n" + "\n".join(v.values()) for h, v in d.items())


# --- item 7: SSH settings come from the inventory only -----------------------------------------

def test_forward_agent_in_ssh_config_does_not_forward(testbed, tmp_path, monkeypatch):
    import asyncssh

    if not shutil.which("ssh-agent"):
        pytest.skip("needs ssh-agent (apt-get install -y openssh-client)")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host *\n    ForwardAgent yes\n")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            asyncio.run(asyncio.sleep(0.02))
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        spec = dataclasses.replace(testbed.server, agent=True)  # the agent may be used to log in, never forwarded

        async def remote_agent(connect) -> str:
            conn = await connect()
            try:
                return (await conn.run("printenv SSH_AUTH_SOCK", check=False)).stdout.strip()
            finally:
                conn.close()

        # Control: asyncssh's defaults read ~/.ssh/config and do forward (so the test can fail).
        plain = dict(host=spec.address, port=spec.port, username=spec.user, known_hosts=spec.known_hosts, client_keys=[spec.key_file])
        forwarded = asyncio.run(remote_agent(lambda: asyncssh.connect(**plain)))
        ours = asyncio.run(remote_agent(lambda: asyncssh.connect(**Host(spec)._connect_options())))
    finally:
        agent.kill()
        agent.wait()
    assert forwarded, "control: with ~/.ssh/config's ForwardAgent yes asyncssh forwards the agent"
    assert ours == ""


def test_insecure_ignore_warns_when_connecting(testbed, capfd):
    spec = dataclasses.replace(testbed.client, host_key_policy="insecure-ignore")

    async def body():
        h = Host(spec)
        try:
            return (await h.run(["true"])).ok
        finally:
            await h.close()

    assert asyncio.run(body())
    err = capfd.readouterr().err
    assert "host key NOT verified" in err and "client" in err


# --- item 8: a session in which every run failed ------------------------------------------------

def test_run_all_where_every_run_fails_exits_non_zero_and_says_why(testbed, tmp_path):
    study = tmp_path / "allfail.yml"  # the four-line study plus a setting that cannot work here
    study.write_text(yaml.safe_dump({"name": "allfail", "modes": ["flannel-vxlan"], "sizes": ["small"], "load": {"rates": [1000]},
                                     "mode_settings": {"flannel-vxlan": {"mtu": 9000}}, "notebooks": "none"}))
    proc = invoke("run-all", "--study", str(study), "--inventory", str(testbed.path), "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "every run of this session failed (1 of 1)" in proc.stderr and "MTU 9000" in proc.stderr
