"""NAT: take one zone's NAT gateway out of every route table that uses it for 0.0.0.0/0."""

from __future__ import annotations

from typing import Any

from chaos.aws.session import AwsFault, split_ids
from chaos.base import Fault, FaultError, FaultRefused
from gameday.aws import error_code

DEFAULT_ROUTE = "0.0.0.0/0"
HEAL_TIMEOUT_SEC = 60.0


def default_route(table: dict[str, Any]) -> dict[str, Any] | None:
    """The 0.0.0.0/0 route of a route table as EC2 describes it, or None."""
    for route in table.get("Routes", []):
        if route.get("DestinationCidrBlock") == DEFAULT_ROUTE:
            return dict(route)
    return None


def tables_routing_to(tables: list[dict[str, Any]], nat_id: str) -> list[str]:
    """Ids of the route tables whose default route goes to `nat_id`."""
    out = []
    for table in tables:
        route = default_route(table)
        if route is not None and route.get("NatGatewayId") == nat_id:
            out.append(str(table["RouteTableId"]))
    return sorted(out)


def route_target(route: dict[str, Any] | None) -> str:
    """Where a route goes, in words: "nat-1", "igw-2", "nowhere"."""
    if route is None:
        return "nowhere (no 0.0.0.0/0 route)"
    for key in ("NatGatewayId", "GatewayId", "InstanceId", "TransitGatewayId",
                "NetworkInterfaceId", "VpcPeeringConnectionId"):  # fmt: skip
        if route.get(key):
            return str(route[key])
    return "an unknown target"


class DisableNat(AwsFault):
    """Disable one zone's NAT gateway: remove the 0.0.0.0/0 route that points at it from every
    route table of the VPC, so that zone's private subnets lose outbound internet.

    Parameter: `zone` (the name in `aws.zones`, or its letter). The removed routes (route
    table id and NAT id) are written to the undo journal before the first one is deleted; heal
    puts back exactly those routes and waits until EC2 reports them active. Refuses when the
    NAT is not in that zone, or when the route tables do not route through it as the target
    says (`aws.zones.<zone>.private_route_table_ids`). The NAT gateway itself is untouched
    (deleting it would change its id and its Elastic IP).
    """

    name = "disable-nat"
    label = "NAT disabled"

    def _nat_id(self) -> str:
        zone_name, zone = self.zone(self.params.get("zone", ""))
        if zone.nat_gateway_id is None:
            raise FaultRefused(f"aws.zones.{zone_name}.nat_gateway_id is not set")
        return zone.nat_gateway_id

    def describe(self) -> str:
        zone = self.params.get("zone", "?")
        try:
            nat = self._nat_id()
        except FaultRefused:
            nat = "its NAT gateway"
        return f"remove the {DEFAULT_ROUTE} routes to {nat} (zone {zone}) from every route table"

    def _tables(self) -> list[dict[str, Any]]:
        filters = [{"Name": "vpc-id", "Values": [self.aws.vpc_id]}] if self.aws.vpc_id else []
        pages = self.client("ec2").get_paginator("describe_route_tables").paginate(Filters=filters)
        return [t for page in pages for t in page["RouteTables"]]

    def preflight(self) -> None:
        self.guard()
        zone_name, zone = self.zone(self.params.get("zone", ""))
        nat_id = self._nat_id()
        ec2 = self.client("ec2")
        try:
            nats = ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"]
        except Exception as exc:
            raise FaultRefused(f"{self.label}: {nat_id}: {error_code(exc) or exc}") from None
        if not nats or nats[0].get("State") != "available":
            state = nats[0].get("State") if nats else "not found"
            raise FaultRefused(f"{self.label}: {nat_id} is {state}, not available")
        subnet = ec2.describe_subnets(SubnetIds=[nats[0]["SubnetId"]])["Subnets"][0]
        if subnet["AvailabilityZone"] != zone_name:
            raise FaultRefused(
                f"{self.label}: {nat_id} is in {subnet['AvailabilityZone']}, not in {zone_name} "
                "as the target says"
            )
        tables = self._tables()
        if zone.private_route_table_ids:
            by_id = {t["RouteTableId"]: t for t in tables}
            for rtb in zone.private_route_table_ids:
                if rtb not in by_id:
                    raise FaultRefused(f"{self.label}: route table {rtb} not found")
                goes = route_target(default_route(by_id[rtb]))
                if goes != nat_id:
                    raise FaultRefused(
                        f"{self.label}: route table {rtb} sends {DEFAULT_ROUTE} to {goes}, not "
                        f"to {nat_id} as the target says"
                    )
        if not tables_routing_to(tables, nat_id):
            raise FaultRefused(f"{self.label}: no route table sends {DEFAULT_ROUTE} to {nat_id}")

    def inject(self) -> None:
        nat_id = self._nat_id()
        routes = tables_routing_to(self._tables(), nat_id)
        # The undo record first: a kill between two deletions still knows every route to restore.
        self.remember(nat_gateway_id=nat_id, route_tables=",".join(routes))
        ec2 = self.client("ec2")
        for rtb in routes:
            ec2.delete_route(RouteTableId=rtb, DestinationCidrBlock=DEFAULT_ROUTE)

    def _removed(self) -> tuple[str, list[str]]:
        return self.params.get("nat_gateway_id", ""), split_ids(self.params.get("route_tables", ""))

    def heal(self) -> None:
        nat_id, routes = self._removed()
        if not routes:
            return  # inject never got to learn (let alone delete) a route
        self.guard()
        ec2 = self.client("ec2")
        for rtb in routes:
            table = ec2.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]
            route = default_route(table)
            if route is None:
                ec2.create_route(
                    RouteTableId=rtb, DestinationCidrBlock=DEFAULT_ROUTE, NatGatewayId=nat_id
                )
            elif route.get("NatGatewayId") != nat_id:
                # Someone routed it elsewhere since: overwriting their change is not a heal.
                raise FaultError(
                    f"{self.label}: route table {rtb} now sends {DEFAULT_ROUTE} to "
                    f"{route_target(route)}; not put back to {nat_id}"
                )
        self.wait(
            f"the {DEFAULT_ROUTE} routes to {nat_id} active again in {', '.join(routes)}",
            lambda: self._active(routes, nat_id) == set(routes),
            HEAL_TIMEOUT_SEC,
        )

    def _active(self, routes: list[str], nat_id: str) -> set[str]:
        tables = self.client("ec2").describe_route_tables(RouteTableIds=routes)["RouteTables"]
        active = set()
        for table in tables:
            route = default_route(table)
            if route and route.get("NatGatewayId") == nat_id and route.get("State") == "active":
                active.add(str(table["RouteTableId"]))
        return active

    def in_effect(self) -> bool:
        nat_id, routes = self._removed()
        return bool(routes) and self._active(routes, nat_id) != set(routes)


FAULTS: tuple[type[Fault], ...] = (DisableNat,)
