"""Mode state under crashes and tampering, on the real testbed (issue 12, items 1, 2, 3, 6):
a driver SIGKILLed in the middle of a state write, host copies of the state tampered with, and
flannel-aws-vpc killed midway with its VPC on a moto server; each time `invoke clean` restores
the hosts exactly. Needs root (the testbed fixture skips)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cnibench.infra.config import load_inventory
from cnibench.errors import PlanError
from cnibench.modes import current_endpoint, mode_down, mode_status, mode_up
from cnibench.modes.engine import state as store

from test_modes import ROOT, invoke, snapshot, state_diff

# Runs `mode up` and stops dead at one state write: the temporary file is written, the rename
# that commits it is not (a test SIGKILLs it there). argv: inventory mode target started marker
PAUSED_UP = r"""
import asyncio, json, sys, time
from cnibench.infra.config import load_inventory
from cnibench.infra.hosts import Fleet
from cnibench.modes import mode_up
from cnibench.modes.engine import state

inventory, mode, target, started, marker = sys.argv[1:]
real = state._commit

def commit(tmp, path):
    doc = json.load(open(tmp))
    if doc.get("target") == target and doc.get("started") == int(started):
        open(marker, "w").write(tmp)
        time.sleep(600)
    real(tmp, path)

state._commit = commit

async def main():
    async with Fleet(load_inventory(inventory)) as fleet:
        await mode_up(fleet, mode)

asyncio.run(main())
"""


def paused_up(inventory, mode, target, started, tmp_path, env=None) -> str:
    """Run PAUSED_UP until it stops at the write, SIGKILL it; returns the uncommitted file."""
    marker = tmp_path / "paused"
    argv = [sys.executable, "-c", PAUSED_UP, str(inventory), mode, target, str(started), str(marker)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 90
    try:
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert marker.exists(), f"mode up never reached the write of {target} step {started}: {err[-2000:]}"
    return marker.read_text()


def test_sigkill_during_a_state_write_then_clean_restores_the_hosts(testbed, with_fleet, tmp_path):
    inv = testbed.path
    before = with_fleet(snapshot)
    tmp = paused_up(inv, "flannel-vxlan", "server", 9, tmp_path)
    assert Path(tmp).exists(), "the killed write left its temporary file (never renamed)"
    docs, problems = store.read_driver(load_inventory(inv))
    assert not problems and docs["server"]["started"] == 8 and docs["server"]["status"] == "applying"
    assert state_diff(before, with_fleet(snapshot)) != {}, "nothing was applied before the kill"
    # and were a state file torn all the same (a disk, a person), clean is not locked out:
    server = store.driver_dir(load_inventory(inv)) / "server.json"
    server.write_text(server.read_text()[:100])
    out = invoke("clean", inventory=inv).stdout
    assert "undid the stored plan of flannel-vxlan (applying)" in out and "ignored: " in out and "server.json is unreadable" in out
    assert state_diff(before, with_fleet(snapshot)) == {}
    assert not store.driver_dir(load_inventory(inv)).exists()
    assert "nothing to clean" in invoke("clean", inventory=inv).stdout


def test_tampered_host_copies_are_refused_and_clean_still_sweeps(testbed, with_fleet, tmp_path):
    """No driver state (another machine ran up); each host's copy is tampered with: a step for
    the other host, an `@local` shell command, a server_port that is a path. Nothing of it runs;
    clean sweeps by prefix and restores the sysctls from the originals recorded on the hosts."""
    inv = testbed.path
    before = with_fleet(snapshot)
    owned = tmp_path / "owned"
    victim = tmp_path / "victim"
    victim.mkdir()

    async def up_then_tamper(fleet):
        await mode_up(fleet, "flannel-vxlan")
        store.remove_driver(fleet.inventory)
        for h, change in (("client", "foreign"), ("server", "local-shell")):
            path = Path(store.host_state_path(h))  # the testbed hosts share this machine's /run
            doc = json.loads(path.read_text())
            if change == "foreign":
                doc["steps"].append({"host": "server", "argv": ["true"], "undo": ["ip", "link", "del", "cnibcni0"], "netns": None})
                doc["endpoint"]["server_port"] = f"../../../..{victim}"
            else:
                doc["steps"].append({"host": "@local", "argv": ["true"], "undo": ["sh", "-c", f"touch {owned}"], "netns": None})
            path.write_text(json.dumps(doc))
        with pytest.raises(PlanError, match="not trusted"):
            await mode_down(fleet)
        with pytest.raises(PlanError, match="not trusted"):
            await current_endpoint(fleet)
        return await mode_status(fleet)

    assert with_fleet(up_then_tamper) == {"client": None, "server": None}
    assert state_diff(before, with_fleet(snapshot)) != {}
    out = invoke("clean", inventory=inv).stdout
    assert "ignored: client" in out and "ignored: server" in out and "restored net.ipv4.ip_forward=" in out
    assert not owned.exists() and victim.is_dir()
    assert state_diff(before, with_fleet(snapshot)) == {}
    assert "nothing to clean" in invoke("clean", inventory=inv).stdout


@pytest.fixture
def moto_vpc(monkeypatch):
    """A moto server (EC2 API over HTTP, for the child processes) with a VPC, two instances and a
    route table that already has a route of the user's to what will be the server's pod subnet."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        url = "http://%s:%d" % server.get_host_and_port()
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="10.244.2.0/24", GatewayId=igw)
        ami = ec2.describe_images()["Images"][0]["ImageId"]
        ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2, SubnetId=subnet)["Instances"]]
        ec2.modify_instance_attribute(InstanceId=ids[0], SourceDestCheck={"Value": False})  # the user's setting
        yield ec2, url, rtb, igw, ids, {**os.environ, **creds}
    finally:
        server.stop()


def routes(ec2, rtb):
    table = ec2.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]["Routes"]
    return sorted((r["DestinationCidrBlock"], r.get("InstanceId") or r.get("GatewayId")) for r in table if r["DestinationCidrBlock"].startswith("10.244."))


def checks(ec2, ids):
    return [ec2.describe_instance_attribute(InstanceId=i, Attribute="sourceDestCheck")["SourceDestCheck"]["Value"] for i in ids]


def test_flannel_aws_vpc_killed_midway_then_clean_restores_hosts_and_vpc(testbed, with_fleet, tmp_path, moto_vpc):
    ec2, url, rtb, igw, ids, env = moto_vpc
    doc = yaml.safe_load(Path(testbed.path).read_text())
    doc["name"] = "testbed-aws"
    doc["aws"] = {"region": "us-east-1", "route_table_id": rtb, "endpoint_url": url, "instances": {"client": ids[0], "server": ids[1]}}
    inv = tmp_path / "aws.yml"
    inv.write_text(yaml.safe_dump(doc))
    before, vpc_before = with_fleet(snapshot), (routes(ec2, rtb), checks(ec2, ids))
    assert vpc_before == ([("10.244.2.0/24", igw)], [False, True])
    # killed before its 4th AWS step (create-route for the server's subnet) starts
    paused_up(inv, "flannel-aws-vpc", "@aws", 4, tmp_path, env)
    assert routes(ec2, rtb) == [("10.244.1.0/24", ids[0]), ("10.244.2.0/24", igw)] and checks(ec2, ids) == [False, False]
    out = invoke("clean", inventory=inv, env=env).stdout
    assert "undid the stored plan of flannel-aws-vpc (applying)" in out
    assert (routes(ec2, rtb), checks(ec2, ids)) == vpc_before  # the user's route and setting are as they were
    assert state_diff(before, with_fleet(snapshot)) == {}
