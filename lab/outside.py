"""The lab's internet: an HTTP service that answers every GET with the caller's address.

It runs in the lab's `out` namespace, which a zone reaches only through its own NAT: the
address it sees is that NAT's public address, so an egress probe learns both that the zone
reached the internet and which NAT carried it (`{"source": "198.51.100.2"}`).

    python -m lab.outside --host 203.0.113.10 --port 17445
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class _Echo(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, as a probe that must cross the NAT every time
    # wants (a kept-alive connection would hide a NAT that stopped forwarding new flows).
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = json.dumps({"source": self.client_address[0]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per probe request would fill the log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.outside", description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    with _Server((args.host, args.port), _Echo) as server:
        server.serve_forever(poll_interval=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
