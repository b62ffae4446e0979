"""Targets: one YAML file per deployment, binding roles to endpoints.

A target names the entrypoint (the load balancer's URL), the load balancer and how to read its
backends' state, the database writer and reader, the cache, the servers and their zones, and
the reference API the acceptance scenarios talk to. Only `name`, `provider` and `entrypoint`
are required: a scenario that needs a role the target lacks is skipped with that reason.

Values may use `${VAR}` or `${VAR:-default}`; secrets belong in the environment, never in the
file. Loading validates everything and fails with one line naming the file, the field and the
problem (`TargetError`), before anything is touched.

A target file is untrusted input: only a regular file of at most `MAX_TARGET_BYTES` is read
(never a FIFO, a device or a folder, which would hang or crash the reader), it must be UTF-8,
its YAML may nest at most `MAX_YAML_DEPTH` levels and hold at most `MAX_YAML_VALUES` values
with its aliases expanded (a 600-byte alias bomb is refused, not expanded), a key given twice
is an error, and every number has a range.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import shlex
import stat
import string
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from gameday.secrets import redact, register_secret, register_url_passwords

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"
DEFAULT_TARGET = "lab"

# The limits of a target file (the largest real one is a few KB and 300 values).
MAX_TARGET_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 10_000
# Harness-wide caps that the target's own numbers must stay within.
MAX_USERS = 1000  # = gameday.load.MAX_USERS (which imports this module)
MAX_RPS = 100_000.0
MAX_ID = 2**63 - 1  # PostgreSQL's bigint

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Keys whose interpolated values are secrets even outside a URL.
_SECRET_KEY = re.compile(r"password|secret|token|api_key", re.IGNORECASE)


class TargetError(Exception):
    """A target file cannot be used. `str()` is the one line to show the user."""


def _no_blanks(value: str) -> None:
    # A space or control character makes a URL that one client reads one way and another
    # differently (or refuses only when the scenario runs): refuse it when the file is read.
    bad = next((c for c in value if c.isspace() or not c.isprintable()), None)
    if bad is not None:
        what = "a space" if bad == " " else f"the character {bad!r}"
        raise ValueError(f"{_short(value)} holds {what}")


def _short(value: str, limit: int = 80) -> str:
    """The repr of a value for a message: redacted, and cut short (one line, not a page)."""
    shown = redact(repr(value))
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _port_ok(port: str, value: str) -> None:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{_short(value)} has a bad port {port[:12]!r} (1..65535)")


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        _no_blanks(value)
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            raise ValueError(f"{value!r} is not a URL with scheme {' or '.join(schemes)}")
        # A libpq multi-host URL ("h1:5432,h2:5432") is not one netloc: check each host.
        hosts = parts.netloc.rpartition("@")[2]
        if not hosts or any(not h.split(":")[0] for h in hosts.split(",")):
            raise ValueError(f"{value!r} has no host")
        for h in hosts.split(","):
            if h.startswith("["):  # [::1]:8080
                port = h.rpartition("]")[2].removeprefix(":")
                if h.endswith(":") or port:
                    _port_ok(port, value)
            elif ":" in h:
                _port_ok(h.rpartition(":")[2], value)
        return value

    return AfterValidator(check)


HttpUrl = Annotated[str, _url(("http", "https"))]
PostgresUrl = Annotated[str, _url(("postgresql", "postgres"))]
RedisUrl = Annotated[str, _url(("redis", "rediss"))]


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{_short(value)} must start with /")
    _no_blanks(value)
    return value


UrlPath = Annotated[str, AfterValidator(_path)]


def _blankless(value: str) -> str:
    _no_blanks(value)
    return value


def _template(*names: str) -> AfterValidator:
    """A text with `{id}`-style fields filled in at run time: only these fields, well formed."""

    def check(value: str) -> str:
        _no_blanks(value)
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"{_short(value)}: {exc}") from None
        for f in fields:
            if f not in names:
                known = " or ".join("{" + n + "}" for n in names)
                raise ValueError(f"{_short(value)} uses {{{f}}}: only {known} is filled in")
        return value

    return AfterValidator(check)


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _header(value: str) -> str:
    # RFC 9110 field names: an empty or spaced name is refused by every HTTP client, but only
    # when the scenario sends it.
    if not _TOKEN.match(value):
        raise ValueError(f"{_short(value)} is not an HTTP header name")
    return value


HeaderName = Annotated[str, AfterValidator(_header)]


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or any(c.isspace() for c in host):
        raise ValueError(f"{_short(value)} is not host:port")
    _port_ok(port, value)
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]

MAX_FAULT_TIMEOUT_SEC = 3600.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __repr__(self) -> str:
        # Tracebacks and assertion messages show fixtures' reprs: never a DSN's password.
        return redact(super().__repr__())

    __str__ = __repr__


class Entrypoint(_Model):
    """Where users come in: the load balancer's URL."""

    url: HttpUrl
    health_path: UrlPath = "/health"
    served_by_header: HeaderName = "X-Served-By"
    # The whole request (connect, headers, body), not each read: a server trickling bytes is
    # given up on after this.
    timeout_sec: float = Field(default=2.0, gt=0, le=120)


class LoadBalancer(_Model):
    """What the load balancer is, and how to read its view of its backends.

    `haproxy` (stats page or socket: per-server state), `alb` (target health through the
    AWS APIs), `nginx` (stub_status: counters, no per-server state) and `none` (anything
    else: Traefik, Envoy, a CDN). Where no per-server state can be read, rotation is judged
    from the served-by header alone.
    """

    kind: Literal["haproxy", "alb", "nginx", "none"]
    stats_url: HttpUrl | None = None
    stats_socket: str | None = None
    # nginx's stub_status page (active connections, requests handled).
    status_url: HttpUrl | None = None
    backend: str = "servers"
    # How long the load balancer takes to take a dead server out (checks x interval).
    detection_sec: float = Field(default=2.0, gt=0, le=600)

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> LoadBalancer:
        if (self.stats_url or self.stats_socket) and self.kind != "haproxy":
            raise ValueError(f"stats_url/stats_socket: HAProxy's, not for kind {self.kind}")
        if self.status_url and self.kind != "nginx":
            raise ValueError(f"status_url: nginx's stub_status, not for kind {self.kind}")
        return self


class Database(_Model):
    """PostgreSQL with a standby (RDS Multi-AZ or self-run)."""

    kind: Literal["postgres"] = "postgres"
    writer_url: PostgresUrl
    reader_url: PostgresUrl | None = None
    synchronous: bool = True
    max_replica_lag_sec: float = Field(default=5.0, gt=0, le=3600)
    replica_read_within_sec: float = Field(default=2.0, gt=0, le=600)


class Persistence(_Model):
    """What the cache promises to keep across a restart (the seed: AOF, fsync every second)."""

    appendonly: bool
    appendfsync: Literal["always", "everysec", "no"] | None = None
    rdb: bool | None = None


class Cache(_Model):
    """Redis with a replica (ElastiCache or self-run) behind one primary endpoint."""

    kind: Literal["redis"] = "redis"
    url: RedisUrl
    # host:port of each Sentinel, when a Sentinel (not ElastiCache) manages failover.
    sentinels: list[HostPort] = []
    master_name: str | None = None
    persistence: Persistence | None = None
    # Who promotes the replica: sentinel (with `sentinels`), managed (ElastiCache fails over
    # by itself) or none (promotion by hand or by a declared fault). Default: sentinel when
    # sentinels are listed, else none.
    failover: Literal["sentinel", "managed", "none"] | None = None
    # host:port of every Redis node (master and replicas): asked one by one whether they take
    # writes, so a split brain (two masters) is seen. Optional.
    nodes: list[HostPort] = []

    @model_validator(mode="after")
    def _sentinels_for_sentinel(self) -> Cache:
        if self.failover == "sentinel" and not self.sentinels:
            raise ValueError("failover: sentinel needs the sentinels' host:port in sentinels")
        if self.sentinels and self.failover not in (None, "sentinel"):
            raise ValueError(f"sentinels are listed but failover is {self.failover!r}")
        return self

    def failover_manager(self) -> str:
        if self.failover is not None:
            return self.failover
        return "sentinel" if self.sentinels else "none"


def _engine(value: str) -> str:
    # The addresses Docker's own clients accept (DOCKER_HOST): a socket, TCP (TLS or not), SSH.
    parts = urlsplit(value)
    if parts.scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            raise ValueError(f"{value!r} must be unix:///absolute/path/to/docker.sock")
        return value
    if parts.scheme not in ("tcp", "ssh"):
        raise ValueError(f"{value!r} is not a Docker engine address (unix://, tcp:// or ssh://)")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    if parts.password is not None:
        # Not echoed: the message would carry the password.
        raise ValueError("the address holds a password: use an SSH key or TLS files instead")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a bad port") from None
    if port == 0:
        raise ValueError(f"{value!r} has a bad port 0 (1..65535)")
    if parts.scheme == "tcp" and port is None:
        raise ValueError(f"{value!r} needs a port (2376 with TLS, 2375 without)")
    if parts.path not in ("", "/"):
        raise ValueError(f"{value!r} must not have a path")
    return value


EngineAddress = Annotated[str, AfterValidator(_engine)]


class DockerTls(_Model):
    """TLS for a `tcp://` engine (dockerd --tlsverify): the files `docker --tlsverify` uses."""

    ca: str = Field(min_length=1)
    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)
    # False only for an engine with a self-signed certificate you cannot add to `ca`.
    verify: bool = True


class DockerDatabase(_Model):
    """The PostgreSQL container of a Docker server (primary or replica: found at run time)."""

    service: str = Field(min_length=1)
    # The data folder inside the container; default: the container's own $PGDATA.
    pgdata: str | None = None
    # The OS user that owns the data folder (pg_ctl refuses to run as root).
    user: str = Field(default="postgres", min_length=1)
    # manual: gameday promotes the replica (pg_ctl promote), as the seed's runbook does.
    # automatic: a failover manager (pg_auto_failover, Patroni) promotes it and rejoins the
    # old primary as a replica when that starts again; gameday only takes the primary away.
    failover: Literal["manual", "automatic"] = "manual"


class DockerHost(_Model):
    """How to reach a server's Docker Engine and which containers are that server's.

    The containers are the ones labelled `com.docker.compose.project=<project>` (Docker
    Compose sets the label). They start in the order of their `com.docker.compose.depends_on`
    labels, else in `start_order`, else by name.
    """

    engine: EngineAddress
    tls: DockerTls | None = None
    project: str = Field(min_length=1)
    start_order: list[str] = []
    database: DockerDatabase | None = None
    cache_service: str | None = None
    # The port Redis listens on inside its container (6379 in the seed's Compose files).
    cache_port: int = Field(default=6379, gt=0, lt=65536)
    # The application's service ("the backend of server X is killed").
    backend_service: str | None = Field(default=None, min_length=1)
    stop_timeout_sec: int = Field(default=10, ge=0, le=600)
    health_timeout_sec: float = Field(default=120.0, gt=0, le=1800)
    connect_timeout_sec: float = Field(default=5.0, gt=0, le=120)

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> DockerHost:
        if self.tls is not None and not self.engine.startswith("tcp://"):
            raise ValueError("tls: only a tcp:// engine uses TLS files")
        return self


class Server(_Model):
    """A backend server (a host, an EC2 instance) in a zone."""

    name: str = Field(min_length=1)
    zone: str = Field(min_length=1)
    # The server's own address, bypassing the load balancer (for targeted checks).
    url: HttpUrl | None = None
    # For `provider: docker`: the server's Docker Engine and compose project.
    docker: DockerHost | None = None


class Orders(_Model):
    """Any HTTP write API whose writes can be read back by id (the reference app's orders,
    a `PUT /v1/notes/{id}`...): what the write probe and the order acceptance check send.

    `id_from: answer` (the default): the server assigns the id and the answer carries it in
    `id_field`. `id_from: client`: the harness makes a unique id and puts it where `{id}`
    stands, in `create_path` (required there) and in any string of `body`.
    """

    method: Literal["POST", "PUT", "PATCH"] = "POST"
    create_path: Annotated[str, AfterValidator(_path), _template("id")] = "/api/orders"
    id_from: Literal["answer", "client"] = "answer"
    read_path: Annotated[str, AfterValidator(_path), _template("id")] = "/api/orders/{id}"
    body: dict[str, Any] = {"item": "gameday-probe", "quantity": 1}
    id_field: str = Field(default="id", min_length=1)
    # The statuses that acknowledge a write (default: any 2xx).
    success_codes: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    # null: the API has no idempotency keys (a write retried by the harness is never resent).
    idempotency_header: HeaderName | None = "Idempotency-Key"
    # null: the read path is consistent as it is.
    consistent_read_query: Annotated[str, AfterValidator(_blankless)] | None = "consistent=true"

    @model_validator(mode="after")
    def _ids_have_a_place(self) -> Orders:
        if "{id}" not in self.read_path:
            raise ValueError(f"read_path: {self.read_path!r} has no {{id}} to read a write back")
        if self.id_from == "client" and "{id}" not in self.create_path:
            raise ValueError(
                f"create_path: {self.create_path!r} has no {{id}}, but id_from is client "
                "(the harness's id must go into the path)"
            )
        return self

    def acknowledged(self, status: int) -> bool:
        if self.success_codes is not None:
            return status in self.success_codes
        return 200 <= status < 300


class Sessions(_Model):
    login_path: UrlPath = "/api/login"
    login_body: dict[str, Any] = {"user": "{user}"}
    token_field: str = Field(default="session", min_length=1)
    whoami_path: UrlPath = "/api/me"


class RateLimit(_Model):
    # The acceptance check sends requests + 1 within window_sec: it is skipped, saying why,
    # when that is more than load.max_rps or the harness's own cap allows.
    requests: int = Field(default=100, gt=0, le=1_000_000)
    window_sec: int = Field(default=60, gt=0, le=86_400)
    path: UrlPath = "/api/products/1"
    user_header: HeaderName = "X-User-Id"


class App(_Model):
    """The application's API as the acceptance scenarios use it (defaults: the reference app).
    Each part can be switched off with null; the scenarios that need it are then skipped."""

    # null: the application has no products (cache-aside and the shop's load are skipped).
    product_path: Annotated[str, AfterValidator(_path), _template("id")] | None = (
        "/api/products/{id}"
    )
    # The cache key of a product (cache-aside): the acceptance check evicts it to force a miss.
    product_key: Annotated[str, _template("id")] | None = "product:{id}"
    product_id: int = Field(default=1, ge=0, le=MAX_ID)
    cache_header: HeaderName = "X-Cache"
    orders: Orders | None = Orders()
    sessions: Sessions | None = Sessions()
    rate_limit: RateLimit | None = RateLimit()


# The capabilities a scenario can ask for by name ("When the database fails over" asks for
# "database-failover"). A target provides one through its provider's built-in fault or by
# declaring a command fault under the same name in `faults:`.
FAULT_NAMES = (
    "database-failover",
    "database-crash",
    "stop-server",
    "stop-service",
    "kill-backend",
    "cache-failover",
    "cache-crash",
    "cache-restart",
    "disable-nat",
    "zone-outage",
    "zone-partition",
    # resource faults, so the seed's resource alert rules can be made to fire (bounded by
    # the target's `stress:` limits)
    "cpu-stress",
    "memory-pressure",
    "disk-fill",
)
# What a scenario's step hands a declared command fault: `{server}` in its command lines is
# replaced by the server the step names, and so on (`{peer}`: the other zone of a partition;
# `{percent}`: how full a resource fault makes the memory or the disk).
FAULT_PLACEHOLDERS = ("server", "zone", "mode", "service", "peer", "percent")
_FAULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _command_line(value: str) -> str:
    # Quotes that do not close would make the fault unrunnable at the worst moment: its heal.
    if not value.strip():
        raise ValueError("an empty command")
    try:
        shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"{_short(value)}: {exc}") from None
    return value


class DeclaredFault(_Model):
    """A command fault the target declares (chaos/command.py runs it): your own commands
    inject, heal and check it, locally or over SSH."""

    inject: Annotated[str, AfterValidator(_command_line)]
    heal: Annotated[str, AfterValidator(_command_line)]
    check: Annotated[str, AfterValidator(_command_line)] | None = None
    ssh: str | None = Field(default=None, pattern=r"^[^\s-][^\s]*$")
    timeout_sec: float = Field(default=60.0, gt=0, le=MAX_FAULT_TIMEOUT_SEC)
    label: str | None = Field(default=None, min_length=1)


class Load(_Model):
    """The largest load the harness may put on this deployment (locust users and probes).

    A step or `gameday baseline` asking for more is refused before anything starts. Requests
    per second are bounded by what each locust user can send at most (loadtests/pacing.py)
    times the users, plus the probes' own rates.
    """

    max_users: int | None = Field(default=None, gt=0, le=MAX_USERS)
    max_rps: float | None = Field(default=None, gt=0, le=MAX_RPS)


class Stress(_Model):
    """The most the resource faults (cpu-stress, memory-pressure, disk-fill) may take on this
    deployment. A fault asking for more is refused before it acts, naming the field. Every
    stress also ends by itself after `max_seconds` (stress-ng's own timeout), even if the
    harness is killed and nobody heals it."""

    max_cpu_workers: int = Field(default=2, gt=0, le=64)
    max_memory_mb: int = Field(default=512, gt=0)
    max_disk_mb: int = Field(default=1024, gt=0)
    # How full a memory or disk fault may make its resource (percent).
    max_percent: float = Field(default=95.0, gt=0, lt=100)
    max_seconds: int = Field(default=600, gt=0, le=3600)


class Receiver(_Model):
    """How the harness sees an alert reach its receiver: a webhook it runs itself at `listen`
    (route Alertmanager to `http://<listen>/...` during game days), or Alertmanager's own
    counters of notifications sent by `integration` (slack, email, webhook, pagerduty...) for
    a receiver it cannot read back."""

    listen: HostPort | None = None
    integration: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Receiver:
        if (self.listen is None) == (self.integration is None):
            raise ValueError("give exactly one of listen (host:port) or integration")
        return self


class Monitoring(_Model):
    """Where the deployment's alerts can be read: Prometheus and Alertmanager, or (AWS)
    CloudWatch alarms named per purpose (the alert names the scenarios use:
    `PostgreSQLDown: cloudmart-db-down`)."""

    prometheus_url: HttpUrl | None = None
    alertmanager_url: HttpUrl | None = None
    receiver: Receiver | None = None
    cloudwatch_alarms: dict[str, str] = {}

    @model_validator(mode="after")
    def _somewhere_to_read(self) -> Monitoring:
        if self.alertmanager_url is None and not self.cloudwatch_alarms:
            raise ValueError(
                "give alertmanager_url (Prometheus/Alertmanager) or cloudwatch_alarms (AWS)"
            )
        if self.receiver is not None and self.alertmanager_url is None:
            raise ValueError("receiver: checked through Alertmanager; give alertmanager_url")
        for purpose, alarm in self.cloudwatch_alarms.items():
            if not alarm.strip():
                raise ValueError(f"cloudwatch_alarms.{purpose}: empty alarm name")
        return self


class LabSettings(_Model):
    """For `provider: lab`: the lab that serves this target (the harness starts it)."""

    base_port: int = Field(default=17400, gt=1024, lt=65000)
    # namespaces: the zones are network namespaces with a NAT each (the network faults need
    # it); loopback: everything on 127.0.0.1, `network_note` says why.
    network: Literal["namespaces", "loopback"] = "loopback"
    network_note: str = ""


class EgressZone(_Model):
    """How the harness gets into one zone to call the internet from there."""

    # A network namespace (/run/netns/NAME) the harness enters (needs root).
    netns: str = Field(min_length=1)


class Egress(_Model):
    """How to ask each zone whether it reaches the internet, and through which address.

    `via: servers` (the default): GET `path` on the zone's servers (their `url`); the reference
    app's `/egress` calls an internet service and answers with the address it saw (the zone's
    NAT) or 502. `via: netns`: the harness enters each zone's network namespace (`zones`) and
    calls `url` itself, which must answer with JSON naming the caller's address in `source`
    (the lab). `via: routes`: judged from the zone's route tables (AWS: `aws.zones`), with no
    traffic sent, which the verdicts say.
    """

    via: Literal["servers", "netns", "routes"] = "servers"
    path: UrlPath = "/egress"
    url: HttpUrl | None = None
    zones: dict[str, EgressZone] = {}
    timeout_sec: float = Field(default=1.0, gt=0, le=30)

    @model_validator(mode="after")
    def _what_each_way_needs(self) -> Egress:
        if self.via == "netns" and (self.url is None or not self.zones):
            raise ValueError("via: netns needs the internet service's url and zones: {zone: netns}")
        if self.via != "netns" and self.zones:
            raise ValueError(f"zones: only for via: netns, not via: {self.via}")
        return self


# -- AWS ---------------------------------------------------------------------------------------

_AWS_ACCOUNT = re.compile(r"^[0-9]{12}$")
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")


def _account(value: str) -> str:
    if not _AWS_ACCOUNT.match(value):
        raise ValueError(f"{value!r} is not a 12-digit AWS account id")
    return value


def _region(value: str) -> str:
    if not _AWS_REGION.match(value):
        raise ValueError(f"{value!r} is not an AWS region name (e.g. ap-northeast-2)")
    return value


def _prefixed(*prefixes: str) -> AfterValidator:
    def check(value: str) -> str:
        if not value.startswith(prefixes):
            raise ValueError(f"{value!r} does not start with {' or '.join(prefixes)}")
        return value

    return AfterValidator(check)


AwsAccountId = Annotated[str, AfterValidator(_account)]
AwsRegion = Annotated[str, AfterValidator(_region)]
InstanceId = Annotated[str, _prefixed("i-")]
NatGatewayId = Annotated[str, _prefixed("nat-")]
RouteTableId = Annotated[str, _prefixed("rtb-")]
Arn = Annotated[str, _prefixed("arn:")]


class AwsZone(_Model):
    """One availability zone of the deployment: its NAT gateway and its backends."""

    nat_gateway_id: NatGatewayId | None = None
    # The private route tables whose default route must go to this zone's NAT. Empty: found
    # by asking EC2 which route tables of the VPC send 0.0.0.0/0 to `nat_gateway_id`.
    private_route_table_ids: list[RouteTableId] = []
    # The zone's backends by id; empty: the ASG's instances in this zone, else the instances
    # carrying `instance_tags` in this zone.
    instance_ids: list[InstanceId] = []


class AwsDatabase(_Model):
    """The RDS instance (Multi-AZ) or the Aurora cluster behind `database`."""

    instance_id: str | None = Field(default=None, min_length=1)
    aurora_cluster_id: str | None = Field(default=None, min_length=1)
    engine: str = "postgres"
    # A prefix of the engine version the deployment promises ("15" matches 15.x).
    engine_version: str | None = None
    port: int = Field(default=5432, gt=0, lt=65536)
    min_backup_retention_days: int = Field(default=7, ge=0, le=35)

    @model_validator(mode="after")
    def _exactly_one(self) -> AwsDatabase:
        if (self.instance_id is None) == (self.aurora_cluster_id is None):
            raise ValueError("give exactly one of instance_id or aurora_cluster_id")
        return self


class AwsCache(_Model):
    """The ElastiCache replication group behind `cache`."""

    replication_group_id: str = Field(min_length=1)
    # The node group test_failover acts on ("0001" for a cluster-mode-disabled group).
    node_group_id: str = "0001"
    port: int = Field(default=6379, gt=0, lt=65536)


class AwsBackups(_Model):
    """Where the backup job writes, and how often: the newest object must be fresh."""

    bucket: str = Field(min_length=3)
    prefix: str = ""
    interval_hours: float = Field(default=24.0, gt=0, le=24 * 366)
    slack_hours: float = Field(default=1.0, ge=0, le=24 * 31)


class Aws(_Model):
    """For `provider: aws`: the account, the region and the resources the faults and the
    AWS acceptance checks act on. Credentials come from boto3's usual chain (environment,
    profile, instance role), never from this file."""

    region: AwsRegion
    # Required for destructive runs: a fault refuses unless STS says we are in this account.
    account_id: AwsAccountId | None = None
    profile: str | None = Field(default=None, min_length=1)
    # LocalStack, moto's server, a VPC endpoint: every client is made against it.
    endpoint_url: HttpUrl | None = None
    vpc_id: str | None = Field(default=None, pattern=r"^vpc-")
    load_balancer_arn: Arn | None = None
    target_group_arns: list[Arn] = []
    autoscaling_group: str | None = Field(default=None, min_length=1)
    # Instances carrying all these tags are the backends (when neither ids nor ASG say).
    instance_tags: dict[str, str] = {}
    # Zone name (ap-northeast-2a) -> its NAT and backends.
    zones: dict[str, AwsZone] = {}
    # A target server's name -> the EC2 instance that is that server.
    server_instances: dict[str, InstanceId] = {}
    database: AwsDatabase | None = None
    cache: AwsCache | None = None
    backups: AwsBackups | None = None
    # CloudWatch alarm names that must exist.
    alarms: list[str] = []


class Target(_Model):
    # Free text for people; `path_safe` makes it a file name (reports/, baselines/).
    name: str = Field(min_length=1, max_length=200)
    provider: Literal["lab", "docker", "aws", "generic"]
    description: str = ""
    allow_destructive: bool = False
    entrypoint: Entrypoint
    load_balancer: LoadBalancer | None = None
    database: Database | None = None
    cache: Cache | None = None
    servers: list[Server] = []
    app: App = App()
    load: Load = Load()
    lab: LabSettings | None = None
    aws: Aws | None = None
    egress: Egress | None = None
    monitoring: Monitoring | None = None
    stress: Stress = Stress()
    # Command faults the target declares, by capability name (database-failover...) or a name
    # of your own (`the fault "NAME" is injected`); a declared one wins over the provider's.
    faults: dict[str, DeclaredFault] = {}

    # Set by load_target: where the file came from, for messages.
    source: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _server_names_are_unique(self) -> Target:
        # Faults and steps find a server by its name: a second one of the same name would be
        # silently ignored.
        seen: set[str] = set()
        for i, server in enumerate(self.servers):
            if server.name in seen:
                raise ValueError(f"servers[{i}].name: {server.name!r} is used twice")
            seen.add(server.name)
        return self

    @model_validator(mode="after")
    def _fault_names_are_known_or_own(self) -> Target:
        # A capability name with a typo would never be used ("databse-failover"), and the
        # scenarios needing the real one would skip: refuse what looks like a misspelling.
        for name in self.faults:
            if not _FAULT_NAME.match(name):
                raise ValueError(
                    f"faults.{name}: not a fault name (letters, digits, '-', '_', '.', at most 64)"
                )
            if name in FAULT_NAMES:
                continue
            close = difflib.get_close_matches(name, FAULT_NAMES, n=1, cutoff=0.8)
            if close:
                raise ValueError(
                    f"faults.{name}: unknown fault name; did you mean {close[0]!r}? "
                    f"(known: {', '.join(FAULT_NAMES)}; a name of your own must not look "
                    "like one of them)"
                )
        return self

    @model_validator(mode="after")
    def _egress_reaches_every_zone(self) -> Target:
        egress = self.egress
        if egress is None:
            return self
        zones = self.zones()
        if egress.via == "netns":
            unknown = sorted(set(egress.zones) - set(zones))
            if unknown and zones:
                raise ValueError(
                    f"egress.zones.{unknown[0]}: no server is in zone {unknown[0]!r} "
                    f"(zones: {', '.join(zones)})"
                )
        elif egress.via == "servers":
            for zone in zones:
                if not any(s.url for s in self.servers if s.zone == zone):
                    raise ValueError(
                        f"egress: via servers, but no server of zone {zone!r} has a url to ask"
                    )
        elif self.aws is None or not self.aws.zones:
            raise ValueError("egress: via routes needs the aws section's zones (their NATs)")
        return self

    @model_validator(mode="after")
    def _cloudwatch_needs_aws(self) -> Target:
        if self.monitoring is not None and self.monitoring.cloudwatch_alarms and self.aws is None:
            raise ValueError(
                "monitoring.cloudwatch_alarms: CloudWatch is read through the aws section "
                "(region, account); add aws:"
            )
        return self

    @model_validator(mode="after")
    def _docker_servers_say_where(self) -> Target:
        if self.provider == "docker":
            for i, server in enumerate(self.servers):
                if server.docker is None:
                    raise ValueError(
                        f"servers[{i}].docker: required for a docker target (the engine "
                        f"address and compose project of server {server.name!r})"
                    )
        return self

    def zones(self) -> list[str]:
        return sorted({s.zone for s in self.servers})

    def egress_zones(self) -> list[str]:
        """The zones whose egress the harness can probe (see `Egress`)."""
        if self.egress is None:
            return []
        if self.egress.via == "netns":
            return sorted(self.egress.zones)
        if self.egress.via == "routes" and self.aws is not None:
            letters = {z.removeprefix(self.aws.region) for z in self.aws.zones}
            return sorted(letters)
        return self.zones()

    def identity(self) -> str:
        """What deployment this is, whatever the file calls it: the lab's port block, the
        Docker engines and projects, the AWS account, region and resources, else the
        entrypoint. Undo journals and game-day leases are keyed by it, so a fault made on one
        deployment is never "healed" on another that shares its name.
        """
        if self.provider == "lab":
            port = self.lab.base_port if self.lab else LabSettings().base_port
            return f"lab 127.0.0.1:{port}"
        if self.provider == "docker":
            hosts = sorted(
                f"{s.docker.engine}#{s.docker.project}" for s in self.servers if s.docker
            )
            return "docker " + ",".join(hosts)
        if self.provider == "aws" and self.aws is not None:
            a = self.aws
            db = a.database
            resources = [
                a.vpc_id or "",
                (db.instance_id or db.aurora_cluster_id or "") if db else "",
                a.cache.replication_group_id if a.cache else "",
            ]
            endpoint = f" {a.endpoint_url}" if a.endpoint_url else ""
            return f"aws {a.account_id or '?'} {a.region}{endpoint} " + "/".join(resources)
        return f"{self.provider} {redact(self.entrypoint.url)}"


ROLES = ("load_balancer", "database", "cache", "servers", "monitoring")


def resolve_target_path(name_or_path: str) -> Path:
    """`docker-lab` means targets/docker-lab.yaml; anything with a slash or a suffix is a path."""
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    return TARGETS_DIR / f"{name_or_path}.yaml"


def _lab_target_text() -> tuple[str, str]:
    """The target of the lab on *this* shell's base port ($GAMEDAY_LAB_BASE_PORT), and how to
    name it in messages.

    targets/lab.yaml is the same text for the default port; reading that file instead would
    send `--target lab` (and `gameday heal --target lab`) to the lab on 17400 while the user's
    lab runs on another block, breaking or "healing" somebody else's lab.
    """
    from lab.layout import LabLayout, LayoutError
    from lab.target import render_target

    try:
        layout = LabLayout.from_env()
    except LayoutError as exc:
        raise TargetError(f"{DEFAULT_TARGET}: {exc}") from None
    return render_target(layout), f"lab (base port {layout.base_port})"


def path_safe(name: str, limit: int = 64) -> str:
    """A target's name as one file or folder name: letters, digits, `.`, `_` and `-` only,
    never `.` or `..`, at most `limit` characters.

    A name is free text for people; used as written, `../../etc` would put a run's files
    outside reports/ and `a/b` would need folders that do not exist.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:limit].strip("._")
    return safe or "target"


def load_target(name_or_path: str) -> Target:
    if name_or_path == DEFAULT_TARGET:
        text, shown = _lab_target_text()
        return _parse_target(text, shown)
    path = resolve_target_path(name_or_path)
    shown = _shown(path)
    return _parse_target(_read_target_file(path, shown), shown)


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_a_file(shown: str, mode: int) -> TargetError:
    kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
    return TargetError(f"{shown}: is {kind}, not a target file (a YAML file)")


def _read_target_file(path: Path, shown: str) -> str:
    """The file's text, or one line saying why it cannot be a target file.

    Only a regular file is opened, and without blocking: opening a FIFO for reading waits for a
    writer forever, and a device never ends. At most `MAX_TARGET_BYTES` are read.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in TARGETS_DIR.glob("*.yaml")))
        raise TargetError(f"{shown}: no such target file (known targets: {known})") from None
    except OSError as exc:
        raise TargetError(f"{shown}: cannot read it: {_os_error(exc)}") from None
    except ValueError:  # a NUL byte in the name
        raise TargetError(f"{shown}: is not a file name") from None
    if not stat.S_ISREG(info.st_mode):
        raise _not_a_file(shown, info.st_mode)
    if info.st_size > MAX_TARGET_BYTES:
        raise TargetError(_too_big(shown, info.st_size))
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise TargetError(f"{shown}: cannot read it: {_os_error(exc)}") from None
    data = b""
    try:
        # Swapped for something else since the stat? Judge what was opened.
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_a_file(shown, mode)
        while len(data) <= MAX_TARGET_BYTES:
            chunk = os.read(fd, MAX_TARGET_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise TargetError(f"{shown}: cannot read it: {_os_error(exc)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_TARGET_BYTES:  # it grew while we read it
        raise TargetError(_too_big(shown, len(data)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TargetError(
            f"{shown}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "a target file is UTF-8 YAML"
        ) from None


def _too_big(shown: str, size: int) -> str:
    return (
        f"{shown}: is {size:,} bytes; a target file may have at most {MAX_TARGET_BYTES:,} "
        f"bytes ({MAX_TARGET_BYTES / 2**20:g} MiB)"
    )


def _os_error(exc: OSError) -> str:
    why = exc.strerror or type(exc).__name__
    if exc.errno == errno.ELOOP:
        why += " (a symlink loop?)"
    return why


# libyaml when the wheel has it (10x faster on big files), else PyYAML's own parser.
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TargetLoader(_YamlLoader):  # type: ignore[misc]
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor says so below
                continue
            if first is not None:
                raise _ShapeError(
                    line, f"key {_short(str(key), 60)} is given twice (first on line {first})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


def _check_shape(text: str) -> None:
    """Refuse deep nesting and alias bombs from the parser's events, before anything is built.

    A value's size counts its aliases expanded: `&a [*b, *b, ...]` nine levels deep is 600
    bytes of text and a billion values once the harness walks it.
    """
    depth = 0
    values = 0
    sizes: dict[str, int] = {}  # anchor -> values of its node, aliases expanded
    open_: list[tuple[str | None, int]] = []  # collections being read: (anchor, values then)
    for event in yaml.parse(text, Loader=_YamlLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            # An anchor being (re)defined around its own alias is a cycle, whatever came before.
            if any(anchor == event.anchor for anchor, _ in open_):
                raise _ShapeError(line, f"alias *{event.anchor} is inside its own anchor")
            values += sizes.get(event.anchor or "", 0)  # unknown: the loader reports it
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            values += 1
            if depth > MAX_YAML_DEPTH:
                raise _ShapeError(line, f"nested deeper than {MAX_YAML_DEPTH} levels")
            open_.append((event.anchor, values))
            sizes.pop(event.anchor or "", None)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            anchor, before = open_.pop()
            if anchor:
                sizes[anchor] = values - before + 1
        if values > MAX_YAML_VALUES:
            raise _ShapeError(
                line,
                f"more than {MAX_YAML_VALUES:,} values with aliases expanded (an alias bomb?)",
            )


class _ShapeError(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")


def _parse_target(text: str, shown: str) -> Target:
    try:
        _check_shape(text)
        raw = yaml.load(text, Loader=_TargetLoader)  # a SafeLoader: no Python objects
    except _ShapeError as exc:
        raise TargetError(f"{shown}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TargetError(f"{shown}: {where}invalid YAML: {_one_line(problem)}") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # A value YAML parses but Python cannot hold (an integer of 5,000 digits).
        raise TargetError(f"{shown}: invalid YAML: {_one_line(str(exc))}") from None
    if raw is None:
        raise TargetError(f"{shown}: is empty (a target needs name, provider and entrypoint)")
    if not isinstance(raw, dict):
        raise TargetError(f"{shown}: the file must be a mapping of roles, not {type(raw).__name__}")
    raw = _interpolate(raw, shown, ())
    try:
        target = Target.model_validate(raw)
    except ValidationError as exc:
        raise TargetError(f"{shown}: {_first_error(exc)}") from None
    return target.model_copy(update={"source": shown})


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(path: Path) -> str:
    """The file as the user named it (relative to here when inside), printable on one line.

    Symlinks are not resolved: a loop would raise, and the user knows the name they gave.
    """
    absolute = os.path.abspath(path)
    here = os.getcwd()
    shown = os.path.relpath(absolute, here) if absolute.startswith(here + os.sep) else str(path)
    # A newline or an undecodable byte in a file name must not break the one line.
    return shown if shown.isprintable() else repr(shown)


def _interpolate(node: Any, shown: str, where: tuple[str | int, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, shown, (*where, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, shown, (*where, i)) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node
    rest = _VAR.sub("", node)
    if "${" in rest:
        start = rest.index("${")
        raise TargetError(
            f"{shown}: {_dotted(where)}: {rest[start : start + 24]!r} is not ${{VAR}} or "
            "${VAR:-default} (unterminated, or not a variable name)"
        )

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise TargetError(
                    f"{shown}: {_dotted(where)}: environment variable {name} is not set"
                )
            value = default
        if _SECRET_KEY.search(name) or (where and _SECRET_KEY.search(str(where[-1]))):
            register_secret(value)
        return value

    value = _VAR.sub(sub, node)
    # A password inside a URL (postgresql://app:${PW}@db) is a secret whatever its variable's
    # name: registered in both spellings, as written and percent-decoded (as libpq reads it).
    register_url_passwords(value)
    return value


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    # Union members add their type names to the location ("str", "function-after[...]").
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p == "str")))
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{_dotted(loc)}: unknown key"
    if kind == "missing":
        return f"{_dotted(loc)}: required but missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if kind == "literal_error":
        found = _short(value) if isinstance(value, str) else repr(value)[:80]
        msg = f"{found} is not one of {msg.removeprefix('Input should be ')}"
    elif kind != "value_error" and isinstance(value, str | int | float | bool):
        # pydantic's own messages ("Input should be greater than 0") do not say what was found.
        shown = _short(value) if isinstance(value, str) else _number(value)
        msg = f"{msg}, got {shown}"
        if kind == "string_type" and isinstance(value, int):
            msg += " (a number: quote it, as YAML reads 0123 as octal and drops zeros)"
    msg = _one_line(msg, 300)
    # A check across fields (a model validator) names its own field in its message.
    return f"{_dotted(loc)}: {msg}" if loc else msg


def _number(value: int | float | bool) -> str:
    text = repr(value)
    # A 10^30 id is shown as such, not as 31 digits.
    return text if len(text) <= 20 else f"a number of {len(text)} digits ({text[:6]}...)"
