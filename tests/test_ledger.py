"""The ledger, on SQLite and on a real PostgreSQL: schema and migrations, leases (taken,
refused naming the holder, renewed, expired, taken over from a dead holder, raced by
processes), the pause (kill switch), acknowledgements and run records."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gameday.ledger import (
    SCHEMA_VERSION,
    Holder,
    LeaseHeld,
    LeaseLost,
    Ledger,
    LedgerError,
    PauseSwitch,
    RunRecord,
    TargetPaused,
    ledger_location,
    refuse_if_paused,
)
from gameday.load import free_port
from gameday.target import Target
from tests.conftest import refused_port
from tests.pg import Postgres, PostgresUnavailable, start_postgres

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    # A port the kernel found free rather than a fixed one: make test's shards, a developer's
    # labs and other sessions run beside this one. Another process may take it before
    # PostgreSQL binds it: then another port.
    for attempt in range(3):
        try:
            server = start_postgres(free_port())
            break
        except PostgresUnavailable as exc:
            if attempt == 2:
                pytest.fail(f"cannot start PostgreSQL for the ledger tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nobody_port() -> Iterator[int]:
    with refused_port() as port:
        yield port


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.create_database(f"ledger_{os.getpid()}_{time.time_ns()}")


def target(name: str = "shop", url: str = "http://127.0.0.1:9") -> Target:
    raw = {"name": name, "provider": "generic", "entrypoint": {"url": url}}
    return Target.model_validate(raw).model_copy(update={"source": f"targets/{name}.yaml"})


def other_machine(pid: int = 4242) -> Holder:
    return Holder("elsewhere", "another-boot/1", pid, "1")


def record(run_id: str, title: str, ended: float, **kw: object) -> RunRecord:
    values: dict[str, object] = {
        "run_id": run_id, "kind": "scenario", "plan": "nightly", "target_name": "shop",
        "target_key": target().identity(), "harness_revision": "abc", "deployment_revision": "",
        "host": "h", "started_at": ended - 10, "ended_at": ended, "scenario": f"f::{title}",
        "title": title, "outcome": "passed", "message": "", "duration_sec": 10.0,
    }  # fmt: skip
    values.update(kw)
    return RunRecord(**values)  # type: ignore[arg-type]


# -- where the ledger is --------------------------------------------------------------------


def test_locations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GAMEDAY_LEDGER_URL", raising=False)
    assert ledger_location().url == ".gameday/ledger.sqlite3"
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", "sqlite:///relative/l.db")
    assert ledger_location().url == "relative/l.db"
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", "sqlite:////tmp/x.db")
    assert (ledger_location().dialect, ledger_location().url) == ("sqlite", "/tmp/x.db")
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", "postgresql://u:pw@db:5432/l")
    assert ledger_location().dialect == "postgres"
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", "mysql://u:hunter2@db/l")
    with pytest.raises(LedgerError) as info:
        ledger_location()
    assert "GAMEDAY_LEDGER_URL" in str(info.value) and "hunter2" not in str(info.value)


def test_the_default_ledger_lives_in_the_project_folder_and_keeps_out_of_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GAMEDAY_LEDGER_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with Ledger.open() as ledger:
        assert ledger.schema_version() == SCHEMA_VERSION
    assert (tmp_path / ".gameday" / "ledger.sqlite3").exists()
    assert (tmp_path / ".gameday" / ".gitignore").read_text().strip().endswith("*")


def test_an_unreachable_postgres_ledger_is_one_line_without_its_password(nobody_port: int) -> None:
    url = f"postgresql://gameday:s3cret-pw@127.0.0.1:{nobody_port}/ledger"
    with pytest.raises(LedgerError) as info:
        Ledger.open(url, source="gamedays/x.yaml: ledger")
    message = str(info.value)
    assert message.startswith("gamedays/x.yaml: ledger: postgresql://gameday:***@127.0.0.1")
    assert "cannot connect to the ledger" in message
    assert "s3cret-pw" not in message and "\n" not in message


def test_a_sqlite_ledger_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="cannot open the SQLite ledger"):
        Ledger.open(f"sqlite:///{tmp_path}/no/such/folder/l.db")


# -- schema and migrations ------------------------------------------------------------------


def test_migrations_create_the_schema_once(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        assert ledger.schema_version() == SCHEMA_VERSION
        ledger.append([record("r1", "failover", 100.0)])
    with Ledger.open(ledger_url) as ledger:  # opening again migrates nothing, loses nothing
        assert ledger.schema_version() == SCHEMA_VERSION
        assert [r.run_id for r in ledger.records()] == ["r1"]


def test_a_ledger_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE gameday_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="newer than this gameday knows"):
        Ledger.open(f"sqlite:///{path}")


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n" * 100)
    with pytest.raises(LedgerError) as info:
        Ledger.open(f"sqlite:///{path}")
    assert "\n" not in str(info.value)


# -- leases ---------------------------------------------------------------------------------


def test_a_second_holder_is_refused_naming_the_first(ledger_url: str) -> None:
    shop = target()
    with Ledger.open(ledger_url) as ledger:
        lease, previous = ledger.acquire(shop, plan="nightly", ttl_sec=60)
        assert previous is None
        ledger.attach_run(lease, "20250101T000000Z-shop")
        with pytest.raises(LeaseHeld) as info:
            ledger.acquire(shop, holder=other_machine())
        message = str(info.value)
        me = Holder.me()
        assert f"host {me.host}, pid {me.pid}, run 20250101T000000Z-shop, plan nightly" in message
        assert "since 20" in message and "expires in" in message
        assert ledger.lease_problem(shop) == message
        ledger.release(lease)
        assert ledger.lease_problem(shop) is None
        ledger.acquire(shop, holder=other_machine())  # free again


def test_leases_are_keyed_by_the_deployment_not_the_file_name(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        ledger.acquire(target("shop"), ttl_sec=60)
        with pytest.raises(LeaseHeld):  # another file, the same deployment
            ledger.acquire(target("shop-copy"), holder=other_machine())
        ledger.acquire(target("other", "http://127.0.0.1:10"), holder=other_machine())


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it(ledger_url: str) -> None:
    shop = target()
    with Ledger.open(ledger_url) as ledger:
        stale, _ = ledger.acquire(shop, ttl_sec=2, holder=other_machine())
        with pytest.raises(LeaseHeld):
            ledger.acquire(shop)
        time.sleep(2.2)
        lease, previous = ledger.acquire(shop, ttl_sec=60)
        assert previous is not None and previous.token == stale.token
        with pytest.raises(LeaseLost, match="was lost"):
            ledger.renew(stale)
        events = ledger.events(shop, kind="lease-taken-over")
        assert len(events) == 1 and events[0].detail.startswith("expired: host elsewhere")
        assert ledger.renew(lease).expires_at >= lease.expires_at


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(ledger_url: str) -> None:
    shop = target()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    holder = Holder.me()
    time.sleep(0.2)
    child = Holder(holder.host, holder.machine, proc.pid, _start_of(proc.pid))
    with Ledger.open(ledger_url) as ledger:
        ledger.acquire(shop, ttl_sec=600, holder=child)
        with pytest.raises(LeaseHeld):  # alive: refused, however long its lease
            ledger.acquire(shop)
        proc.kill()
        proc.wait()
        _, previous = ledger.acquire(shop)  # its process is gone: no need to wait 600 s
        assert previous is not None and previous.holder.pid == proc.pid
        assert "its process is gone" in ledger.events(shop, kind="lease-taken-over")[0].detail


def _start_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def test_a_reused_pid_does_not_keep_a_dead_holder_alive(ledger_url: str) -> None:
    me = Holder.me()
    impostor = Holder(me.host, me.machine, me.pid, "1")  # our pid, another start time
    with Ledger.open(ledger_url) as ledger:
        ledger.acquire(target(), ttl_sec=600, holder=impostor)
        _, previous = ledger.acquire(target())
        assert previous is not None


RACER = """
import json, sys, time
from gameday.ledger import Ledger, LeaseHeld
from gameday.target import Target
t = Target.model_validate({"name": "shop", "provider": "generic",
                           "entrypoint": {"url": "http://127.0.0.1:9"}})
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
with Ledger.open(sys.argv[1]) as ledger:
    try:
        ledger.acquire(t, ttl_sec=60)
        print(json.dumps({"won": True}), flush=True)
        time.sleep(4)  # stay alive: a holder that exits is a dead holder, taken over
    except LeaseHeld as exc:
        print(json.dumps({"won": False, "why": str(exc)}))
"""


def test_processes_racing_for_a_lease_one_wins(ledger_url: str, tmp_path: Path) -> None:
    Ledger.open(ledger_url).close()  # the schema exists before the race
    start = time.time() + 1.5
    cmd = [sys.executable, "-c", RACER, ledger_url, str(start)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(6)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(r["won"] for r in results) == 1, results
    assert all("is held by another game day: host" in r["why"] for r in results if not r["won"])


# -- the kill switch ------------------------------------------------------------------------


def test_pause_refuses_faults_and_names_who_and_why(ledger_url: str) -> None:
    shop = target()
    with Ledger.open(ledger_url) as ledger:
        refuse_if_paused(shop, ledger=ledger)  # not paused: nothing happens
        ledger.pause(shop, reason="incident 42: checkout down", by="alice")
        with pytest.raises(TargetPaused) as info:
            refuse_if_paused(target("shop-copy"), ledger=ledger)  # same deployment
        message = str(info.value)
        assert "target shop is paused by alice since" in message
        assert "incident 42: checkout down" in message and "\n" not in message
        lifted = ledger.resume(shop, by="bob")
        assert lifted is not None and lifted.by == "alice"
        refuse_if_paused(shop, ledger=ledger)
        assert ledger.resume(shop, by="bob") is None
        kinds = [(e.kind, e.who) for e in ledger.events(shop)]
        assert kinds == [("pause", "alice"), ("resume", "bob")]


def test_refuse_if_paused_reads_the_configured_ledger(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", ledger_url)
    with Ledger.open() as ledger:
        ledger.pause(target(), reason="freeze", by="ops")
    with pytest.raises(TargetPaused, match="freeze"):
        refuse_if_paused(target())


def test_an_unreadable_ledger_refuses_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", f"postgresql://x@127.0.0.1:{nobody_port}/l")
    with pytest.raises(LedgerError):
        refuse_if_paused(target())


def test_the_pause_switch_fires_on_a_pause(ledger_url: str) -> None:
    switch = PauseSwitch(target(), url=ledger_url)
    try:
        assert switch.check() is None
        with Ledger.open(ledger_url) as ledger:
            ledger.pause(target(), reason="big sale today", by="carol")
        reason = switch.check()
        assert reason is not None and "paused by carol" in reason and "big sale today" in reason
    finally:
        switch.close()


def test_the_pause_switch_rides_out_a_blip_but_not_a_silence(nobody_port: int) -> None:
    now = [0.0]
    url = f"postgresql://x@127.0.0.1:{nobody_port}/l"
    switch = PauseSwitch(target(), url=url, silence_sec=5, clock=lambda: now[0])
    assert switch.check() is None  # cannot read it: not yet a reason to heal
    now[0] = 4.9
    assert switch.check() is None
    now[0] = 5.1
    reason = switch.check()
    assert reason is not None and reason.startswith("cannot read the pause state")


# -- records --------------------------------------------------------------------------------


def test_records_round_trip_and_filter(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        ledger.append([
            record("r1", "db failover", 100, metrics={"time_to_recover": 1.5}),
            record("r1", "server loss", 101, metrics={"availability": 99.5}),
            record("r2", "db failover", 200, outcome="failed", message="not recovered",
                   verdicts=[{"check": "time_to_recover", "ok": False, "message": "m"}]),
            record("r3", "db failover", 300, metrics={"time_to_recover": 1.7}),
        ])  # fmt: skip
        every = ledger.records()
        assert [(r.run_id, r.title) for r in every] == [
            ("r1", "db failover"), ("r1", "server loss"), ("r2", "db failover"),
            ("r3", "db failover"),
        ]  # fmt: skip
        assert every[0].metrics == {"time_to_recover": 1.5}
        assert every[2].verdicts[0]["ok"] is False
        assert [r.run_id for r in ledger.records(last_runs=2)] == ["r2", "r3"]
        passing = ledger.records(title="db failover", passing_only=True, exclude_run="r3")
        assert [r.run_id for r in passing] == ["r1"]
        ledger.mark_regression("r3", "db failover", "db failover: time to recover ...")
        assert ledger.records(title="db failover", passing_only=True) == passing
        assert [r.title for r in ledger.records(title_contains="LOSS")] == ["server loss"]


def test_a_record_never_keeps_a_password(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        ledger.append([record("r1", "t", 1, message="could not reach postgresql://u:pw1234@db/x")])
        assert "pw1234" not in ledger.records()[0].message


def test_acknowledgements_are_events(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        before = ledger.now()
        ledger.ack(target(), by="dave", note="paged, looking")
        acks = ledger.events(target(), kind="ack", since=before - 1)
        assert [(a.who, a.detail) for a in acks] == [("dave", "paged, looking")]
        assert ledger.events(target(), kind="ack", since=before + 3600) == []
