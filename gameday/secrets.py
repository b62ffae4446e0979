"""Keep secrets out of logs, reports and tracebacks.

Two kinds of secret are redacted: passwords inside URLs (`postgresql://user:pw@host`,
`redis://:pw@host`), found by shape, and values a target took from the environment for a key
that looks secret, registered when the target is loaded. `redact` is applied wherever text
leaves the process: log records (`install_log_redaction`, done by the pytest plugin and the
CLI), step failure messages, reprs of target models, reports.

Redacting text is not enough for tracebacks: `pytest -l` prints every frame's local variables,
psycopg's and redis's included, and a connection string or a `password=` argument there is
printed whole. So the clients never get the password in a string or keyword: `pg_conninfo`
moves it into a libpq password file (mode 0600, in a private folder of this process, removed
at exit) that libpq reads itself, and `redis_client` hands it over through a credential
provider whose password has a masked repr.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Any
from urllib.parse import quote, unquote

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


# -- passwords kept out of connection strings -----------------------------------------------


class Password(str):
    """A password whose repr is masked: tracebacks with locals (`pytest -l`) print reprs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


_lock = threading.Lock()
_conninfos: dict[str, str] = {}  # URL with password -> the same URL with passfile= instead
_passfile_dir: str | None = None


def pg_conninfo(url: str) -> str:
    """`url` for psycopg.connect() with its password moved into a libpq password file.

    The result names the file (`passfile=`) and holds no password; a URL without a password is
    returned as it is. One file per URL for the life of the process (a probe reconnects often).
    """
    try:
        with _lock:
            conninfo = _conninfos.get(url)
            if conninfo is None:
                conninfo = _conninfos[url] = _without_pg_password(url)
        return conninfo
    except Exception as exc:
        url = MASK  # this frame is in the traceback, and pytest -l would print it
        raise ValueError(f"database URL: {redact(str(exc))}") from None


class _Url:
    """A URL cut the way libpq and redis read one: `scheme://[user[:password]@]hosts[/path][?query]`
    (hosts may be several, `h1:5432,h2:5432`, which urlsplit does not take)."""

    def __init__(self, url: str) -> None:
        self.scheme, self.sep, rest = url.partition("://")
        cut = min((rest.index(c) for c in "/?" if c in rest), default=len(rest))
        authority, tail = rest[:cut], rest[cut:]
        userinfo, _, self.hosts = authority.rpartition("@")
        self.user, self.colon, password = userinfo.partition(":")
        self.path, question, query = tail.partition("?")
        params = [p for p in query.split("&") if p] if question else []
        in_query = [p.partition("=")[2] for p in params if p.partition("=")[0] == "password"]
        self.kept = [p for p in params if p.partition("=")[0] != "password"]
        # The password as the client would read it (percent-decoded), or None.
        self.password: Password | None = None
        if self.sep and (self.colon or in_query):
            self.password = Password(unquote(password if self.colon else in_query[-1]))

    def without_password(self, *, user: bool, extra: str = "") -> str:
        head = f"{self.user}@" if user and self.user else ""
        query = "&".join(self.kept + ([extra] if extra else []))
        return f"{self.scheme}://{head}{self.hosts}{self.path}" + (f"?{query}" if query else "")


def _without_pg_password(url: str) -> str:
    parts = _Url(url)
    if parts.password is None:
        return url
    passfile = quote(_write_passfile(parts.password), safe="/")
    return parts.without_password(user=True, extra=f"passfile={passfile}")


def _write_passfile(password: str) -> str:
    """A libpq password file matching any host, port, database and user: it is only ever
    named by the one conninfo made for it."""
    global _passfile_dir
    if _passfile_dir is None:
        _passfile_dir = tempfile.mkdtemp(prefix="gameday-pgpass-")  # mode 0700
        atexit.register(shutil.rmtree, _passfile_dir, True)
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    fd, path = tempfile.mkstemp(prefix="pgpass-", dir=_passfile_dir)  # mode 0600
    with os.fdopen(fd, "w") as f:
        f.write(f"*:*:*:*:{escaped}\n")
    return path


def redis_client(url: str, **kwargs: Any) -> Any:
    """`redis.Redis.from_url(url, **kwargs)`, with the URL's user and password handed over by
    a credential provider instead of connection keywords (which redis keeps in plain dicts)."""
    import redis

    try:
        bare, credentials = _without_redis_password(url)
    except Exception as exc:
        url = MASK  # this frame is in the traceback, and pytest -l would print it
        raise ValueError(f"cache URL: {redact(str(exc))}") from None
    del url
    if credentials is not None:
        kwargs["credential_provider"] = credentials
    return redis.Redis.from_url(bare, **kwargs)


def _without_redis_password(url: str) -> tuple[str, Any]:
    parts = _Url(url)
    if parts.password is None:
        return url, None
    # redis refuses a user in the URL beside a credential provider: both go in the provider.
    return parts.without_password(user=False), _credentials(
        unquote(parts.user) or None, parts.password
    )


def _credentials(username: str | None, password: Password) -> Any:
    from redis.credentials import CredentialProvider

    class Credentials(CredentialProvider):
        """The URL's user and password, given to redis only when it authenticates."""

        def get_credentials(self) -> tuple[str] | tuple[str, str]:
            return (username, password) if username else (password,)

        def __repr__(self) -> str:
            return f"Credentials(username={username!r}, password={MASK!r})"

    return Credentials()


def forget_passfiles() -> None:
    """Remove the password files now (tests; the process does it at exit anyway)."""
    global _passfile_dir
    with _lock:
        _conninfos.clear()
        if _passfile_dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(_passfile_dir)
            _passfile_dir = None
