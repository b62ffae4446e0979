"""How fast the CloudMart users act: shared by the locustfile and the harness's load caps.

The harness never imports locust (gevent), so the numbers that bound a user's request rate
live here, where both sides can read them. A user waits at least its minimum between tasks
and a task sends at most ``*_REQUESTS_PER_TASK`` requests, so one user never sends more than
``MAX_REQUESTS_PER_USER_SEC``: the harness multiplies it by the users asked for and refuses a
load whose ceiling passes the target's ``load.max_rps``.
"""

from __future__ import annotations

BROWSING_WAIT_MIN_SEC = 0.5
BROWSING_WAIT_MAX_SEC = 2.0
BROWSING_REQUESTS_PER_TASK = 1
# The lab limits each signed-in user to 100 requests per 60 s. A shopper sends 1.6 requests
# per task on average and waits 2 s on average: about 50 requests/min, well under.
SHOPPING_WAIT_MIN_SEC = 1.0
SHOPPING_WAIT_MAX_SEC = 3.0
SHOPPING_REQUESTS_PER_TASK = 2  # place an order, read it back

MAX_REQUESTS_PER_USER_SEC = max(
    BROWSING_REQUESTS_PER_TASK / BROWSING_WAIT_MIN_SEC,
    SHOPPING_REQUESTS_PER_TASK / SHOPPING_WAIT_MIN_SEC,
)
