"""RDS: a forced failover of the Multi-AZ instance (or of the Aurora cluster)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from chaos.aws.session import AwsFault
from chaos.base import Fault, FaultError, FaultRefused, Observation

# The seed promises failover in 1-2 minutes; AWS documents up to a few minutes more before the
# instance reports `available` again. The probes measure the outage; this only bounds the wait.
FAILOVER_TIMEOUT_SEC = 600.0
# AWS's own events are read from a little before the reboot (clocks of client and AWS differ).
EVENTS_SKEW = timedelta(minutes=1)


def failover_events(events: list[dict[str, Any]]) -> list[Observation]:
    """AWS's failover events ("Multi-AZ instance failover started.", "...completed.") as
    observations, oldest first."""
    out = []
    for event in events:
        message = str(event.get("Message", ""))
        if "failover" not in message.lower():
            continue
        when = event["Date"]
        wall = when.timestamp() if isinstance(when, datetime) else float(when)
        name = "aws-failover-" + ("completed" if "complete" in message.lower() else "started")
        out.append(Observation(name, wall, {"message": message}))
    return sorted(out, key=lambda o: o.wall)


class DatabaseFailover(AwsFault):
    """RDS reboot with forced failover: the standby in the other zone becomes the primary.

    Refuses unless the instance is Multi-AZ and `available` (a single-AZ reboot is an outage,
    not a failover). After the reboot, waits until RDS reports the instance `available` in
    another zone (at most `timeout_sec`, default 600), and records AWS's own "failover
    started/completed" events and the zones before and after as marks next to the probes'
    view. With `aws.database.aurora_cluster_id`, runs `failover_db_cluster` instead and waits
    for another instance to be the writer. Nothing to undo: heal waits until the database is
    `available` (failing back would be a second failover).
    """

    name = "database-failover"
    label = "database failover"

    def _db(self) -> tuple[str | None, str | None]:
        db = self.aws.database
        if db is None:
            raise FaultRefused(f"{self.target.source}: aws.database is not set")
        return db.instance_id, db.aurora_cluster_id

    def _timeout(self) -> float:
        return float(self.params.get("timeout_sec", FAILOVER_TIMEOUT_SEC))

    def describe(self) -> str:
        try:
            instance, cluster = self._db()
        except FaultRefused:
            return "fail over the RDS database (aws.database is not set)"
        if cluster:
            return f"fail over the Aurora cluster {cluster} to another instance"
        return f"reboot the RDS instance {instance} with forced failover to its standby"

    # -- an RDS instance ---------------------------------------------------------------------

    def _instance(self) -> dict[str, Any]:
        instance, _ = self._db()
        found = self.client("rds").describe_db_instances(DBInstanceIdentifier=instance)
        return dict(found["DBInstances"][0])

    # -- an Aurora cluster -------------------------------------------------------------------

    def _cluster(self) -> dict[str, Any]:
        _, cluster = self._db()
        return dict(
            self.client("rds").describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0]
        )

    @staticmethod
    def _writer(cluster: dict[str, Any]) -> str:
        members = cluster.get("DBClusterMembers", [])
        return next((m["DBInstanceIdentifier"] for m in members if m.get("IsClusterWriter")), "")

    def primary_zone(self) -> str:
        """The zone of the RDS primary, or of the Aurora cluster's writer instance."""
        _, cluster = self._db()
        if cluster:
            writer = self._writer(self._cluster())
            found = self.client("rds").describe_db_instances(DBInstanceIdentifier=writer)
            return str(found["DBInstances"][0].get("AvailabilityZone", ""))
        return str(self._instance().get("AvailabilityZone", ""))

    # -- the protocol ------------------------------------------------------------------------

    def preflight(self) -> None:
        self.guard()
        instance, cluster = self._db()
        if cluster:
            c = self._cluster()
            if c.get("Status") != "available":
                raise FaultRefused(f"{self.label}: cluster {cluster} is {c.get('Status')}")
            if len(c.get("DBClusterMembers", [])) < 2:
                raise FaultRefused(
                    f"{self.label}: cluster {cluster} has no replica to fail over to"
                )
            return
        db = self._instance()
        if not db.get("MultiAZ"):
            raise FaultRefused(
                f"{self.label}: {instance} is not Multi-AZ: a reboot would be an outage, "
                "not a failover"
            )
        if db.get("DBInstanceStatus") != "available":
            raise FaultRefused(f"{self.label}: {instance} is {db.get('DBInstanceStatus')}")

    def inject(self) -> None:
        instance, cluster = self._db()
        rds = self.client("rds")
        started = time.time()
        if cluster:
            writer = self._writer(self._cluster())
            self.remember(writer_before=writer)
            rds.failover_db_cluster(DBClusterIdentifier=cluster)
            self.wait(
                f"Aurora cluster {cluster} available with a writer other than {writer}",
                lambda: self._settled_cluster(writer),
                self._timeout(),
            )
            after = self._writer(self._cluster())
            self.observations.append(
                Observation("writer-moved", time.time(), {"from": writer, "to": after})
            )
            self._record_events(cluster, "db-cluster", started)
            return
        zone = str(self._instance()["AvailabilityZone"])
        self.remember(zone_before=zone)
        rds.reboot_db_instance(DBInstanceIdentifier=instance, ForceFailover=True)
        seen: list[dict[str, Any]] = []

        def settled() -> bool:
            seen[:] = [self._instance()]
            return seen[0].get("DBInstanceStatus") == "available" and (
                seen[0].get("AvailabilityZone") != zone
            )

        try:
            self.wait(f"{instance} available in a zone other than {zone}", settled,
                      self._timeout())  # fmt: skip
        except FaultError:
            last = seen[0] if seen else {}
            raise FaultError(
                f"{self.label}: after {self._timeout():g} s {instance} is "
                f"{last.get('DBInstanceStatus')} in {last.get('AvailabilityZone')}: the primary "
                f"did not move from {zone}"
            ) from None
        self.observations.append(
            Observation(
                "primary-moved",
                time.time(),
                {"from": zone, "to": str(seen[0]["AvailabilityZone"])},
            )
        )
        self._record_events(str(instance), "db-instance", started)

    def _settled_cluster(self, old_writer: str) -> bool:
        c = self._cluster()
        return c.get("Status") == "available" and self._writer(c) not in ("", old_writer)

    def _record_events(self, source: str, source_type: str, started: float) -> None:
        since = datetime.fromtimestamp(started, tz=UTC) - EVENTS_SKEW
        events = self.client("rds").describe_events(
            SourceIdentifier=source, SourceType=source_type, StartTime=since
        )["Events"]
        self.observations.extend(failover_events(events))

    def heal(self) -> None:
        self.guard()
        self.wait("the database available", lambda: not self.in_effect(), self._timeout())

    def in_effect(self) -> bool:
        _, cluster = self._db()
        if cluster:
            return self._cluster().get("Status") != "available"
        return self._instance().get("DBInstanceStatus") != "available"


FAULTS: tuple[type[Fault], ...] = (DatabaseFailover,)
