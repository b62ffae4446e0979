"""Telling people: a game day started, ended (how, where the report is), a drill began.

Two kinds of receiver, from the plan's `notify:` list:
- `webhook`: a POST of one JSON object (the `Notice`, as data) to any URL;
- `slack`: a POST of `{"text": ...}` in Slack's incoming-webhook format (Mattermost,
  Rocket.Chat and Teams' Slack-compatible hooks take it too).

Delivery is retried with a bound (a few attempts, backing off, honouring Retry-After up to a
cap) and never raises: a receiver that is down costs at most `MAX_TOTAL_SEC` and a line in
the output, and never changes a run's outcome. Receiver URLs are secrets (Slack's carry a
token): messages name a receiver by its `name`, never by its URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from gameday.plan import Receiver
from gameday.secrets import redact

ATTEMPTS = 3
TIMEOUT_SEC = 5.0
BACKOFF_SEC = (0.5, 2.0)  # before the 2nd and the 3rd attempt
MAX_RETRY_AFTER_SEC = 10.0
MAX_TOTAL_SEC = 30.0
#: failed verdicts listed in a message, one line each; more are counted
LISTED_FAILURES = 10


@dataclass(frozen=True)
class Notice:
    """What a message says. `event`: start | end | drill-start | drill-end."""

    event: str
    plan: str
    target: str
    host: str
    run_id: str = ""
    outcome: str = ""  # passed | failed | regressed | aborted (end events)
    summary: str = ""
    failures: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    report: str = ""
    at: str = ""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["source"] = "gameday"
        return {k: _clean(v) for k, v in data.items()}

    def as_text(self) -> str:
        head = {
            "start": f"game day {self.plan} started on {self.target}",
            "end": f"game day {self.plan} on {self.target}: {self.outcome.upper()}",
            "drill-start": f"DRILL on {self.target} ({self.plan}): a fault is in effect now",
            "drill-end": f"drill {self.plan} on {self.target} ended: {self.outcome.upper()}",
        }.get(self.event, f"gameday {self.event}: {self.plan} on {self.target}")
        lines = [head + (f" (run {self.run_id}, host {self.host})" if self.run_id else "")]
        if self.summary:
            lines.append(self.summary)
        shown = self.failures[:LISTED_FAILURES]
        lines += [f"- failed: {line}" for line in shown]
        if len(self.failures) > len(shown):
            lines.append(f"- and {len(self.failures) - len(shown)} more failed verdicts")
        lines += [f"- regressed: {line}" for line in self.regressions]
        if self.report:
            lines.append(f"report: {self.report}")
        return redact("\n".join(lines))


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@dataclass(frozen=True)
class Delivery:
    receiver: str
    ok: bool
    attempts: int
    detail: str  # "HTTP 200", "HTTP 500", "ConnectError: ..."


def receiver_name(receiver: Receiver, index: int) -> str:
    return receiver.name or f"{receiver.kind} #{index + 1}"


def _payload(receiver: Receiver, notice: Notice) -> dict[str, Any]:
    if receiver.kind == "slack":
        return {"text": notice.as_text()}
    return notice.as_json()


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "").strip()
    try:
        return min(float(raw), MAX_RETRY_AFTER_SEC) if raw else None
    except ValueError:
        return None


def deliver(
    receiver: Receiver,
    notice: Notice,
    *,
    name: str,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST the notice to one receiver: retried on connection errors, timeouts, 429 and 5xx,
    at most ATTEMPTS times and MAX_TOTAL_SEC in all; a 4xx other than 429 is not retried."""
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT_SEC)
    started = time.monotonic()
    detail = ""
    attempts = 0
    try:
        for attempt in range(ATTEMPTS):
            attempts = attempt + 1
            wait: float | None = None
            try:
                response = http.post(
                    receiver.url, json=_payload(receiver, notice), headers=receiver.headers
                )
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
            else:
                detail = f"HTTP {response.status_code}"
                if response.is_success:
                    return Delivery(name, True, attempts, detail)
                if response.status_code != 429 and response.status_code < 500:
                    break
                wait = _retry_after(response)
            if attempt + 1 == ATTEMPTS:
                break
            wait = wait if wait is not None else BACKOFF_SEC[min(attempt, len(BACKOFF_SEC) - 1)]
            if time.monotonic() - started + wait > MAX_TOTAL_SEC:
                break
            sleep(wait)
    finally:
        if own:
            http.close()
    # The URL may sit in an error's text: a Slack hook's path is its token.
    detail = redact(detail.replace(receiver.url, f"<{name}>"))
    return Delivery(name, False, attempts, detail)


def notify(
    receivers: Sequence[Receiver], notice: Notice, *, log: Callable[[str], None]
) -> list[Delivery]:
    """Send the notice to every receiver; say in one line each what failed. Never raises."""
    out: list[Delivery] = []
    for i, receiver in enumerate(receivers):
        name = receiver_name(receiver, i)
        try:
            result = deliver(receiver, notice, name=name)
        except Exception as exc:  # a notification must never break a run
            result = Delivery(name, False, 0, redact(f"{type(exc).__name__}: {exc}"))
        out.append(result)
        if not result.ok:
            log(
                f"notify: {name} ({receiver.kind}) not reached after {result.attempts} "
                f"attempt(s): {result.detail}; the run's outcome is unchanged"
            )
    return out
