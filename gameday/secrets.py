"""Keep secrets out of logs and reports.

Two kinds of secret are redacted: passwords inside URLs (`postgresql://user:pw@host`,
`redis://:pw@host`), found by shape, and values a target took from the environment for a key
that looks secret, registered when the target is loaded. `redact` is applied wherever text
leaves the process: log records (`install_log_redaction`, done by the pytest plugin and the
CLI), step failure messages, reprs of target models, reports.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

MASK = "***"
# scheme://[user]:password@ -> keep the user, hide the password.
# Greedy up to the last "@" before the path, so an unencoded "@" in a password is hidden too.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*):(?P<pw>[^/\s]+)@", re.I)
# Keyword forms: libpq's password=xyz, PGPASSWORD=xyz, REDIS_PASSWORD="a b" (quotes kept whole).
_KV_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z_]*password\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|\S+)", re.I
)
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Redact this exact value from now on (values shorter than 4 characters are too common)."""
    if len(value) >= 4:
        _secrets.add(value)


def register_url_passwords(text: str) -> None:
    """Register every password inside a URL in `text`, as written and percent-decoded.

    The URL shape is redacted anyway; a libpq or redis error message that quotes the password
    alone (decoded, as the client sent it) would not be.
    """
    for match in _URL_PASSWORD.finditer(text):
        password = match["pw"]
        register_secret(password)
        register_secret(unquote(password))


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


_filter = RedactingFilter()


def install_log_redaction() -> None:
    """Redact every log record of the process, whichever logger or handler it goes to.

    A filter on one logger misses records propagated from its children, and pytest adds its
    own handlers; the record factory sees every record once, when it is made.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_gameday_redacts", False):
        return

    def make(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _filter.filter(record)
        return record

    make._gameday_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)
