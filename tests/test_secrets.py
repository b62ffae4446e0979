"""Unit tests of gameday.secrets: passwords and registered secrets never leave the process."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gameday import secrets
from gameday.secrets import MASK, RedactingFilter, redact, register_secret
from gameday.verdict import Verdict, failed, passed


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
