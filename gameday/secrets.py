"""Keep secrets out of logs and reports.

Two kinds of secret are redacted: passwords inside URLs (`postgresql://user:pw@host`,
`redis://:pw@host`), found by shape, and values a target took from the environment for a key
that looks secret, registered when the target is loaded. `redact` is applied wherever text
leaves the process: log records (`RedactingFilter`), step failure messages, reports.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# scheme://[user]:password@ -> keep the user, hide the password.
# Greedy up to the last "@" before the path, so an unencoded "@" in a password is hidden too.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*):(?P<pw>[^/\s]+)@", re.I)
# libpq keyword form: password=xyz
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.I)
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Redact this exact value from now on (values shorter than 4 characters are too common)."""
    if len(value) >= 4:
        _secrets.add(value)


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
