"""Unit tests of gameday.secrets: passwords and registered secrets never leave the process."""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from gameday import secrets
from gameday.secrets import MASK, RedactingFilter, redact, register_secret
from gameday.verdict import Verdict, failed, passed
from tests.conftest import refused_port, wait_until


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """Each test registers secrets into its own empty set (the module keeps a global one)."""
    registry: set[str] = set()
    monkeypatch.setattr(secrets, "_secrets", registry)
    yield registry


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "postgresql://app:s3cret@db.internal:5432/shop",
            "postgresql://app:***@db.internal:5432/shop",
        ),
        ("postgres://app:s3cret@db/shop", "postgres://app:***@db/shop"),
        ("redis://default:s3cret@cache:6379/0", "redis://default:***@cache:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://:s3cret@cache.aws:6379", "rediss://:***@cache.aws:6379"),
        (
            "postgresql://app:s3cret@db1:5432,db2:5432/shop?target_session_attrs=read-write",
            "postgresql://app:***@db1:5432,db2:5432/shop?target_session_attrs=read-write",
        ),
        ("postgresql://app:pa:ss@db/shop", "postgresql://app:***@db/shop"),
        ("POSTGRESQL://app:s3cret@db/shop", "POSTGRESQL://app:***@db/shop"),
    ],
)
def test_redact_hides_url_passwords(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert "s3cret" not in redact(text)


def test_redact_hides_every_url_in_a_text() -> None:
    text = (
        "writer postgresql://app:pw-one@db1/shop failed, cache redis://:pw-two@cache:6379 is fine"
    )
    assert redact(text) == (
        "writer postgresql://app:***@db1/shop failed, cache redis://:***@cache:6379 is fine"
    )


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app@db.internal:5432/shop",
        "postgresql://db1:5432,db2:5432/shop",
        "postgresql://app@db1:5432,db2:5432/shop",
        "redis://cache:6379/0",
        "http://lb.internal:8080/health",
        "no url here at all",
    ],
)
def test_redact_leaves_urls_without_password_unchanged(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "host=db user=app password=s3cret dbname=shop",
            "host=db user=app password=*** dbname=shop",
        ),
        ("host=db password = s3cret port=5432", "host=db password = *** port=5432"),
        ("host=db password='my s3cret' dbname=shop", "host=db password=*** dbname=shop"),
        ("host=db PASSWORD=s3cret", "host=db PASSWORD=***"),
        ("env PGPASSWORD=hunter2 psql", "env PGPASSWORD=*** psql"),
        ('REDIS_PASSWORD="two words" redis-cli', "REDIS_PASSWORD=*** redis-cli"),
    ],
)
def test_redact_hides_keyword_dsn_passwords(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_hides_registered_secrets(fresh_registry: set[str]) -> None:
    register_secret("tok-123456")
    register_secret("abcd")
    assert fresh_registry == {"tok-123456", "abcd"}
    assert redact("Authorization: Bearer tok-123456; key abcd") == (
        f"Authorization: Bearer {MASK}; key {MASK}"
    )


def test_redact_prefers_the_longest_registered_secret() -> None:
    register_secret("s3cret")
    register_secret("s3cret-and-more")
    assert redact("value s3cret-and-more") == f"value {MASK}"


def test_register_secret_ignores_short_values(fresh_registry: set[str]) -> None:
    register_secret("abc")
    register_secret("")
    assert fresh_registry == set()
    assert redact("abc and abcdef") == "abc and abcdef"


def test_redacting_filter_rewrites_record_with_args() -> None:
    record = logging.LogRecord(
        "gameday", logging.INFO, __file__, 1, "connecting to %s (try %d)",
        ("postgresql://app:s3cret@db/shop", 2), None,
    )  # fmt: skip
    assert RedactingFilter().filter(record) is True
    assert record.msg == "connecting to postgresql://app:***@db/shop (try 2)"
    assert record.args is None
    assert record.getMessage() == "connecting to postgresql://app:***@db/shop (try 2)"


def test_redacting_filter_on_a_handler_keeps_secrets_out_of_output() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("gameday.test_secrets")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    register_secret("api-key-98765")
    try:
        logger.info("dsn %s key %s", "redis://:s3cret@cache:6379", "api-key-98765")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "dsn redis://:***@cache:6379 key ***\n"


def test_verdict_message_is_redacted_at_construction() -> None:
    v = failed("db_reachable", "cannot connect to postgresql://app:s3cret@db:5432/shop")
    assert v.ok is False
    assert v.message == "cannot connect to postgresql://app:***@db:5432/shop"
    v = passed("db_reachable", "connected with host=db password=s3cret")
    assert v.message == "connected with host=db password=***"
    assert Verdict("x", True, "redis://:s3cret@cache").message == "redis://:***@cache"


def test_redact_hides_a_password_with_an_unencoded_at_sign() -> None:
    # libpq wants it percent-encoded, but a user's file may not: hide all of it anyway.
    assert redact("postgresql://app:p@ss@db:5432/x") == "postgresql://app:***@db:5432/x"


def test_installed_redaction_covers_every_logger(caplog: pytest.LogCaptureFixture) -> None:
    # The pytest plugin installs it at configure time: any library's record is redacted,
    # including what pytest captures and shows for a failed test.
    secrets.install_log_redaction()
    secrets.install_log_redaction()  # idempotent: one wrapper, not two
    with caplog.at_level(logging.WARNING):
        logging.getLogger("some.library.deep.child").warning(
            "lost connection to %s", "postgresql://app:s3cret@db:5432/shop"
        )
    assert caplog.messages == ["lost connection to postgresql://app:***@db:5432/shop"]
    assert "s3cret" not in caplog.text


# -- passwords never in a string a client holds ---------------------------------------------


@pytest.fixture
def passfiles() -> Iterator[None]:
    yield
    secrets.forget_passfiles()


def test_pg_conninfo_moves_the_password_into_a_private_password_file(passfiles: None) -> None:
    url = "postgresql://app:p%40ss:w\\rd@db1:5432,db2:5432/shop?target_session_attrs=read-write"
    conninfo = secrets.pg_conninfo(url)
    assert "p%40ss" not in conninfo and "p@ss" not in conninfo
    assert conninfo.startswith(
        "postgresql://app@db1:5432,db2:5432/shop?target_session_attrs=read-write&passfile=/"
    )
    passfile = Path(conninfo.rpartition("passfile=")[2])
    assert passfile.stat().st_mode & 0o777 == 0o600
    assert passfile.parent.stat().st_mode & 0o777 == 0o700
    # libpq's format: host:port:db:user:password, with ":" and "\" escaped.
    assert passfile.read_text() == "*:*:*:*:p@ss\\:w\\\\rd\n"
    assert secrets.pg_conninfo(url) == conninfo  # one file per URL, not one per connection
    secrets.forget_passfiles()
    assert not passfile.exists()


def test_pg_conninfo_takes_a_password_from_the_query_too(passfiles: None) -> None:
    conninfo = secrets.pg_conninfo("postgresql://db/shop?password=s3cret&sslmode=require")
    assert "s3cret" not in conninfo
    assert conninfo.startswith("postgresql://db/shop?sslmode=require&passfile=/")


@pytest.mark.parametrize(
    "url", ["postgresql://app@db/shop", "postgresql://db1:5432,db2:5432/shop?sslmode=require"]
)
def test_pg_conninfo_leaves_a_url_without_password_alone(url: str) -> None:
    assert secrets.pg_conninfo(url) == url


def test_redis_client_hands_the_password_to_a_credential_provider() -> None:
    client = secrets.redis_client("redis://app:s3cret%21@127.0.0.1:6390/2?socket_timeout=1")
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert "s3cret" not in repr(kwargs) and "s3cret" not in repr(client)
        assert kwargs.get("password") is None and kwargs.get("username") is None
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 2)
        credentials = kwargs["credential_provider"].get_credentials()
        assert credentials == ("app", "s3cret!")
        # What redis's own frames hold while it authenticates: shown masked by pytest -l.
        assert "s3cret" not in repr(credentials)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A real redis-server that wants a password (requirepass), on a free loopback port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port, password = free_port(), "pw-" + uuid.uuid4().hex[:12]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until("redis-server answers", lambda: socket.create_connection(("127.0.0.1", port)))
        yield port, password
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_redis_password_from_the_url_authenticates_for_real(
    redis_with_password: tuple[int, str],
) -> None:
    import redis

    port, password = redis_with_password
    client = secrets.redis_client(f"redis://:{password}@127.0.0.1:{port}/0")
    try:
        assert client.ping() is True
    finally:
        client.close()
    wrong = secrets.redis_client(f"redis://:not-{password}@127.0.0.1:{port}/0")
    try:
        with pytest.raises(redis.AuthenticationError) as info:
            wrong.ping()
        assert password not in str(info.value)
    finally:
        wrong.close()


@pytest.fixture
def postgres_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 15 that wants a password (scram-sha-256): its URL, password and all."""
    bin_dir = Path("/usr/lib/postgresql/15/bin")
    if not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed")
    # Not under pytest's tmp folder: the postgres user (we may be root) must reach it.
    home = Path(tempfile.mkdtemp(prefix="gd-secrets-pg-"))
    home.chmod(0o755)
    password = "pw:" + uuid.uuid4().hex[:12] + "\\x"  # ":" and "\" need escaping in a passfile
    (home / "pw").write_text(password + "\n")
    user = {"user": "postgres"} if os.geteuid() == 0 else {}
    if user:
        shutil.chown(home, "postgres")
        shutil.chown(home / "pw", "postgres")
    port = free_port()
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(home / "data"), "-U", "app", "--auth=scram-sha-256",
         f"--pwfile={home / 'pw'}"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **user,  # type: ignore[call-overload]
    )  # fmt: skip
    proc = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(home / "data"), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={home}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **user,  # type: ignore[call-overload]
    )  # fmt: skip
    try:
        wait_until("postgres listens", lambda: socket.create_connection(("127.0.0.1", port)))
        yield f"postgresql://app:{quote(password, safe='')}@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def test_a_postgres_password_from_the_url_authenticates_through_the_passfile(
    postgres_with_password: str, passfiles: None
) -> None:
    import psycopg

    conninfo = secrets.pg_conninfo(postgres_with_password)
    assert "passfile=" in conninfo and ":pw" not in conninfo
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    wrong = secrets.pg_conninfo(postgres_with_password.replace(":pw%3A", ":not%3A"))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(wrong, connect_timeout=10)
    assert "password authentication failed" in str(info.value)


# -- the canary: a password from the environment never reaches any output -------------------

ROOT = Path(__file__).resolve().parent.parent
CANARY_FEATURE = """\
@acceptance
Feature: canary
  Every connection the harness makes to an unreachable database or cache, with pytest -l.

  Scenario: the database's replication
    When I look at the primary's replication
    Then a standby is streaming with lag under the target's bound, synchronously if declared

  Scenario: the cache's replication
    When I look at the cache's replication
    Then the cache master has an online replica

  Scenario: cache-aside reads
    When I read 2 evicted products twice each through the entrypoint
    Then the first read misses the cache and the second hits it, no slower

  @resilience @destructive
  Scenario: a writer committing to the database
    Given a writer committing 5 rows per second to the database
    When the fault "noop" is injected
    Then no acknowledged write is lost

  @resilience @destructive
  Scenario: a writer setting cache keys
    Given a writer setting 5 keys per second in the cache
    When the fault "noop" is injected
    And 1 seconds pass
    Then no acknowledged write is lost
"""


def test_canary_password_appears_in_no_output(tmp_path: Path, entrypoint: str) -> None:
    canary = "canary-" + uuid.uuid4().hex[:16]
    with refused_port() as db_port, refused_port() as cache_port:
        (tmp_path / "pytest.ini").write_text((ROOT / "pytest.ini").read_text())
        (tmp_path / "conftest.py").write_text(
            'pytest_plugins = ["gameday.pytest_plugin", "chaos.pytest_plugin", "steps.deployment",'
            ' "steps.data", "steps.faults", "steps.load"]\n'
        )
        (tmp_path / "features").mkdir()
        (tmp_path / "features" / "canary.feature").write_text(CANARY_FEATURE)
        # The variable's name does not look secret: only the URL shape says it is a password.
        (tmp_path / "t.yaml").write_text(
            f"name: canary\nprovider: generic\nallow_destructive: true\n"
            f"entrypoint:\n  url: {entrypoint}\n"
            f"database:\n  writer_url: postgresql://app:${{GAMEDAY_CANARY_PW}}@127.0.0.1:"
            f"{db_port}/shop?connect_timeout=2\n"
            f"cache:\n  url: redis://:${{GAMEDAY_CANARY_PW}}@127.0.0.1:{cache_port}/0\n"
            "faults:\n  noop: {inject: 'true', heal: 'true'}\n"
        )
        for folder in ("reports", "state", "tmp"):
            (tmp_path / folder).mkdir()
        env = dict(
            os.environ,
            GAMEDAY_CANARY_PW=canary,
            GAMEDAY_REPORTS_DIR=str(tmp_path / "reports"),
            GAMEDAY_STATE_DIR=str(tmp_path / "state"),
            TMPDIR=str(tmp_path / "tmp"),
            PYTHONPATH=str(ROOT),
        )
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-l", "--tb=long", "-p", "no:cacheprovider",
             "features/", "--target", "t.yaml", "-rA"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        check = subprocess.run(
            [sys.executable, "-m", "gameday.cli", "target", "check", "t.yaml"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    console = run.stdout + run.stderr
    # The connections really failed, with locals shown (psycopg's conninfo among them).
    assert "5 failed" in console, console[-3000:]
    assert "OperationalError" in console and "ConnectionError" in console
    assert "passfile=" in console and "conninfo = " in console
    assert canary not in console, _around(console, canary)
    assert check.returncode == 0 and canary not in check.stdout + check.stderr
    written = {
        p: p.read_text(errors="replace")
        for folder in ("reports", "state", "tmp")
        for p in (tmp_path / folder).rglob("*")
        if p.is_file()
    }
    names = {p.name for p in written}
    assert {"history.jsonl", "verdicts.json", "report.html", "junit.xml"} <= names, names
    assert any(n.startswith("journal") for n in names), names  # the noop fault was journaled
    leaks = [str(p) for p, text in written.items() if canary in text]
    assert not leaks, leaks
    # The password files were removed when the run ended.
    assert not [p for p in written if "pgpass" in str(p)]


def _around(text: str, secret: str) -> str:
    at = text.index(secret)
    return text[max(0, at - 600) : at + 100]
