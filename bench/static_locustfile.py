"""The lightest locust user there is: one GET of HAProxy's static answer, no wait.

Used by bench/locust_vs_wrk.py to measure locust's own ceiling (and what per-request records
cost), not the application's. ``GAMEDAY_RECORDS`` turns the records on as in the real
locustfile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadtests import records


class StaticUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def static(self) -> None:
        self.client.get("/lb/static", name="static")


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    path = os.environ.get(records.RECORDS_ENV, "").strip()
    if path:
        records.attach(environment, Path(path))
