"""The generic command fault, run for real on this machine; and `gameday faults` / `heal`."""

from __future__ import annotations

import inspect
import shlex
import stat
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from chaos.base import FaultError, FaultRefused
from chaos.cli import cmd_faults, cmd_heal
from chaos.command import CommandFault
from chaos.journal import Journal
from chaos.registry import fault_class, registered
from gameday.secrets import register_secret
from gameday.target import Target
from tests.conftest import generic_target

pytestmark = pytest.mark.usefixtures("journal_dir", "only_command_fault")


@pytest.fixture
def target() -> Target:
    return generic_target("cmd-test")


def flag_params(flag: Path) -> dict[str, str]:
    q = shlex.quote(str(flag))
    return {"inject": f"touch {q}", "heal": f"rm -f {q}", "check": f"test -f {q}"}


def test_registered_for_every_provider() -> None:
    faults = registered()
    for provider in ("generic", "lab", "docker", "aws"):
        assert faults[("command", provider)] is CommandFault
    assert fault_class("command", "aws") is CommandFault


def test_inject_heal_check_for_real(tmp_path: Path, target: Target) -> None:
    flag = tmp_path / "flag"
    fault = CommandFault(target, flag_params(flag))
    fault.preflight()
    assert not fault.in_effect()
    fault.inject()
    assert flag.exists() and fault.in_effect()
    fault.heal()
    assert not flag.exists() and not fault.in_effect()
    fault.heal()  # idempotent


def test_label_and_describe(tmp_path: Path, target: Target) -> None:
    flag = tmp_path / "flag"
    local = CommandFault(target, flag_params(flag))
    assert local.label == "command touch"
    assert local.describe() == (
        f"run `touch {flag}` on this machine (heal `rm -f {flag}`, check `test -f {flag}`)"
    )
    remote = CommandFault(
        target,
        {"inject": "sudo systemctl stop nginx", "heal": "sudo systemctl start nginx",
         "ssh": "deploy@web1", "label": "nginx stopped on web1"},
    )  # fmt: skip
    assert remote.label == "nginx stopped on web1"
    assert remote.describe() == (
        "run `sudo systemctl stop nginx` on deploy@web1 over SSH "
        "(heal `sudo systemctl start nginx`)"
    )
    assert CommandFault.label == "command"  # the instance's label does not leak to the class


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"heal": "true"}, "'inject' command is required"),
        ({"inject": "true", "heal": " "}, "'heal' command is required"),
        ({"inject": "true", "heal": "true", "chek": "true"}, "unknown parameter 'chek'"),
        ({"inject": "a | b", "heal": "true"}, r"shell syntax \('\|'\).*sh -c"),
        ({"inject": "true", "heal": "x && y"}, r"shell syntax \('&&'\)"),
        ({"inject": "echo $(id)", "heal": "true"}, "shell syntax"),
        ({"inject": "kubectl -n $NAMESPACE delete pod x", "heal": "true"}, "shell syntax"),
        ({"inject": "true", "heal": "'unclosed"}, "No closing quotation"),
        ({"inject": "true", "heal": "true", "ssh": "-oProxyCommand=x"}, "ssh must be user@host"),
        ({"inject": "true", "heal": "true", "timeout_sec": "soon"}, "must be a number"),
        ({"inject": "true", "heal": "true", "timeout_sec": "0"}, "must be > 0"),
    ],
)
def test_bad_params_are_refused_before_anything_runs(
    target: Target, params: dict[str, str], message: str
) -> None:
    with pytest.raises(FaultError, match=message):
        CommandFault(target, params)


def test_shell_syntax_is_fine_inside_sh_c_and_over_ssh(tmp_path: Path, target: Target) -> None:
    flag = tmp_path / "flag"
    fault = CommandFault(target, {"inject": f"sh -c 'true && touch {flag}'", "heal": "true"})
    fault.inject()
    assert flag.exists()
    CommandFault(target, {"inject": "a | b", "heal": "true", "ssh": "u@h"})
    CommandFault(target, {"inject": "sh -c 'test \"$(id -u)\" = 0'", "heal": "bash -c '$X'"})


def test_the_documented_yaml_example_is_valid(target: Target) -> None:
    doc = inspect.cleandoc(CommandFault.__doc__ or "")
    example = textwrap.dedent(doc[doc.index("    faults:") :])
    declared = yaml.safe_load(example)["faults"]
    assert set(declared) == {"nginx-down-web1", "api-scaled-to-zero", "nat-a-disabled"}
    for params in declared.values():
        fault = CommandFault(target, params)
        assert fault.describe().startswith("run `")


def test_a_failing_command_names_command_code_and_last_stderr_line(
    target: Target,
) -> None:
    secret = "pw-in-stderr-1234"
    register_secret(secret)
    fault = CommandFault(
        target,
        {"inject": f"sh -c 'echo first >&2; echo denied for {secret} >&2; exit 7'", "heal": "true"},
    )
    with pytest.raises(FaultError) as err:
        fault.inject()
    message = str(err.value)
    assert message.startswith("command sh: inject `sh -c ")
    assert message.endswith("exited 7: denied for ***")
    assert secret not in message and "\n" not in message


def test_a_missing_program_fails_in_preflight(target: Target) -> None:
    fault = CommandFault(target, {"inject": "no-such-program-xyz --go", "heal": "true"})
    with pytest.raises(FaultRefused, match="'no-such-program-xyz' is not an executable"):
        fault.preflight()
    with pytest.raises(FaultError, match="cannot run `no-such-program-xyz --go`"):
        fault.inject()


def test_heal_runs_only_while_the_check_says_in_effect(tmp_path: Path, target: Target) -> None:
    flag, ran = tmp_path / "flag", tmp_path / "heal-ran"
    # A heal that is not idempotent by itself: it would fail if run twice.
    fault = CommandFault(
        target,
        {**flag_params(flag), "heal": f"sh -c 'test ! -e {ran} && touch {ran} && rm {flag}'"},
    )
    fault.heal()
    assert not ran.exists()  # not in effect: heal did not run
    fault.inject()
    fault.heal()
    fault.heal()
    assert ran.exists() and not flag.exists()


def test_heal_must_be_seen_to_work(tmp_path: Path, target: Target) -> None:
    flag = tmp_path / "flag"
    fault = CommandFault(target, {**flag_params(flag), "heal": "true", "timeout_sec": "0.3"})
    fault.inject()
    with pytest.raises(FaultError, match=r"heal `true` ran but `test -f .*` still says"):
        fault.heal()


def test_inject_must_be_seen_to_take_effect(tmp_path: Path, target: Target) -> None:
    flag = tmp_path / "flag"
    fault = CommandFault(target, {**flag_params(flag), "inject": "true", "timeout_sec": "0.3"})
    with pytest.raises(FaultError, match="does not say the fault is in effect"):
        fault.inject()


def test_a_check_that_cannot_tell_is_an_error(target: Target) -> None:
    fault = CommandFault(target, {"inject": "true", "heal": "true", "check": "sh -c 'exit 127'"})
    with pytest.raises(FaultError, match=r"exited 127.*cannot tell"):
        fault.heal()
    not_in_effect = CommandFault(
        target, {"inject": "true", "heal": "false", "check": "sh -c 'exit 3'"}
    )
    not_in_effect.heal()  # 3: not in effect, so the failing heal does not run


def test_timeout_kills_the_whole_command(tmp_path: Path, target: Target) -> None:
    late = tmp_path / "late"
    fault = CommandFault(
        target,
        {"inject": f"sh -c 'sleep 1; touch {late}'", "heal": "true", "timeout_sec": "0.3"},
    )
    started = time.monotonic()
    with pytest.raises(FaultError, match=r"did not finish within 0.3 s \(killed\)"):
        fault.inject()
    assert time.monotonic() - started < 1.0
    time.sleep(1.3)
    assert not late.exists()  # the shell's child was killed too, not left to finish


def test_a_command_leaving_a_background_process_does_not_hang(
    tmp_path: Path, target: Target
) -> None:
    flag = tmp_path / "flag"
    fault = CommandFault(
        target,
        {"inject": f"sh -c 'sleep 3 & touch {flag}'", "heal": "true", "timeout_sec": "2"},
    )
    started = time.monotonic()
    fault.inject()
    assert time.monotonic() - started < 1.5
    assert flag.exists()


def test_ssh_runs_the_line_through_ssh_in_batch_mode(
    tmp_path: Path, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in `ssh` on PATH: records its arguments, runs the line with a local shell.
    bin_dir, argv_log, flag = tmp_path / "bin", tmp_path / "argv", tmp_path / "flag"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv_log}\nfor last; do :; done\nexec sh -c "$last"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    fault = CommandFault(
        target,
        {"inject": f"true && touch '{flag}'", "heal": f"rm -f '{flag}'", "ssh": "ops@db1"},
    )
    fault.preflight()
    fault.inject()
    assert flag.exists()
    assert argv_log.read_text().splitlines() == [
        "-o", "BatchMode=yes", "ops@db1", "--", f"true && touch '{flag}'",
    ]  # fmt: skip


def test_from_undo_rebuilds_the_same_fault(tmp_path: Path, target: Target) -> None:
    flag = tmp_path / "flag"
    fault = CommandFault(target, flag_params(flag))
    fault.inject()
    again = CommandFault.from_undo(target, fault.undo_params())
    assert again.in_effect()
    again.heal()
    assert not flag.exists()


# -- the CLI functions -----------------------------------------------------------------------


def test_gameday_faults_lists_the_command_fault() -> None:
    listing = cmd_faults(None)
    assert "generic:" in listing and "aws:" in listing
    first = " ".join(listing.split("generic:")[1].split("\n\n")[0].split())
    assert first.startswith(
        "command Run your own commands to inject and heal a fault: runbook scripts, kubectl,"
    )
    assert "anything a shell command can break and repair." in first
    assert "timeout_sec" not in listing  # only the first paragraph

    verbose = cmd_faults("docker", verbose=True)
    # Other docker faults (chaos/docker.py) may be registered too, by earlier tests.
    assert verbose.startswith("docker:\n")
    assert "\n  command\n    Run your own commands" in verbose
    assert "faults:" in verbose and "ssh: deploy@web1.internal" in verbose
    assert "aws:" not in verbose

    assert cmd_faults("mainframe").startswith("no faults for provider 'mainframe' (providers: ")


def test_gameday_heal_with_nothing_pending(target: Target) -> None:
    lines: list[str] = []
    assert cmd_heal(target, force=False, log=lines.append) == 0
    assert lines == ["nothing to heal for target cmd-test (generic http://127.0.0.1:9)"]


def test_gameday_heal_reports_a_refusal_and_exits_1(tmp_path: Path, target: Target) -> None:
    flag = tmp_path / "flag"
    fault = CommandFault(target, flag_params(flag))
    Journal(target).begin(fault, "live")  # this very process: alive
    fault.inject()
    lines: list[str] = []
    assert cmd_heal(target, force=False, log=lines.append) == 1
    assert lines[-1].startswith(
        "gameday: 1 of 1 pending faults of target cmd-test (generic http://127.0.0.1:9) not healed"
    )
    assert "still running" in lines[-1]
    assert flag.exists()
    assert cmd_heal(target, force=True, log=lines.append) == 0
    assert not flag.exists()
