"""Notifications against real local HTTP receivers that record what arrives: the generic JSON
webhook, the Slack-compatible message, bounded retries, and a receiver that is down never
changing a run's outcome."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gameday.notify import ATTEMPTS, Notice, deliver, notify
from gameday.plan import Receiver
from tests.gameday_project import Project, running_project


@dataclass
class Receiving:
    url: str
    server: http.server.ThreadingHTTPServer
    #: statuses to answer, in turn; the last one repeats
    statuses: list[int]
    got: list[dict[str, Any]] = field(default_factory=list)
    retry_after: str | None = None

    @property
    def bodies(self) -> list[Any]:
        return [g["body"] for g in self.got]


def start_receiver(statuses: list[int], retry_after: str | None = None) -> Receiving:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            rec.got.append(
                {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)}
            )
            status = rec.statuses[min(len(rec.got) - 1, len(rec.statuses) - 1)]
            self.send_response(status)
            if rec.retry_after is not None and status == 429:
                self.send_header("Retry-After", rec.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec = Receiving(f"http://127.0.0.1:{server.server_address[1]}/hook/T0/B0/tokenXYZ", server,
                    statuses, retry_after=retry_after)  # fmt: skip
    return rec


@pytest.fixture
def receivers() -> Iterator[list[Receiving]]:
    started: list[Receiving] = []
    yield started
    for r in started:
        r.server.shutdown()
        r.server.server_close()


def receiver(receivers: list[Receiving], statuses: list[int], **kw: Any) -> Receiving:
    r = start_receiver(statuses, **kw)
    receivers.append(r)
    return r


NOTICE = Notice(
    "end", "nightly", "lab", "host1", run_id="20250101T000000Z-lab", outcome="failed",
    summary="1 of 2 scenario(s) passed",
    failures=["Database failover: ledger: not recovered by the end"],
    regressions=["Database failover: time to recover 9.8 s vs median 1.3 s of the last 10 runs "
                 "(tolerance +100 %)"],
    report="/srv/reports/20250101T000000Z-lab/report.html", at="2025-01-01T00:00:00Z",
)  # fmt: skip


def test_the_generic_webhook_gets_the_notice_as_json(receivers: list[Receiving]) -> None:
    r = receiver(receivers, [200])
    result = deliver(Receiver(kind="webhook", url=r.url, headers={"X-Team": "shop"}), NOTICE,
                     name="ops")  # fmt: skip
    assert (result.ok, result.attempts, result.detail) == (True, 1, "HTTP 200")
    body = r.bodies[0]
    assert body["event"] == "end" and body["outcome"] == "failed" and body["source"] == "gameday"
    assert body["failures"] == ["Database failover: ledger: not recovered by the end"]
    assert body["report"].endswith("report.html")
    assert r.got[0]["headers"]["X-Team"] == "shop"


def test_slack_gets_one_text_message(receivers: list[Receiving]) -> None:
    r = receiver(receivers, [200])
    deliver(Receiver(kind="slack", url=r.url), NOTICE, name="chat")
    assert list(r.bodies[0]) == ["text"]
    text = r.bodies[0]["text"].splitlines()
    assert text[0] == "game day nightly on lab: FAILED (run 20250101T000000Z-lab, host host1)"
    assert "- failed: Database failover: ledger: not recovered by the end" in text
    assert text[-2].startswith("- regressed: Database failover: time to recover 9.8 s")
    assert text[-1] == "report: /srv/reports/20250101T000000Z-lab/report.html"


def test_a_failing_receiver_is_retried_a_bounded_number_of_times(
    receivers: list[Receiving],
) -> None:
    r = receiver(receivers, [500])
    waits: list[float] = []
    result = deliver(Receiver(kind="webhook", url=r.url), NOTICE, name="ops", sleep=waits.append)
    assert (result.ok, result.attempts, result.detail) == (False, ATTEMPTS, "HTTP 500")
    assert len(r.got) == ATTEMPTS and len(waits) == ATTEMPTS - 1


def test_a_receiver_that_recovers_gets_it_on_a_retry(receivers: list[Receiving]) -> None:
    r = receiver(receivers, [503, 429, 200], retry_after="0.1")
    waits: list[float] = []
    result = deliver(Receiver(kind="slack", url=r.url), NOTICE, name="chat", sleep=waits.append)
    assert (result.ok, result.attempts) == (True, 3)
    assert waits[1] == 0.1  # Retry-After honoured


def test_a_refusal_is_not_retried(receivers: list[Receiving]) -> None:
    r = receiver(receivers, [404])
    result = deliver(Receiver(kind="webhook", url=r.url), NOTICE, name="ops", sleep=lambda s: None)
    assert (result.ok, result.attempts, result.detail) == (False, 1, "HTTP 404")


def test_nobody_listening_costs_a_bounded_number_of_attempts_and_never_raises() -> None:
    lines: list[str] = []
    url = "http://127.0.0.1:18398/hooks/secret-token-abc"
    results = notify([Receiver(kind="slack", url=url, name="chat")], NOTICE, log=lines.append)
    assert results[0].attempts == ATTEMPTS and not results[0].ok
    assert lines[0].startswith(f"notify: chat (slack) not reached after {ATTEMPTS} attempt(s):")
    assert lines[0].endswith("the run's outcome is unchanged")
    assert "secret-token-abc" not in lines[0]


# -- through `gameday run` ---------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with running_project(tmp_path / "proj") as project:
        yield project


PLAN = """\
target: targets/fake.yaml
features: [features/ok.feature]
scenarios: [{title}]
notify:
  - {{kind: webhook, url: "{ok}", name: ops-webhook}}
  - {{kind: slack, url: "{chat}", name: team-chat}}
  - {{kind: webhook, url: "{down}", name: broken-hook}}
"""


@pytest.mark.parametrize(
    ("title", "code", "outcome"),
    [("The entrypoint answers its health check", 0, "passed"),
     ("The entrypoint answers a wrong status", 1, "failed")],
)  # fmt: skip
def test_a_run_announces_its_start_and_end_and_a_dead_receiver_changes_nothing(
    project: Project, receivers: list[Receiving], title: str, code: int, outcome: str
) -> None:
    ok, chat, down = receiver(receivers, [200]), receiver(receivers, [200]), receiver(
        receivers, [500])  # fmt: skip
    project.write("gamedays/told.yaml", PLAN.format(title=title, ok=ok.url, chat=chat.url,
                                                     down=down.url))  # fmt: skip
    out = project.gameday("run", "told")
    assert out.returncode == code, out.stdout[-3000:] + out.stderr
    assert [b["event"] for b in ok.bodies] == ["start", "end"]
    start, end = ok.bodies
    assert start["plan"] == "told" and title in start["summary"]
    assert end["outcome"] == outcome and end["run_id"] and end["report"].endswith("report.html")
    assert Path(end["report"]).exists()
    if outcome == "failed":
        assert len(end["failures"]) == 1 and "expected 418" in end["failures"][0]
        # one line: the scenario's title, then what its failed verdict said
        assert end["failures"][0].startswith("The entrypoint answers a wrong status: /health ")
    texts = [b["text"] for b in chat.bodies]
    assert texts[0].startswith("game day told started on fake")
    assert texts[1].startswith(f"game day told on fake: {outcome.upper()} (run ")
    # the dead receiver: tried a bounded number of times, at the start and at the end
    assert len(down.got) == 2 * ATTEMPTS
    assert out.stdout.count("notify: broken-hook (webhook) not reached after 3 attempt(s)") == 2
    assert "tokenXYZ" not in out.stdout + out.stderr
