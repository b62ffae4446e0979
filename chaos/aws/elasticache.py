"""ElastiCache: `test_failover` of the replication group's primary node."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from chaos.aws.session import AwsFault
from chaos.base import Fault, FaultError, FaultRefused, Observation

FAILOVER_TIMEOUT_SEC = 600.0
EVENTS_SKEW = timedelta(minutes=1)


def primary_of(group: dict[str, Any], node_group_id: str) -> dict[str, Any] | None:
    """The primary member (CacheClusterId, PreferredAvailabilityZone...) of a node group."""
    for node_group in group.get("NodeGroups", []):
        if node_group.get("NodeGroupId") != node_group_id:
            continue
        for member in node_group.get("NodeGroupMembers", []):
            if member.get("CurrentRole") == "primary":
                return dict(member)
    return None


class CacheFailover(AwsFault):
    """ElastiCache test_failover: the replica of the node group is promoted to primary.

    Refuses unless the replication group is `available`, automatic failover is enabled and the
    node group (`aws.cache.node_group_id`, default 0001) has a primary and a replica. Waits
    until the group is `available` with another primary (at most `timeout_sec`, default 600)
    and records ElastiCache's own failover events. AWS allows a few test_failover calls per
    day and group. Nothing to undo: heal waits until the group is `available`.
    """

    name = "cache-failover"
    label = "cache failover"

    def _ids(self) -> tuple[str, str]:
        cache = self.aws.cache
        if cache is None:
            raise FaultRefused(f"{self.target.source}: aws.cache is not set")
        return cache.replication_group_id, cache.node_group_id

    def _timeout(self) -> float:
        return float(self.params.get("timeout_sec", FAILOVER_TIMEOUT_SEC))

    def _group(self) -> dict[str, Any]:
        group_id, _ = self._ids()
        found = self.client("elasticache").describe_replication_groups(ReplicationGroupId=group_id)
        return dict(found["ReplicationGroups"][0])

    def primary_zone(self) -> str:
        """The zone of the node group's primary ("" if it has none)."""
        _, node_group = self._ids()
        primary = primary_of(self._group(), node_group) or {}
        return str(primary.get("PreferredAvailabilityZone", ""))

    def describe(self) -> str:
        try:
            group, node_group = self._ids()
        except FaultRefused:
            return "fail over the ElastiCache primary (aws.cache is not set)"
        return f"test_failover on node group {node_group} of ElastiCache {group}"

    def preflight(self) -> None:
        self.guard()
        group_id, node_group = self._ids()
        group = self._group()
        if group.get("Status") != "available":
            raise FaultRefused(f"{self.label}: {group_id} is {group.get('Status')}")
        if group.get("AutomaticFailover") != "enabled":
            raise FaultRefused(
                f"{self.label}: {group_id} has automatic failover "
                f"{group.get('AutomaticFailover')}: nothing would take over"
            )
        members = [
            m for ng in group.get("NodeGroups", []) if ng.get("NodeGroupId") == node_group
            for m in ng.get("NodeGroupMembers", [])
        ]  # fmt: skip
        if primary_of(group, node_group) is None or len(members) < 2:
            raise FaultRefused(
                f"{self.label}: node group {node_group} of {group_id} has no primary and "
                f"replica ({len(members)} member(s))"
            )

    def inject(self) -> None:
        group_id, node_group = self._ids()
        before = primary_of(self._group(), node_group) or {}
        old = str(before.get("CacheClusterId", ""))
        self.remember(primary_before=old)
        started = time.time()
        self.client("elasticache").test_failover(
            ReplicationGroupId=group_id, NodeGroupId=node_group
        )
        after: list[dict[str, Any]] = []

        def settled() -> bool:
            group = self._group()
            after[:] = [primary_of(group, node_group) or {}]
            return group.get("Status") == "available" and after[0].get("CacheClusterId") not in (
                None, old,
            )  # fmt: skip

        try:
            self.wait(f"{group_id} available with a primary other than {old}", settled,
                      self._timeout())  # fmt: skip
        except FaultError:
            raise FaultError(
                f"{self.label}: {group_id} did not promote a new primary within "
                f"{self._timeout():g} s (primary still {old})"
            ) from None
        self.observations.append(
            Observation(
                "primary-moved",
                time.time(),
                {
                    "from": old,
                    "to": str(after[0].get("CacheClusterId")),
                    "zone": str(after[0].get("PreferredAvailabilityZone", "")),
                },
            )
        )
        since = datetime.fromtimestamp(started, tz=UTC) - EVENTS_SKEW
        events = self.client("elasticache").describe_events(
            SourceIdentifier=group_id, SourceType="replication-group", StartTime=since
        )["Events"]
        for event in events:
            message = str(event.get("Message", ""))
            if "failover" in message.lower():
                when = event["Date"]
                wall = when.timestamp() if isinstance(when, datetime) else float(when)
                self.observations.append(Observation("aws-event", wall, {"message": message}))

    def heal(self) -> None:
        self.guard()
        self.wait("the cache available", lambda: not self.in_effect(), self._timeout())

    def in_effect(self) -> bool:
        return self._group().get("Status") != "available"


class CacheCrash(CacheFailover):
    """ElastiCache's own simulated failure of the primary node (TestFailover), as the crash
    of the Redis master: AWS documents TestFailover as a node failure, and there is no other
    way to crash a managed primary. The same call as cache-failover, under the crash's name,
    so "the cache master crashes" runs on AWS too."""

    name = "cache-crash"
    label = "cache master crash (ElastiCache TestFailover)"


FAULTS: tuple[type[Fault], ...] = (CacheFailover, CacheCrash)
