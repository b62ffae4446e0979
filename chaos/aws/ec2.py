"""EC2: stop the backends of one zone (or the instance that is one target server)."""

from __future__ import annotations

import time
from typing import Any

from chaos.aws.session import AwsFault, split_ids
from chaos.base import Fault, FaultError, FaultRefused, Observation
from gameday.aws import error_code

STOP_TIMEOUT_SEC = 300.0
START_TIMEOUT_SEC = 300.0
# An ASG notices a stopped instance at its next health check (EC2 status checks: minutes) and
# then launches a replacement; 15 minutes bounds the wait for capacity to come back.
REPLACE_TIMEOUT_SEC = 900.0
GONE = ("shutting-down", "terminated")


def instances_of_zone(fault: AwsFault, zone_name: str) -> list[str]:
    """The backends of a zone: declared ids, else the ASG's instances there, else by tag."""
    full, zone = fault.zone(zone_name)
    if zone.instance_ids:
        return sorted(zone.instance_ids)
    aws = fault.aws
    if aws.autoscaling_group:
        groups = fault.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[aws.autoscaling_group]
        )["AutoScalingGroups"]
        if not groups:
            raise FaultRefused(f"auto scaling group {aws.autoscaling_group} not found")
        return sorted(
            i["InstanceId"]
            for i in groups[0]["Instances"]
            if i["AvailabilityZone"] == full and i.get("LifecycleState") == "InService"
        )
    if aws.instance_tags:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in aws.instance_tags.items()]
        filters += [
            {"Name": "availability-zone", "Values": [full]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
        pages = fault.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
        return sorted(
            i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]
        )
    raise FaultRefused(
        f"cannot tell which instances are in zone {full}: set aws.zones.{full}.instance_ids, "
        "aws.autoscaling_group or aws.instance_tags"
    )


def instance_states(fault: AwsFault, ids: list[str]) -> dict[str, str]:
    """Instance id -> EC2 state name ("running", "stopped"...); a missing one is "terminated"."""
    states = dict.fromkeys(ids, "terminated")
    # A filter, not InstanceIds=: asked by id, EC2 fails the whole call with
    # InvalidInstanceID.NotFound once one instance is gone (an ASG replaced it), and heal would
    # fail on every attempt; filtered, a gone instance is just not in the answer.
    filters = [{"Name": "instance-id", "Values": ids}]
    pages = fault.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
    for page in pages:
        for reservation in page["Reservations"]:
            for i in reservation["Instances"]:
                states[i["InstanceId"]] = i["State"]["Name"]
    return states


def check_permission(call: Any, **kwargs: Any) -> None:
    """Ask EC2 whether we may make `call`, with DryRun=True: nothing changes."""
    try:
        call(DryRun=True, **kwargs)
    except Exception as exc:
        if error_code(exc) == "DryRunOperation":
            return  # "would have succeeded"
        raise FaultRefused(f"EC2 refuses {call.__name__}: {error_code(exc) or exc}") from None
    raise FaultError(f"EC2 ignored DryRun=True on {call.__name__}")


class StopServer(AwsFault):
    """Stop EC2 instances: those of one zone, or the one instance that is a target server.

    Parameters: `zone` (a name in `aws.zones` or its letter), or `server` (a target server:
    `aws.server_instances` names its instance; otherwise every backend of its zone stops), and
    `mode`: `graceful` (a normal stop) or `kill` (a forced stop, as a host losing power), and
    optionally `replace: asg`: inject then waits (at most `timeout_sec`, default 900) until
    the auto scaling group has as many in-service instances as before, not counting the
    stopped ones, and records how long capacity took to return. The
    instance ids are written to the undo journal before anything stops; preflight asks EC2
    with DryRun=True whether the stop would be allowed. Heal starts those still stopped and
    waits until they run; an instance the auto scaling group terminated meanwhile (it replaces
    stopped instances after its health check grace period) is left alone.
    """

    name = "stop-server"
    label = "EC2 instances stopped"

    def _selected(self) -> list[str]:
        server = self.params.get("server")
        if server:
            if server in self.aws.server_instances:
                return [self.aws.server_instances[server]]
            zones = [s.zone for s in self.target.servers if s.name == server]
            if not zones:
                known = ", ".join(s.name for s in self.target.servers) or "none"
                raise FaultRefused(f"the target has no server {server!r} (servers: {known})")
            return instances_of_zone(self, zones[0])
        zone = self.params.get("zone")
        if not zone:
            raise FaultRefused(f"{self.label}: give a zone or a server")
        return instances_of_zone(self, zone)

    def describe(self) -> str:
        which = (
            f"server {self.params['server']}"
            if self.params.get("server")
            else f"zone {self.params.get('zone', '?')}"
        )
        forced = " (forced)" if self.params.get("mode") == "kill" else ""
        ids = self.params.get("instances") or "its instances"
        return f"stop the EC2 instances of {which}{forced}: {ids}"

    def preflight(self) -> None:
        self.guard()
        if self.params.get("mode", "graceful") not in ("graceful", "kill"):
            raise FaultRefused(f"mode must be graceful or kill, not {self.params['mode']!r}")
        ids = self._selected()
        if not ids:
            raise FaultRefused(f"{self.label}: no instance selected ({self.describe()})")
        not_running = {i: s for i, s in instance_states(self, ids).items() if s != "running"}
        if not_running:
            shown = ", ".join(f"{i} {s}" for i, s in sorted(not_running.items()))
            raise FaultRefused(f"{self.label}: not every instance is running: {shown}")
        if self.params.get("replace") not in (None, "asg"):
            raise FaultRefused(f"replace must be asg, not {self.params['replace']!r}")
        if self.params.get("replace") == "asg" and not self.aws.autoscaling_group:
            raise FaultRefused(f"{self.label}: replace=asg needs aws.autoscaling_group")
        check_permission(self.client("ec2").stop_instances, InstanceIds=ids)

    def _asg(self) -> dict[str, Any]:
        groups = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[self.aws.autoscaling_group]
        )["AutoScalingGroups"]
        return dict(groups[0])

    def _serving(self, stopped: list[str]) -> list[str]:
        """In-service, healthy instances of the ASG other than the ones this fault stopped."""
        return [
            i["InstanceId"] for i in self._asg()["Instances"]
            if i["InstanceId"] not in stopped and i.get("LifecycleState") == "InService"
            and i.get("HealthStatus", "Healthy") == "Healthy"
        ]  # fmt: skip

    def inject(self) -> None:
        ids = self._selected()
        self.remember(instances=",".join(ids))
        replace = self.params.get("replace") == "asg"
        before = self._serving([]) if replace else []
        started = time.monotonic()
        self.client("ec2").stop_instances(InstanceIds=ids, Force=self.params.get("mode") == "kill")
        self.wait(
            f"{', '.join(ids)} stopped",
            lambda: all(s in ("stopped", *GONE) for s in instance_states(self, ids).values()),
            STOP_TIMEOUT_SEC,
        )
        if replace:
            timeout = float(self.params.get("timeout_sec", REPLACE_TIMEOUT_SEC))
            self.wait(
                f"auto scaling group {self.aws.autoscaling_group} back to {len(before)} in-service "
                f"instances besides {', '.join(ids)}",
                lambda: len(self._serving(ids)) >= len(before),
                timeout,
            )
            took = time.monotonic() - started
            new = sorted(set(self._serving(ids)) - set(before))
            self.observations.append(
                Observation("capacity-returned", time.time(),
                            {"after_sec": f"{took:.1f}", "replacements": ",".join(new)})
            )  # fmt: skip

    def heal(self) -> None:
        ids = split_ids(self.params.get("instances", ""))
        if not ids:
            return
        self.guard()
        # A stopping instance cannot be started yet: let it finish stopping first.
        self.wait(
            f"{', '.join(ids)} done stopping",
            lambda: "stopping" not in instance_states(self, ids).values(),
            STOP_TIMEOUT_SEC,
        )
        stopped = [i for i, s in instance_states(self, ids).items() if s == "stopped"]
        if stopped:
            self.client("ec2").start_instances(InstanceIds=stopped)
        self.wait(
            f"{', '.join(ids)} running",
            lambda: all(s in ("running", *GONE) for s in instance_states(self, ids).values()),
            START_TIMEOUT_SEC,
        )

    def in_effect(self) -> bool:
        ids = split_ids(self.params.get("instances", ""))
        return any(s in ("stopping", "stopped") for s in instance_states(self, ids).values())


FAULTS: tuple[type[Fault], ...] = (StopServer,)
