"""A throwaway PostgreSQL server for the ledger's tests: initdb and pg_ctl in a folder of its
own, trust authentication on 127.0.0.1, removed when stopped. As root it runs as the
`postgres` user (PostgreSQL refuses root), as the lab does."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresUnavailable(Exception):
    pass


@dataclass
class Postgres:
    folder: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                      "stop"], check=False)  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_postgres(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)


def start_postgres(port: int) -> Postgres:
    if not (PG_BIN / "initdb").exists():
        raise PostgresUnavailable(f"no {PG_BIN / 'initdb'} (apt-get install postgresql-15)")
    folder = Path(tempfile.mkdtemp(prefix="gameday-ledger-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    try:
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                      "--no-sync"])  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                      str(folder / "log"), "-w", "-t", "60", "start"])  # fmt: skip
    except subprocess.CalledProcessError as exc:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        why = f"{exc.cmd[-1]} failed: {exc.stderr or exc.stdout} {log}"
        raise PostgresUnavailable(why) from None
    return Postgres(folder, port)
