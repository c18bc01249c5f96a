"""flannel-aws-vpc on real AWS: a boto3 driver for the plan's `@aws` steps.

Plan steps read like the aws CLI (`ec2 create-route --route-table-id … --destination-cidr-block
… --instance-id …`), so --dry-run prints what a person would type; this driver executes them
with boto3 and returns the same CommandResult shape as a host. Tested against moto only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ...errors import CommandFailed, PlanError
from ...infra.hosts import CommandResult
from ..base import AWS

ROUTE_LIMIT = 50  # AWS's default routes per route table, the limit the study names


@dataclass(frozen=True)
class AwsSettings:
    """Where pod subnets are registered on real AWS (inventory key `aws`)."""

    region: str = "us-east-1"
    route_table_id: str = ""
    instances: Mapping[str, str] = field(default_factory=dict)  # host name -> instance id
    endpoint_url: str | None = None  # for moto in tests; None = the real AWS endpoint

    @classmethod
    def from_inventory(cls, aws: Mapping) -> "AwsSettings":
        return cls(region=aws.get("region", "us-east-1"), route_table_id=aws.get("route_table_id", ""),
                   instances=dict(aws.get("instances", {})), endpoint_url=aws.get("endpoint_url"))


def _options(argv: Sequence[str]) -> dict[str, str | bool]:
    """`--key value` and `--flag` pairs of an aws-CLI-like argv."""
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                opts[a[2:]] = argv[i + 1]
                i += 2
                continue
            opts[a[2:]] = True
        i += 1
    return opts


class AwsDriver:
    name = AWS

    def __init__(self, ec2, route_limit: int = ROUTE_LIMIT):
        self.ec2, self.route_limit = ec2, route_limit

    @classmethod
    def from_settings(cls, aws) -> "AwsDriver":
        if aws is None:
            raise PlanError("this plan has AWS steps but the inventory has no 'aws' section (region, route_table_id, "
                            "instances).")
        import boto3  # heavy, and needed only on real AWS (or moto): not on every CLI path

        return cls(boto3.client("ec2", region_name=aws.region, endpoint_url=aws.endpoint_url))

    async def run(self, argv: Sequence[str], check: bool = True, timeout: float | None = None, input=None,
                  netns=None) -> CommandResult:
        import botocore.exceptions  # with boto3, only on the AWS path

        argv = tuple(argv)
        start = time.monotonic()
        status, out, err = 0, "", ""
        try:
            out = self._call(argv)
        except botocore.exceptions.ClientError as exc:
            e = exc.response.get("Error", {})
            status, err = 254, f"An error occurred ({e.get('Code')}): {e.get('Message')}"
        except (_LimitExceeded, _NotFound) as exc:
            status, err = 254, str(exc)
        result = CommandResult(AWS, argv, status, out, err, time.monotonic() - start)
        if check and status != 0:
            raise CommandFailed(result)
        return result

    def _call(self, argv: tuple[str, ...]) -> str:
        if argv[:1] != ("ec2",) or len(argv) < 2:
            raise ValueError(f"not an ec2 step: {argv}")
        op, o = argv[1], _options(argv[2:])
        if op == "create-route":
            table = self.ec2.describe_route_tables(RouteTableIds=[o["route-table-id"]])["RouteTables"][0]
            if len(table.get("Routes", [])) >= self.route_limit:
                raise _LimitExceeded("An error occurred (RouteLimitExceeded): The maximum number of routes "
                                     f"({self.route_limit}) in route table {o['route-table-id']} has been reached.")
            self.ec2.create_route(RouteTableId=o["route-table-id"], DestinationCidrBlock=o["destination-cidr-block"],
                                  InstanceId=o["instance-id"])
        elif op == "delete-route":
            return self._delete_route(o["route-table-id"], o["destination-cidr-block"], o.get("instance-id"))
        elif op == "modify-instance-attribute":
            value = "no-source-dest-check" not in o
            self.ec2.modify_instance_attribute(InstanceId=o["instance-id"], SourceDestCheck={"Value": value})
        else:
            raise ValueError(f"unsupported ec2 operation {op}")
        return ""


    def _delete_route(self, table_id: str, cidr: str, instance_id: str | None) -> str:
        """Delete the route only if it leads to `instance_id`: a route someone else made (or
        changed) with the same destination is not ours to remove."""
        table = self.ec2.describe_route_tables(RouteTableIds=[table_id])["RouteTables"][0]
        route = next((r for r in table.get("Routes", []) if r.get("DestinationCidrBlock") == cidr), None)
        if route is None:
            raise _NotFound(f"An error occurred (InvalidRoute.NotFound): no route to {cidr} in {table_id}")
        if instance_id and route.get("InstanceId") != instance_id:
            target = (route.get("InstanceId") or route.get("GatewayId") or route.get("NetworkInterfaceId")
                      or "another target")
            return f"kept: the route to {cidr} leads to {target}, not {instance_id} (not ours)"
        self.ec2.delete_route(RouteTableId=table_id, DestinationCidrBlock=cidr)
        return ""

    def source_dest_check(self, instance_ids) -> dict[str, bool]:
        """instance id -> its source/dest check now (read before the plan changes it)."""
        import botocore.exceptions  # with boto3, only on the AWS path

        out = {}
        for iid in instance_ids:
            try:
                attr = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="sourceDestCheck")
            except botocore.exceptions.ClientError as exc:
                e = exc.response.get("Error", {})
                raise PlanError(f"cannot read instance {iid} ({e.get('Code')}: {e.get('Message')}). Check the instance "
                                "ids in the inventory's aws section.") from None
            out[iid] = bool(attr["SourceDestCheck"]["Value"])
        return out


class _NotFound(Exception):
    pass


class _LimitExceeded(Exception):
    pass
