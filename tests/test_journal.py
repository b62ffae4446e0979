"""The undo journal: on disk before the fault acts, readable after a crash, no secrets."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from chaos.base import FaultError
from chaos.command import CommandFault
from chaos.journal import Journal, heal_pending, pid_alive, state_dir
from gameday.secrets import register_secret
from gameday.target import Target
from tests.conftest import generic_target

pytestmark = pytest.mark.usefixtures("journal_dir", "only_command_fault")


def make_target(name: str = "journal-test") -> Target:
    return generic_target(name)


def flag_fault(target: Target, flag: Path) -> CommandFault:
    q = shlex.quote(str(flag))
    return CommandFault(
        target, {"inject": f"touch {q}", "heal": f"rm -f {q}", "check": f"test -f {q}"}
    )


def test_begin_update_done_round_trip(tmp_path: Path, journal_dir: Path) -> None:
    target = make_target()
    journal = Journal(target)
    fault = flag_fault(target, tmp_path / "flag")

    entry = journal.begin(fault, "run-1")

    # On disk when begin returns: another reader (another process) sees the record.
    assert journal.path == journal_dir / "journal-journal-test.jsonl"
    with open(journal.path) as f:
        records = [json.loads(line) for line in f]
    assert records == [
        {
            "id": entry.id,
            "at": entry.at,
            "run_id": "run-1",
            "pid": os.getpid(),
            "fault": "command",
            "provider": "generic",
            "target_source": "tests/inline",
            "params": fault.undo_params(),
            "state": "injecting",
        }
    ]
    assert journal.pending() == [entry]

    learnt = {**fault.undo_params(), "label": "learnt during inject"}
    entry2 = journal.update(entry, learnt)
    assert entry2.params == learnt
    [pending] = Journal(target).pending()
    assert pending.id == entry.id and pending.params == learnt

    journal.done(entry2)
    assert Journal(target).pending() == []
    assert json.loads(journal.path.read_text().splitlines()[-1])["state"] == "healed"
    assert oct(journal.path.stat().st_mode & 0o777) == oct(0o600)


def test_pending_keeps_only_unhealed_in_order(tmp_path: Path) -> None:
    target = make_target()
    journal = Journal(target)
    a = journal.begin(flag_fault(target, tmp_path / "a"), "run")
    b = journal.begin(flag_fault(target, tmp_path / "b"), "run")
    c = journal.begin(flag_fault(target, tmp_path / "c"), "run")
    journal.done(b)
    assert [e.id for e in journal.pending()] == [a.id, c.id]


def test_truncated_last_line_is_ignored_and_the_next_record_survives(tmp_path: Path) -> None:
    target = make_target()
    journal = Journal(target)
    a = journal.begin(flag_fault(target, tmp_path / "a"), "run")
    b = journal.begin(flag_fault(target, tmp_path / "b"), "run")
    # The writer died in the middle of marking `a` healed.
    with open(journal.path, "ab") as f:
        f.write(json.dumps({"id": a.id, "state": "healed"}).encode()[:15])

    assert [e.id for e in journal.pending()] == [a.id, b.id]
    assert journal.damaged == []

    # The next record is not glued to the broken one.
    c = journal.begin(flag_fault(target, tmp_path / "c"), "run")
    journal.done(a)
    assert [e.id for e in journal.pending()] == [b.id, c.id]
    assert journal.damaged == [3]  # the broken record, now ended, is reported


def test_secrets_are_never_written(tmp_path: Path) -> None:
    target = make_target()
    journal = Journal(target)
    secret = "s3cr3t-journal-pw"
    register_secret(secret)  # as a target does for ${DB_PASSWORD}
    fault = CommandFault(
        target,
        {"inject": f"sh -c 'echo {secret}'", "heal": "true", "label": "leaks"},
    )
    with pytest.raises(FaultError, match="secret in 'inject'"):
        journal.begin(fault, "run")
    url_fault = CommandFault(
        target, {"inject": "psql postgresql://app:hunter22@db/app", "heal": "true"}
    )
    with pytest.raises(FaultError, match="never stores secrets"):
        journal.begin(url_fault, "run")

    ok = journal.begin(flag_fault(target, tmp_path / "flag"), "run")
    with pytest.raises(FaultError, match="secret"):
        journal.update(ok, {"password_url": "redis://:hunter22@cache:6379"})

    text = journal.path.read_text()
    assert secret not in text and "hunter22" not in text
    assert [e.id for e in journal.pending()] == [ok.id]


def test_state_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GAMEDAY_STATE_DIR", str(tmp_path / "explicit"))
    assert state_dir() == tmp_path / "explicit"
    monkeypatch.delenv("GAMEDAY_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "gameday"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "gameday"


def test_target_name_cannot_escape_the_state_dir(journal_dir: Path) -> None:
    journal = Journal(make_target("../../etc/x y"))
    assert journal.path.parent == journal_dir
    assert journal.path.name == "journal-_.._etc_x_y.jsonl"


def test_damaged_line_in_the_middle_is_skipped_and_reported(tmp_path: Path) -> None:
    target = make_target()
    journal = Journal(target)
    a = journal.begin(flag_fault(target, tmp_path / "a"), "run")
    with open(journal.path, "ab") as f:
        f.write(b"not json at all\n")
    b = journal.begin(flag_fault(target, tmp_path / "b"), "run")
    assert [e.id for e in journal.pending()] == [a.id, b.id]
    assert journal.damaged == [2]


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(2**22 + 12345)  # above pid_max's default: never a process


def test_heal_pending_heals_and_marks_done(tmp_path: Path) -> None:
    target = make_target()
    journal = Journal(target)
    flag = tmp_path / "flag"
    fault = flag_fault(target, flag)
    entry = journal.begin(fault, "dead-run")
    fault.inject()
    _rewrite_pid(journal, entry.id, 2**22 + 12345)  # a run that is gone
    lines: list[str] = []

    healed = heal_pending(target, log=lines.append)

    assert healed == [fault.describe()]
    assert not flag.exists()
    assert journal.pending() == []
    assert any(line.startswith("healed: ") for line in lines)


def test_heal_pending_refuses_a_live_run_unless_forced(tmp_path: Path) -> None:
    target = make_target()
    journal = Journal(target)
    flag = tmp_path / "flag"
    fault = flag_fault(target, flag)
    journal.begin(fault, "live-run")  # pid: this process, which is alive
    fault.inject()

    with pytest.raises(FaultError, match="still running") as err:
        heal_pending(target, log=lambda _: None)
    assert "\n" not in str(err.value)
    assert flag.exists() and len(journal.pending()) == 1

    assert heal_pending(target, log=lambda _: None, force=True) == [fault.describe()]
    assert not flag.exists() and journal.pending() == []


def test_heal_pending_keeps_going_after_a_failure(tmp_path: Path) -> None:
    target = make_target()
    journal = Journal(target)
    good_flag, bad_flag = tmp_path / "good", tmp_path / "bad"
    bad = CommandFault(
        target,
        {
            "inject": f"touch {bad_flag}",
            "heal": "sh -c 'echo disk on fire >&2; exit 4'",
            "check": f"test -f {bad_flag}",
        },
    )
    good = flag_fault(target, good_flag)
    for fault in (bad, good):
        journal.begin(fault, "run")
        fault.inject()
    lines: list[str] = []

    with pytest.raises(FaultError, match=r"1 of 2 pending faults .* exited 4: disk on fire"):
        heal_pending(target, log=lines.append, force=True)

    assert not good_flag.exists() and bad_flag.exists()
    [still] = journal.pending()
    assert still.params["inject"] == bad.params["inject"]
    assert any("heal failed" in line and "disk on fire" in line for line in lines)


def _rewrite_pid(journal: Journal, entry_id: str, pid: int) -> None:
    lines = []
    for line in journal.path.read_text().splitlines():
        record = json.loads(line)
        if record["id"] == entry_id and "pid" in record:
            record["pid"] = pid
        lines.append(json.dumps(record))
    journal.path.write_text("\n".join(lines) + "\n")
