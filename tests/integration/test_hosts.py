"""Host control over real SSH: typed errors, Fleet aggregation, SFTP, background processes."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from cnibench.errors import AuthenticationFailed, CommandTimeout, FleetError, HostUnreachable
from cnibench.infra.hosts import Host


def run_host(spec):
    async def body():
        host = Host(spec)
        try:
            await host.run(["true"])
        finally:
            await host.close()

    asyncio.run(body())


def test_unreachable_host(testbed):
    spec = dataclasses.replace(testbed.client, port=2)  # nothing listens there
    with pytest.raises(HostUnreachable, match="cannot reach"):
        run_host(spec)


def test_wrong_key_is_authentication_failure(testbed, tmp_path):
    import subprocess

    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        run_host(dataclasses.replace(testbed.client, key_file=str(key)))


def test_timeout_ends_the_remote_command_too(with_fleet):
    async def body(fleet):
        with pytest.raises(CommandTimeout):
            await fleet.client.run(["sleep", "7.25"], timeout=0.5)
        await asyncio.sleep(2.5)  # timeout's --kill-after grace
        return (await fleet.client.run(["pgrep", "-f", "^sleep 7.25$"], check=False)).exit_status

    assert with_fleet(body) == 1  # nothing left running


def test_fleet_runs_concurrently_and_aggregates_errors(with_fleet):
    async def body(fleet):
        ok = await fleet.run(["hostname", "-I"])
        with pytest.raises(FleetError) as err:
            await fleet.gather("probe", lambda h: h.run(["test", "-e", "/nope"] if h.name == "server" else ["true"]))
        return ok, err.value

    ok, err = with_fleet(body)
    assert set(ok) == {"client", "server"}
    assert set(err.errors) == {"server"} and "server" in str(err)


def test_sftp_write_read_upload(with_fleet, tmp_path):
    local = tmp_path / "blob"
    local.write_bytes(bytes(range(256)) * 10)

    async def body(fleet):
        h = fleet.server
        await h.write_file("/run/cnibench/t/a.txt", "x y 'z'\n", mode=0o600)
        await h.upload(local, "/run/cnibench/t/blob")
        a = await h.read_file("/run/cnibench/t/a.txt")
        b = await h.read_file("/run/cnibench/t/blob")
        mode = (await h.run(["stat", "-c", "%a", "/run/cnibench/t/a.txt"])).stdout.strip()
        await h.run(["rm", "-r", "/run/cnibench/t"])
        return a, b, mode

    a, b, mode = with_fleet(body)
    assert a == b"x y 'z'\n" and b == local.read_bytes() and mode == "600"


def test_background_process_lifecycle(with_fleet):
    async def body(fleet):
        h = fleet.client
        bg = await h.start(["sh", "-c", "echo started; trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done"])
        await asyncio.sleep(0.3)
        alive = await bg.alive()
        res = await bg.stop(grace=3)
        after = await bg.alive()
        stubborn = await h.start(["sh", "-c", "trap '' TERM; echo x; while :; do sleep 0.05; done"])
        await asyncio.sleep(0.2)
        killed = await stubborn.stop(grace=0.5)
        return alive, res, after, killed, await stubborn.alive()

    alive, res, after, killed, killed_alive = with_fleet(body)
    assert alive and not after
    assert res.exit_status == 3 and "started" in res.stdout and "bye" in res.stdout
    assert killed.exit_status == 128 + 9 and not killed_alive  # TERM ignored: killed after grace
