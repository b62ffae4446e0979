"""Target files: validation, interpolation, one-line errors, and the committed examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gameday.secrets import redact
from gameday.target import TargetError, load_target
from lab.layout import LabLayout
from lab.target import render_target

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """\
name: mine
provider: generic
entrypoint:
  url: http://127.0.0.1:9/
"""


def docker_server(fields: str) -> str:
    return MINIMAL + f"servers:\n  - {{name: s1, zone: a, docker: {{{fields}}}}}\n"


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(TargetError) as info:
        load_target(str(path))
    return str(info.value)


def test_committed_lab_target_is_the_rendered_default_layout() -> None:
    # targets/lab.yaml is generated: a drift between it and the lab's layout breaks the lab.
    # It is the lab with zone networks (what root gets, as in CI), whoever runs the test.
    expected = render_target(LabLayout(17400, Path("/tmp/x"), network="namespaces"))
    assert (ROOT / "targets" / "lab.yaml").read_text() == expected


def test_lab_name_means_the_lab_of_this_shells_base_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # A second lab on 18400: `--target lab` must reach it, never the lab on 17400.
    monkeypatch.setenv("GAMEDAY_LAB_BASE_PORT", "18400")
    target = load_target("lab")
    assert target.lab is not None and target.lab.base_port == 18400
    # Its own address too when the lab has zone networks (10.H.L.0/24 per base port).
    assert target.entrypoint.url == LabLayout.from_env(base_port=18400).entrypoint_url
    assert target.entrypoint.url.endswith(":18400")
    assert target.database is not None and ":17421" not in target.database.writer_url
    assert target.source == "lab (base port 18400)"


def test_identity_names_the_deployment_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAMEDAY_LAB_BASE_PORT", "18400")
    assert load_target("lab").identity() == "lab 127.0.0.1:18400"
    monkeypatch.setenv("GAMEDAY_LAB_BASE_PORT", "17400")
    assert load_target("lab").identity() == "lab 127.0.0.1:17400"
    # Two files, one name, two deployments: two identities.
    one = load_target(str(write(tmp_path, MINIMAL, "one.yaml")))
    other = load_target(str(write(tmp_path, MINIMAL.replace(":9/", ":10/"), "other.yaml")))
    assert one.name == other.name and one.identity() != other.identity()


def test_lab_name_with_a_bad_base_port_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMEDAY_LAB_BASE_PORT", "99999")
    with pytest.raises(TargetError, match=r"^lab: lab base port 99999 .* is outside"):
        load_target("lab")


def test_lab_target_loads_with_every_role() -> None:
    target = load_target("lab")
    assert target.provider == "lab"
    assert target.allow_destructive is True
    assert [s.name for s in target.servers] == ["server1", "server2"]
    assert target.zones() == ["a", "b"]
    assert target.database and target.database.synchronous
    assert (
        target.cache
        and target.cache.persistence
        and target.cache.persistence.appendfsync == ("everysec")
    )


@pytest.mark.parametrize("name", ["docker-multiserver.example", "aws.example"])
def test_examples_load_when_their_secrets_are_set(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDMART_DB_PASSWORD", "pw-from-env")
    monkeypatch.setenv("CLOUDMART_REDIS_AUTH_TOKEN", "token-from-env")
    target = load_target(str(ROOT / "targets" / f"{name}.yaml"))
    assert target.allow_destructive is False  # examples never opt in
    assert len(target.zones()) == 2
    assert target.database and "pw-from-env" in target.database.writer_url
    # ...and the password never shows in its repr (tracebacks print fixtures' reprs).
    assert "pw-from-env" not in repr(target)


def test_docker_example_follows_the_seed_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDMART_DB_PASSWORD", "x" * 8)
    target = load_target(str(ROOT / "targets" / "docker-multiserver.example.yaml"))
    assert [(s.name, s.url) for s in target.servers] == [
        ("server1", "http://192.168.1.101:3000"),
        ("server2", "http://192.168.1.102:3000"),
    ]
    assert target.load_balancer and target.load_balancer.kind == "haproxy"
    docker = [s.docker for s in target.servers]
    assert [(d.engine, d.project) for d in docker if d] == [
        ("ssh://deploy@192.168.1.101", "cloudmart"),
        ("ssh://deploy@192.168.1.102", "cloudmart"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "colour: blue\n", "x.yaml: colour: unknown key"),
        (MINIMAL.replace("name: mine\n", ""), "x.yaml: name: required but missing"),
        (
            "name: mine\nprovider: generic\n",
            "x.yaml: entrypoint: required but missing",
        ),
        (
            MINIMAL + "database:\n  writer_url: mysql://db:3306/x\n",
            "x.yaml: database.writer_url: 'mysql://db:3306/x' is not a URL with scheme "
            "postgresql or postgres",
        ),
        (
            MINIMAL + "database:\n  writer_url: postgresql://u@:5432/x\n",
            "x.yaml: database.writer_url: 'postgresql://u@:5432/x' has no host",
        ),
        (
            MINIMAL + "cache:\n  url: redis://h:port/0\n",
            "x.yaml: cache.url: 'redis://h:port/0' has a bad port 'port'",
        ),
        (
            MINIMAL + "servers:\n  - name: s1\n    zone: a\n    colour: x\n",
            "x.yaml: servers[0].colour: unknown key",
        ),
        (
            MINIMAL.replace("generic", "kubernetes"),
            "x.yaml: provider: 'kubernetes' is not one of 'lab', 'docker', 'aws' or 'generic'",
        ),
        (
            MINIMAL + "entrypoint2: {}\n  bad: [\n",
            "x.yaml: line 6: invalid YAML",
        ),
        ("- just\n- a list\n", "x.yaml: the file must be a mapping of roles, not list"),
        (
            MINIMAL.replace("generic", "docker") + "servers:\n  - {name: s1, zone: a}\n",
            "x.yaml: servers[0].docker: required for a docker target (the engine address and "
            "compose project of server 's1')",
        ),
        (
            docker_server("engine: tcp://h, project: p"),
            "x.yaml: servers[0].docker.engine: 'tcp://h' needs a port (2376 with TLS, 2375 "
            "without)",
        ),
        (
            MINIMAL
            + "servers:\n  - {name: s1, zone: a, docker: {engine: 'http://h:1', project: p}}\n",
            "x.yaml: servers[0].docker.engine: 'http://h:1' is not a Docker engine address "
            "(unix://, tcp:// or ssh://)",
        ),
        (
            MINIMAL
            + "servers:\n  - {name: s1, zone: a, docker: {engine: 'unix://d.sock', project: p}}\n",
            "x.yaml: servers[0].docker.engine: 'unix://d.sock' must be "
            "unix:///absolute/path/to/docker.sock",
        ),
        (
            MINIMAL
            + "servers:\n  - {name: s1, zone: a, docker: {engine: 'ssh://u:pw9@h', project: p}}\n",
            "x.yaml: servers[0].docker.engine: the address holds a password: use an SSH key or "
            "TLS files instead",
        ),
        (
            docker_server("engine: 'ssh://u@h', project: p, tls: {ca: a, cert: b, key: c}"),
            "x.yaml: servers[0].docker: tls: only a tcp:// engine uses TLS files",
        ),
        (
            docker_server("engine: 'ssh://u@h'"),
            "x.yaml: servers[0].docker.project: required but missing",
        ),
        (
            MINIMAL + "load:\n  max_users: 0\n",
            "x.yaml: load.max_users: Input should be greater than 0, got 0",
        ),
        (
            MINIMAL + "servers:\n  - {name: s1, zone: a}\n  - {name: s1, zone: b}\n",
            "x.yaml: servers[1].name: 's1' is used twice",
        ),
        (
            MINIMAL + "aws:\n  region: eu-west-1\n  account_id: 123456789012\n",
            "x.yaml: aws.account_id: Input should be a valid string, got 123456789012 (a number: "
            "quote it",
        ),
        (
            docker_server("engine: 'ssh://u@h', project: p, database: {service: pg, failover: x}"),
            "x.yaml: servers[0].docker.database.failover: 'x' is not one of 'manual' or "
            "'automatic'",
        ),
    ],
)
def test_broken_target_gives_one_line_naming_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = error_of(write(tmp_path, text))
    assert "\n" not in message
    assert message.endswith(expected) or expected in message, message


def test_missing_env_var_names_field_and_variable(tmp_path: Path) -> None:
    text = MINIMAL + "database:\n  writer_url: postgresql://u:${GAMEDAY_TEST_UNSET_PW}@h/db\n"
    assert error_of(write(tmp_path, text)).endswith(
        "database.writer_url: environment variable GAMEDAY_TEST_UNSET_PW is not set"
    )


def test_env_default_and_secret_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMEDAY_TEST_TOKEN", "tok-very-secret")
    text = (
        MINIMAL
        + "cache:\n  url: redis://h:${GAMEDAY_TEST_PORT:-6380}/0\n"
        + "description: uses ${GAMEDAY_TEST_TOKEN}\n"
    )
    target = load_target(str(write(tmp_path, text)))
    assert target.cache and target.cache.url == "redis://h:6380/0"
    # A value taken from a variable named like a secret is redacted wherever it shows up.
    assert redact(f"said {target.description}") == "said uses ***"


def test_unknown_target_name_lists_known_ones() -> None:
    with pytest.raises(TargetError) as info:
        load_target("no-such-target")
    assert "no such target file" in str(info.value)
    assert "lab" in str(info.value)


def test_cli_check_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "database:\n  writer_url: nope\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "target", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "database.writer_url: 'nope' is not a URL" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_check_reports_roles_and_absent_ones(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    proc = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "target", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "absent: load_balancer, database, cache, servers" in proc.stdout


# -- any deployment: what a target may declare ------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            "faults:\n  databse-failover: {inject: a, heal: b}\n",
            "x.yaml: faults.databse-failover: unknown fault name; did you mean "
            "'database-failover'?",
        ),
        (
            "faults:\n  'bad name!': {inject: a, heal: b}\n",
            "x.yaml: faults.bad name!: not a fault name",
        ),
        (
            "faults:\n  my-own: {inject: a}\n",
            "x.yaml: faults.my-own.heal: required but missing",
        ),
        (
            "app:\n  orders: {method: PUT, create_path: /v1/notes, id_from: client}\n",
            "x.yaml: app.orders: create_path: '/v1/notes' has no {id}, but id_from is client",
        ),
        (
            "app:\n  orders: {read_path: /v1/notes}\n",
            "x.yaml: app.orders: read_path: '/v1/notes' has no {id}",
        ),
        (
            "load_balancer: {kind: traefik}\n",
            "x.yaml: load_balancer.kind: 'traefik' is not one of 'haproxy', 'alb', 'nginx' or "
            "'none'",
        ),
        (
            "load_balancer: {kind: nginx, stats_url: 'http://lb/stats'}\n",
            "x.yaml: load_balancer: stats_url/stats_socket: HAProxy's, not for kind nginx",
        ),
        (
            "cache: {url: 'redis://c:6379/0', failover: sentinel}\n",
            "x.yaml: cache: failover: sentinel needs the sentinels' host:port in sentinels",
        ),
    ],
)
def test_any_deployment_fields_refuse_bad_values_in_one_line(
    tmp_path: Path, extra: str, line: str
) -> None:
    message = error_of(write(tmp_path, MINIMAL + extra)).removeprefix(f"{tmp_path}/")
    assert message.startswith(line), message


def test_a_foreign_shaped_target_loads(tmp_path: Path) -> None:
    text = MINIMAL + (
        "load_balancer: {kind: nginx, status_url: 'http://127.0.0.1:1/nginx_status'}\n"
        "cache: {url: 'redis://127.0.0.1:2/0'}\n"
        "app:\n  product_path: null\n  sessions: null\n  rate_limit: null\n"
        "  orders: {method: PUT, create_path: '/v1/notes/{id}', id_from: client,"
        " body: {text: 'gameday {id}'}, success_codes: [200, 201],"
        " read_path: '/v1/notes/{id}', consistent_read_query: null, idempotency_header: null}\n"
        "faults:\n"
        "  database-failover: {inject: ./promote.sh, heal: ./rebuild.sh, timeout_sec: 90}\n"
        "  my-own-fault: {inject: a, heal: b, check: c}\n"
    )
    target = load_target(str(write(tmp_path, text)))
    assert target.load_balancer is not None and target.load_balancer.kind == "nginx"
    assert target.app.product_path is None and target.app.sessions is None
    assert target.app.orders is not None and target.app.orders.acknowledged(201)
    assert not target.app.orders.acknowledged(202)
    assert target.cache is not None and target.cache.failover_manager() == "none"
    assert target.faults["database-failover"].timeout_sec == 90


def test_cli_check_shows_faults_and_plans_scenarios_without_printing_secrets(
    tmp_path: Path,
) -> None:
    canary = "c4n4ry-s3cr3t-value"
    text = (
        "name: secretive\nprovider: generic\nentrypoint:\n  url: http://127.0.0.1:9/\n"
        "  health_path: /health?token=${GAMEDAY_TEST_API_TOKEN}\n"
        "database:\n  writer_url: postgresql://u:${GAMEDAY_TEST_DB_PASSWORD}@127.0.0.1:9/d\n"
        "faults:\n  database-failover:\n"
        "    inject: sh -c 'promote --password $PGPASSWORD'\n    heal: 'true'\n"
    )
    path = write(tmp_path, text)
    env = {
        **os.environ,
        "GAMEDAY_TEST_API_TOKEN": canary,
        "GAMEDAY_TEST_DB_PASSWORD": canary + "-db",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "target", "check", str(path)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert canary not in out
    assert "fault database-failover: inject `sh -c 'promote --password $PGPASSWORD'`" in out
    # Every shipped scenario is planned: runs, or skipped with its reason.
    assert "scenarios: " in out and " of " in out
    assert "skipped features/acceptance/cache.feature: The cache has an online replica: " in out
    assert "target 'secretive' has no cache role" in out


def test_anchors_and_aliases_within_the_bounds_still_work(tmp_path: Path) -> None:
    # Aliases are bounded, not banned: sharing a block between servers is ordinary YAML.
    text = MINIMAL + (
        "servers:\n"
        "  - &server {name: s1, zone: a, url: 'http://127.0.0.1:8001'}\n"
        "  - {<<: *server, name: s2, zone: b}\n"
    )
    target = load_target(str(write(tmp_path, text)))
    assert [(s.name, s.zone, s.url) for s in target.servers] == [
        ("s1", "a", "http://127.0.0.1:8001"),
        ("s2", "b", "http://127.0.0.1:8001"),
    ]


def test_a_command_fault_with_inject_and_heal_loads(tmp_path: Path) -> None:
    text = MINIMAL + (
        "faults:\n  nginx-down:\n    inject: systemctl stop nginx\n"
        "    heal: systemctl start nginx\n    timeout_sec: '90'\n"
    )
    assert load_target(str(write(tmp_path, text))).faults["nginx-down"].timeout_sec == 90


def test_a_password_inside_a_url_is_redacted_alone_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A variable named like anything: the URL shape says it is a password. Its decoded
    # spelling (what libpq sends, and may quote in an error) is registered as well.
    monkeypatch.setenv("GAMEDAY_TEST_DB_PW", "pa%24%24word-42")
    text = MINIMAL + "database:\n  writer_url: postgresql://app:${GAMEDAY_TEST_DB_PW}@db/shop\n"
    load_target(str(write(tmp_path, text)))
    assert (
        redact("auth failed for pa$$word-42 and pa%24%24word-42") == "auth failed for *** and ***"
    )


def test_a_symlink_is_named_as_given_and_read_through(tmp_path: Path) -> None:
    real = write(tmp_path, MINIMAL + "colour: blue\n", "real.yaml")
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    assert error_of(link) == f"{link}: colour: unknown key"
