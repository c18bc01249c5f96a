"""The boto3 driver for flannel-aws-vpc, against moto (never real AWS)."""

from __future__ import annotations

import asyncio

import pytest

moto = pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

from cnibench.errors import CommandFailed  # noqa: E402
from cnibench.modes import get_mode  # noqa: E402
from cnibench.modes.base import AWS, HostFact, HostFacts  # noqa: E402
from cnibench.modes.engine.apply import apply_steps, undo_steps  # noqa: E402
from cnibench.modes.engine.aws import AwsDriver, AwsSettings  # noqa: E402

_AMI: list[str] = []


@pytest.fixture
def ec2(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with moto.mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        vpc = client.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        rtb = client.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        if not _AMI:  # listing moto's images takes seconds: once per test run
            _AMI.append(client.describe_images()["Images"][0]["ImageId"])
        ami = _AMI[0]
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
    settings = get_mode("flannel-aws-vpc").settings({"aws": AwsSettings(route_table_id=rtb, instances={"client": ids[0], "server": ids[1]})})
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


# --- teardown changes only what up changed (issue 12, item 6) ---------------------------------


def plan_with_facts(rtb, ids, source_dest_check):
    facts = HostFacts(tuple(HostFact(n, n, "eth0", f"10.0.1.{10 + i}", 24, 9001, "", l2_peers=()) for i, n in enumerate(("client", "server"))),
                      source_dest_check=source_dest_check)
    settings = get_mode("flannel-aws-vpc").settings({"aws": AwsSettings(route_table_id=rtb, instances={"client": ids[0], "server": ids[1]})})
    return [s for s in get_mode("flannel-aws-vpc").plan(facts, settings) if s.host == AWS]


def check(client, iid):
    return client.describe_instance_attribute(InstanceId=iid, Attribute="sourceDestCheck")["SourceDestCheck"]["Value"]


def test_undo_restores_the_source_dest_check_as_it_was(ec2):
    client, rtb, ids = ec2
    client.modify_instance_attribute(InstanceId=ids[0], SourceDestCheck={"Value": False})  # the user's choice
    driver = AwsDriver(client)
    originals = driver.source_dest_check(ids)
    assert originals == {ids[0]: False, ids[1]: True}
    steps = plan_with_facts(rtb, ids, originals)
    asyncio.run(apply_steps(Only(driver), steps))
    assert not check(client, ids[0]) and not check(client, ids[1])
    asyncio.run(undo_steps(Only(driver), steps))
    assert check(client, ids[0]) is False and check(client, ids[1]) is True


def test_delete_route_keeps_a_route_that_leads_elsewhere(ec2):
    client, rtb, ids = ec2
    steps = plan_with_facts(rtb, ids, {})
    driver = AwsDriver(client)
    asyncio.run(apply_steps(Only(driver), steps))
    # someone points the server's subnet at another instance after up
    client.replace_route(RouteTableId=rtb, DestinationCidrBlock="10.244.2.0/24", InstanceId=ids[0])
    assert asyncio.run(undo_steps(Only(driver), steps)) == []
    assert routes(client, rtb) == {"10.244.2.0/24": ids[0]}


def test_after_a_crash_only_routes_whose_creation_ran_are_deleted(ec2):
    """The user already has a route to the server's pod subnet (to another target). up crashed
    after its first route: the journal says the second create-route never started."""
    from cnibench.modes.engine.state import merge, steps_to_undo

    client, rtb, ids = ec2
    vpc = client.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]["VpcId"]
    igw = client.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    client.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    client.create_route(RouteTableId=rtb, DestinationCidrBlock="10.244.2.0/24", GatewayId=igw)
    steps = plan_with_facts(rtb, ids, {})
    driver = AwsDriver(client)
    for s in steps[:2]:  # modify-instance-attribute and create-route of the client, then the crash
        asyncio.run(driver.run(s.argv))
    state = merge({AWS: {"steps": [s.to_dict() for s in steps], "started": 2}}, "driver")
    todo = steps_to_undo(state)
    assert todo == steps[:2]
    assert asyncio.run(undo_steps(Only(driver), todo)) == []
    table = client.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]["Routes"]
    assert [(r["DestinationCidrBlock"], r.get("GatewayId")) for r in table if r["DestinationCidrBlock"].startswith("10.244.")] == [("10.244.2.0/24", igw)]
    # and even an undo of every step (no journal) keeps it: its target is not ours
    assert asyncio.run(undo_steps(Only(driver), steps)) == []
    assert any(r["DestinationCidrBlock"] == "10.244.2.0/24" and r.get("GatewayId") == igw
               for r in client.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]["Routes"])
    assert check(client, ids[0]) is True
