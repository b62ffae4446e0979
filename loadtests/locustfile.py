"""CloudMart user journeys for locust, against the load balancer (the lab: 127.0.0.1:17400).

Run by itself::

    locust -f loadtests/locustfile.py --host http://127.0.0.1:17400 --headless -u 10 -r 5 -t 10s

Journeys: ``BrowsingUser`` (catalogue, product pages, health) and ``ShoppingUser`` (sign in,
check the session, order, read the order back). URLs are grouped with ``name=`` ("product
page", "order", ...), so statistics do not explode into one line per id.

Environment:

- ``GAMEDAY_SHAPE=steady|step|spike``: drive users with a shape from ``shapes.py`` (each
  configured by its own variables and ending by itself); unset: plain ``-u/-r/-t``.
- ``GAMEDAY_RECORDS=<file>``: one JSON line per request (see ``records.py``).
- ``GAMEDAY_MAX_RUN_SEC`` [900]: a headless run without ``-t`` and without a shape quits after
  this long, so no run is unbounded by accident.
"""

from __future__ import annotations

import os
import random
import sys
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, between, events, task

try:
    from loadtests import records, shapes
except ImportError:  # run from another directory: the package's parent is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from loadtests import records, shapes
from loadtests.pacing import (
    BROWSING_WAIT_MAX_SEC,
    BROWSING_WAIT_MIN_SEC,
    SHOPPING_WAIT_MAX_SEC,
    SHOPPING_WAIT_MIN_SEC,
)

PRODUCT_ID_MIN = 1
PRODUCT_ID_MAX = 300  # the seed catalogue: ids 1..300
PRODUCT_PAGE_SIZE = 20
ORDER_QUANTITY_MAX = 5

REQUEST_TIMEOUT_SEC = 10.0

DEFAULT_MAX_RUN_SEC = 900.0


class BrowsingUser(FastHttpUser):
    """An anonymous visitor: pages through the catalogue and opens product pages.

    Sends no ``X-User-Id`` and no session, so the per-user rate limit does not apply.
    """

    weight = 3
    wait_time = between(BROWSING_WAIT_MIN_SEC, BROWSING_WAIT_MAX_SEC)
    network_timeout = REQUEST_TIMEOUT_SEC
    connection_timeout = REQUEST_TIMEOUT_SEC

    @task(2)
    def product_list(self) -> None:
        """The first catalogue page."""
        self.client.get(f"/api/products?limit={PRODUCT_PAGE_SIZE}", name="product list")

    @task(6)
    def product_page(self) -> None:
        """One product by a random id (served from Redis on a hit, X-Cache says which)."""
        product_id = random.randint(PRODUCT_ID_MIN, PRODUCT_ID_MAX)
        self.client.get(f"/api/products/{product_id}", name="product page")

    @task(1)
    def health(self) -> None:
        """The health endpoint, as a monitoring probe would see it through the balancer."""
        self.client.get("/health", name="health")


class ShoppingUser(FastHttpUser):
    """A customer: signs in as a user of its own, checks the session, orders, reads it back.

    Each simulated user signs in under a fresh random name, so the per-user rate limit counts
    its requests alone (see ``SHOPPING_WAIT_*_SEC``).
    """

    weight = 1
    wait_time = between(SHOPPING_WAIT_MIN_SEC, SHOPPING_WAIT_MAX_SEC)
    network_timeout = REQUEST_TIMEOUT_SEC
    connection_timeout = REQUEST_TIMEOUT_SEC

    def on_start(self) -> None:
        """Sign in: ``POST /api/login`` gives the session id used as a bearer token."""
        self.user_name = f"shopper-{uuid.uuid4().hex[:12]}"
        self.session_id: str | None = None
        with self.client.post(
            "/api/login", json={"user": self.user_name}, name="login", catch_response=True
        ) as response:
            session = _json(response).get("session")
            if response.status_code == 200 and isinstance(session, str):
                self.session_id = session
            else:
                response.failure(f"login: no session in {response.status_code} answer")

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session_id}"} if self.session_id else {}

    @task(2)
    def me(self) -> None:
        """``GET /api/me`` with the session: the session store (Redis) is shared by servers."""
        if self.session_id is None:
            self.on_start()
            return
        self.client.get("/api/me", headers=self._auth(), name="me")

    @task(3)
    def place_and_read_order(self) -> None:
        """Place an order under a unique idempotency key, then read it back by id."""
        order = {
            "item": f"sku-{random.randint(1, 999):03d}",
            "quantity": random.randint(1, ORDER_QUANTITY_MAX),
        }
        headers = {**self._auth(), "Idempotency-Key": f"locust-{uuid.uuid4().hex}"}
        with self.client.post(
            "/api/orders", json=order, headers=headers, name="place order", catch_response=True
        ) as response:
            order_id = _json(response).get("id")
            if response.status_code != 201 or order_id is None:
                response.failure(f"place order: {response.status_code}, id {order_id!r}")
                return
        # A customer reads back the order it just placed: a consistent read. From the standby
        # it may not be there yet (a synchronous commit waits for the standby's flush, not its
        # replay), a 404 for a write that was kept: under load, and while a standby catches up
        # after a failover, that failed users before any fault.
        self.client.get(f"/api/orders/{order_id}?consistent=true", headers=self._auth(),
                        name="order")  # fmt: skip


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except Exception:  # no body, HTML from the balancer, a connection error
        return {}
    return body if isinstance(body, dict) else {}


# Locust takes any LoadTestShape subclass found in this module: expose only the chosen one.
_shape = shapes.selected()
if _shape is not None:
    SelectedShape = _shape


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    path = os.environ.get(records.RECORDS_ENV, "").strip()
    if path:
        records.attach(environment, Path(path))
    _bound_run_time(environment)


def _bound_run_time(environment: Any) -> None:
    """Quit a headless run that has neither ``-t`` nor a shape after GAMEDAY_MAX_RUN_SEC."""
    options = environment.parsed_options
    if options is None or not options.headless or options.run_time or _shape is not None:
        return
    if environment.runner is None or type(environment.runner).__name__ == "WorkerRunner":
        return  # workers follow their master
    max_run_sec = float(os.environ.get("GAMEDAY_MAX_RUN_SEC", DEFAULT_MAX_RUN_SEC))

    def stop_later() -> None:
        gevent.sleep(max_run_sec)
        environment.runner.quit()

    gevent.spawn(stop_later)
