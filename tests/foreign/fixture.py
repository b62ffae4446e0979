"""The session's foreign deployment, for the test modules that import `foreign`.

Started once per session (a module that imports the fixture again reuses it), stopped at the
end. A folder left by a session that was killed (its owner pid is gone), or started by hand,
is taken down first, so every session starts from a fresh deployment.

`down` deletes the deployment's folder, logs included: with $GAMEDAY_FOREIGN_KEEP_LOGS=DIR,
the folder (without the database files) is copied to DIR first, to read the PostgreSQL,
nginx and Redis logs of a failed session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.foreign import deployment as d


@pytest.fixture(scope="session")
def foreign() -> Iterator[d.Layout]:
    layout = d.Layout.from_env()
    os.environ.setdefault(d.PASSWORD_VAR, d.CANARY_PASSWORD)
    if layout.folder.exists() and d.pid_of(layout, "owner") == os.getpid():
        yield layout  # this session started it already (another module's copy of the fixture)
        return
    d.down(layout)
    try:
        d.up(layout)
        d.record_pid(layout, "owner", os.getpid())
        yield layout
    finally:
        keep = os.environ.get("GAMEDAY_FOREIGN_KEEP_LOGS", "").strip()
        if keep and layout.folder.exists():
            skip = shutil.ignore_patterns("data", "data.new", "pgsock")
            shutil.copytree(layout.folder, keep, dirs_exist_ok=True, symlinks=True, ignore=skip)
        d.down(layout)


@pytest.fixture
def healthy_foreign(foreign: d.Layout) -> d.Layout:
    """The deployment, whole: repaired first if a test before left it broken."""
    if not d.healthy(foreign):
        d.up(foreign)
    assert d.healthy(foreign), d.status(foreign)
    return foreign
