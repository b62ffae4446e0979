"""Command line entry point: ``python -m lab.app --server-name server1 --zone a --port 17410``.

Each URL flag falls back to the environment variable the seed deployment sets
(DATABASE_WRITE_URL, DATABASE_READ_URL, REDIS_MASTER_URL); the read URL finally falls back to
the write URL.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from lab.app.main import Settings, create_app


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, str, int]:
    """Settings plus the host and port to bind."""
    parser = argparse.ArgumentParser(
        prog="python -m lab.app", description="Run one CloudMart backend server."
    )
    parser.add_argument("--server-name", required=True, help="e.g. server1")
    parser.add_argument("--zone", required=True, help="availability zone letter, e.g. a")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db-write-url", default=os.environ.get("DATABASE_WRITE_URL"))
    parser.add_argument("--db-read-url", default=os.environ.get("DATABASE_READ_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_MASTER_URL"))
    parser.add_argument(
        "--egress-url", default=os.environ.get("EGRESS_URL"),
        help="an internet service answering with the caller's address (GET /egress asks it)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.db_write_url:
        parser.error("--db-write-url (or DATABASE_WRITE_URL) is required")
    if not args.redis_url:
        parser.error("--redis-url (or REDIS_MASTER_URL) is required")
    settings = Settings(
        server_name=args.server_name,
        zone=args.zone,
        db_write_url=args.db_write_url,
        db_read_url=args.db_read_url or args.db_write_url,
        redis_url=args.redis_url,
        egress_url=args.egress_url,
    )
    return settings, args.host, args.port


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then restores this handler and re-raises
    # the signal; exiting 0 here (rather than dying by the signal or with a KeyboardInterrupt
    # traceback) lets the process manager see a clean stop. Before uvicorn has started it
    # simply ends the process.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    settings, host, port = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # psycopg logs every failed pool reconnection and every query cancellation it attempts;
    # the app already logs each database state change and failed request, with the server name.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns quietly when binding or the lifespan startup fails; say so in the status.
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
