"""The undo journal: on disk before the fault acts, readable after a crash, no secrets."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from chaos.base import FaultError
from chaos.cli import cmd_heal
from chaos.command import CommandFault
from chaos.journal import Journal, pid_alive, state_dir
from chaos.runner import heal_pending
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
    assert journal.path.parent == journal_dir
    assert re.fullmatch(r"journal-journal-test-[0-9a-f]{12}\.jsonl", journal.path.name)
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
            "identity": "generic http://127.0.0.1:9",
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
    assert re.fullmatch(r"journal-_\.\._etc_x_y-[0-9a-f]{12}\.jsonl", journal.path.name)


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


# -- one deployment's journal is never healed on another -------------------------------------


def other_deployment(name: str = "journal-test") -> Target:
    # Same name, another entrypoint: another deployment (a lab on another port block...).
    raw = {"name": name, "provider": "generic", "entrypoint": {"url": "http://127.0.0.1:10"}}
    return Target.model_validate(raw).model_copy(update={"source": "tests/inline-other"})


def test_a_fault_is_pending_only_for_the_deployment_it_was_made_on(tmp_path: Path) -> None:
    made_on, other = make_target(), other_deployment()
    flag = tmp_path / "flag"
    Journal(made_on).begin(flag_fault(made_on, flag), "run-1")
    assert len(Journal(made_on).pending()) == 1
    # The other deployment's heal does not see it, and says where it is instead.
    assert Journal(other).pending() == []
    assert Journal(other).elsewhere() == {"generic http://127.0.0.1:9": 1}
    lines: list[str] = []
    assert cmd_heal(other, force=True, log=lines.append) == 0
    assert lines == [
        "nothing to heal for target journal-test (generic http://127.0.0.1:10)",
        "note: 1 fault(s) of another deployment named journal-test are pending: "
        "generic http://127.0.0.1:9 (heal them with a target for that deployment)",
    ]


def test_an_entry_of_another_deployment_is_refused_even_with_force(tmp_path: Path) -> None:
    target, other = make_target(), other_deployment()
    flag = tmp_path / "flag"
    flag.touch()
    journal = Journal(target)
    entry = journal.begin(flag_fault(target, flag), "run-1")
    # A record naming another deployment, in this deployment's file (copied by hand, say).
    forged = json.loads(journal.path.read_text())
    forged.update(id="f" * 32, identity=other.identity(), pid=999_999_999)
    with open(journal.path, "a") as f:
        f.write(json.dumps(forged) + "\n")
    journal.done(entry)
    with pytest.raises(FaultError, match=r"made on generic http://127\.0\.0\.1:10, not on generic"):
        heal_pending(target, log=lambda _: None, force=True)
    assert flag.exists(), "the heal of another deployment's fault must not run"


def test_a_journal_from_before_identities_heals_only_when_forced(
    tmp_path: Path, journal_dir: Path
) -> None:
    target = make_target()
    flag = tmp_path / "flag"
    flag.touch()
    legacy = journal_dir / "journal-journal-test.jsonl"
    journal_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "id": "a" * 32, "at": "2026-01-01T00:00:00+00:00", "run_id": "old", "pid": 999_999_999,
        "fault": "command", "provider": "generic", "target_source": "targets/x.yaml",
        "params": flag_fault(target, flag).undo_params(), "state": "injecting",
    }  # fmt: skip
    legacy.write_text(json.dumps(record) + "\n")
    with pytest.raises(FaultError, match="before journals named their deployment"):
        heal_pending(target, log=lambda _: None)
    assert flag.exists()
    assert heal_pending(target, log=lambda _: None, force=True)
    assert not flag.exists()
    assert Journal(target).pending() == [], "the heal is recorded where the entry was"
