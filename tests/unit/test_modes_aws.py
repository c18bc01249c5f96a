"""The boto3 driver for flannel-aws-vpc, against moto (never real AWS)."""

from __future__ import annotations

import asyncio

import pytest

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

from cnibench.errors import CommandFailed  # noqa: E402
from cnibench.modes import ModeSettings, get_mode  # noqa: E402
from cnibench.modes.apply import apply_steps, undo_steps  # noqa: E402
from cnibench.modes.aws import AwsDriver  # noqa: E402
from cnibench.modes.base import AWS, AwsSettings, HostFact, HostFacts  # noqa: E402


@pytest.fixture
def ec2(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with moto.mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        rtb = client.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ami = client.describe_images()["Images"][0]["ImageId"]
        ids = [i["InstanceId"] for i in client.run_instances(ImageId=ami, MinCount=2, MaxCount=2, SubnetId=subnet)["Instances"]]
        yield client, rtb, ids


class Only:
    def __init__(self, driver):
        self.driver = driver

    def __getitem__(self, name):
        assert name == AWS, "only AWS steps in this plan"
        return self.driver


def aws_plan(rtb, ids):
    facts = HostFacts(tuple(HostFact(n, n, "eth0", f"10.0.1.{10 + i}", 24, 9001, "", l2_peers=()) for i, n in enumerate(("client", "server"))))
    settings = ModeSettings(aws=AwsSettings(route_table_id=rtb, instances={"client": ids[0], "server": ids[1]}))
    return [s for s in get_mode("flannel-aws-vpc").plan(facts, settings) if s.host == AWS]


def routes(client, rtb):
    table = client.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]
    return {r["DestinationCidrBlock"]: r.get("InstanceId") for r in table["Routes"] if r.get("InstanceId")}


def test_routes_and_source_dest_check_are_set_then_undone(ec2):
    client, rtb, ids = ec2
    steps = aws_plan(rtb, ids)
    runners = Only(AwsDriver(client))
    asyncio.run(apply_steps(runners, steps))
    assert routes(client, rtb) == {"10.244.1.0/24": ids[0], "10.244.2.0/24": ids[1]}
    attr = client.describe_instance_attribute(InstanceId=ids[0], Attribute="sourceDestCheck")
    assert attr["SourceDestCheck"]["Value"] is False
    asyncio.run(undo_steps(runners, steps))
    assert routes(client, rtb) == {}
    assert client.describe_instance_attribute(InstanceId=ids[1], Attribute="sourceDestCheck")["SourceDestCheck"]["Value"] is True
    asyncio.run(undo_steps(runners, steps))  # idempotent: deleting missing routes is "already gone"


def test_the_route_limit_fails_like_aws_and_undoes(ec2):
    client, rtb, ids = ec2
    steps = aws_plan(rtb, ids)
    existing = len(client.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]["Routes"])
    runners = Only(AwsDriver(client, route_limit=existing + 1))
    with pytest.raises(CommandFailed, match="RouteLimitExceeded"):
        asyncio.run(apply_steps(runners, steps))
    assert routes(client, rtb) == {}  # the first route was undone
