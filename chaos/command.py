"""The generic command fault: your own commands inject, heal and check a fault."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import ClassVar

from chaos.base import Fault, FaultError, FaultRefused
from gameday.secrets import redact
from gameday.target import FAULT_PLACEHOLDERS, Target

DEFAULT_TIMEOUT_SEC = 60.0
CHECK_INTERVAL_SEC = 0.5
_PARAMS = frozenset({"inject", "heal", "check", "ssh", "timeout_sec", "label"})
# Tokens that mean the author expected a shell; run without one they would become arguments.
_SHELL_TOKENS = frozenset({"|", "||", "&", "&&", ";", ";;", ">", ">>", "<", "<<", "2>", "&>"})
# A command line run by one of these is the author's own shell code: not second-guessed.
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
# Exit codes of a check that mean "could not tell", not "not in effect": a heal skipped because
# ssh could not connect (255) or the command was missing (126, 127) would leave the fault.
_CHECK_ERRORS = frozenset({126, 127, 255})


class CommandFault(Fault):
    """Run your own commands to inject and heal a fault: runbook scripts, kubectl, systemctl
    on a bare-metal host over SSH, anything a shell command can break and repair.

    Parameters (strings):
      inject       the command that makes the change
      heal         the command that undoes it; it must put back what inject changed
      check        optional: exits 0 while the fault is in effect, 1 (any other non-zero
                   code but 126, 127 and 255) once it is not. With a check, heal runs only
                   while the fault is in effect and must be seen gone afterwards, inject must
                   be seen in effect afterwards, and an already-broken target is refused
                   before injecting. Without one, heal always runs: make it idempotent.
      ssh          optional "user@host": each command runs there, as
                   `ssh -o BatchMode=yes user@host -- <command>` (keys or an agent, never a
                   password prompt), through the remote user's shell
      timeout_sec  optional, default 60: a command still running then is killed and fails;
                   also how long heal (and inject) wait for the check to agree
      label        optional: the fault's name in reports (default "command <program>")

    Locally there is no shell: the command line is split like a shell would (shlex) and run
    directly, so quoting works and nothing is expanded by surprise. For pipes, `&&`,
    redirections or `$VARIABLES`, say so: `sh -c '...'` (a command line that uses them
    without it is refused). Over SSH the remote shell reads the line as written. A command
    that exits non-zero fails the step with its exit code and the last line it wrote to
    stderr. Commands run in their own process group, so a Ctrl-C meant for gameday does not
    kill a heal half way; gameday heals and then stops.

    Secrets: the parameters are written to the undo journal (so that `gameday heal` can heal
    after a crash), and the journal refuses secrets. Leave passwords in the environment and
    let the shell read them when the command runs: `$PGPASSWORD` inside `sh -c '...'` (not
    `${PGPASSWORD}`, which the target file would substitute when it is loaded).

    A target declares command faults by name: under a capability name (database-failover,
    stop-server...: gameday faults lists them) the shipped scenarios use it in place of the
    provider's own fault; under a name of your own, `When the fault "NAME" is injected` runs it.
    `{server}`, `{zone}`, `{mode}`, `{service}` and `{percent}` in the command lines are
    replaced by what the step names (`When server "web1" is killed`: server web1, mode kill;
    `When the disk of the first server is filled to 90%`: percent 90); other braces are left
    as they are.

        faults:
          nginx-down-web1:                  # bare metal, over SSH
            label: nginx stopped on web1
            ssh: deploy@web1.internal
            inject: sudo systemctl stop nginx
            heal: sudo systemctl start nginx
            check: "! systemctl is-active --quiet nginx"
          api-scaled-to-zero:               # Kubernetes
            inject: kubectl -n shop scale deployment/api --replicas=0
            heal: kubectl -n shop scale deployment/api --replicas=3
            check: >-
              sh -c 'test "$(kubectl -n shop get deployment/api
              -o jsonpath={.spec.replicas})" = 0'
          nat-a-disabled:                   # a runbook script
            inject: ./runbooks/nat.sh disable zone-a
            heal: ./runbooks/nat.sh enable zone-a
            check: ./runbooks/nat.sh is-disabled zone-a
            timeout_sec: "180"
    """

    name: ClassVar[str] = "command"
    label = "command"
    providers: ClassVar[tuple[str, ...]] = ("generic", "lab", "docker", "aws")

    def __init__(self, target: Target, params: dict[str, str]) -> None:
        super().__init__(target, params)
        unknown = sorted(set(params) - _PARAMS)
        if unknown:
            raise FaultError(
                f"command fault: unknown parameter {unknown[0]!r} "
                f"(known: {', '.join(sorted(_PARAMS))})"
            )
        self.inject_command = self._command("inject", required=True)
        self.heal_command = self._command("heal", required=True)
        self.check_command = self._command("check", required=False) or None
        self.ssh = params.get("ssh", "").strip() or None
        if self.ssh is not None and (
            self.ssh.startswith("-") or any(c.isspace() for c in self.ssh)
        ):
            raise FaultError(f"command fault: ssh must be user@host, not {self.ssh!r}")
        self.timeout_sec = _seconds(params.get("timeout_sec", str(DEFAULT_TIMEOUT_SEC)))
        program = os.path.basename(shlex.split(self.inject_command)[0])
        self.label = params.get("label", "").strip() or f"command {program}"

    @classmethod
    def declared(cls, target: Target, name: str, params: Mapping[str, str]) -> CommandFault:
        """The command fault `target` declares under `name`, its placeholders filled from the
        step's `params`. What is journaled is the filled-in command lines, so a heal in
        another process runs exactly what this one would."""
        spec = target.faults[name]

        def fill(command: str) -> str:
            for key in FAULT_PLACEHOLDERS:
                if key in params:
                    command = command.replace("{" + key + "}", params[key])
            return command

        own: dict[str, str] = {
            "inject": fill(spec.inject),
            "heal": fill(spec.heal),
            "timeout_sec": f"{spec.timeout_sec:g}",
            "label": fill(spec.label) if spec.label else _label_of(name, params),
        }
        if spec.check:
            own["check"] = fill(spec.check)
        if spec.ssh:
            own["ssh"] = fill(spec.ssh)
        return cls(target, own)

    def _command(self, key: str, *, required: bool) -> str:
        command = self.params.get(key, "").strip()
        if not command:
            if required:
                raise FaultError(f"command fault: the {key!r} command is required")
            return ""
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise FaultError(f"command fault: {key}: {exc} in `{redact(command)}`") from None
        if not argv:
            raise FaultError(f"command fault: the {key!r} command is empty")
        if not self.params.get("ssh", "").strip() and os.path.basename(argv[0]) not in _SHELLS:
            shelly = next((t for t in argv if _expects_shell(t)), None)
            if shelly is not None:
                raise FaultError(
                    f"command fault: {key} `{redact(command)}` uses shell syntax ({shelly!r}) "
                    "but runs without a shell: write it as sh -c '...'"
                )
        return command

    # -- the Fault protocol -------------------------------------------------------------------

    def describe(self) -> str:
        where = f"on {self.ssh} over SSH" if self.ssh else "on this machine"
        check = f", check `{self.check_command}`" if self.check_command else ""
        return redact(f"run `{self.inject_command}` {where} (heal `{self.heal_command}`{check})")

    def preflight(self) -> None:
        program = "ssh" if self.ssh else shlex.split(self.inject_command)[0]
        if shutil.which(program) is None:
            raise FaultRefused(f"{self.label}: {program!r} is not an executable on this machine")
        if self.check_command and self._check():
            raise FaultRefused(
                f"{self.label}: `{redact(self.check_command)}` says the fault is already in "
                "effect before injecting (a leftover? `gameday heal` heals what a run left)"
            )

    def inject(self) -> None:
        self._run_ok(self.inject_command, "inject")
        if self.check_command and not self._wait_for_check(True):
            raise FaultError(
                f"{self.label}: inject `{redact(self.inject_command)}` succeeded but "
                f"`{redact(self.check_command)}` does not say the fault is in effect after "
                f"{self.timeout_sec:g} s"
            )

    def heal(self) -> None:
        if self.check_command and not self._check():
            return  # not in effect: nothing to undo, and heal may not be idempotent
        self._run_ok(self.heal_command, "heal")
        if self.check_command and not self._wait_for_check(False):
            raise FaultError(
                f"{self.label}: heal `{redact(self.heal_command)}` ran but "
                f"`{redact(self.check_command)}` still says the fault is in effect after "
                f"{self.timeout_sec:g} s"
            )

    def in_effect(self) -> bool:
        """The check's answer; without a check it cannot be known, so True (heal runs)."""
        return self._check() if self.check_command else True

    # -- running commands ---------------------------------------------------------------------

    def _argv(self, command: str) -> list[str]:
        if self.ssh:
            # One argument: ssh hands the line to the remote shell, quoting intact.
            return ["ssh", "-o", "BatchMode=yes", self.ssh, "--", command]
        return shlex.split(command)

    def _run(self, command: str) -> tuple[int, str]:
        """Run one command; (exit code, stderr). Killed with its process group on timeout or
        when interrupted, so an inject cut short cannot finish after its heal.

        stderr goes to a file, not a pipe: a command that leaves something running in the
        background (a CPU hog) keeps the pipe open, and waiting for its end would hang."""
        shown = redact(command)
        with tempfile.TemporaryFile() as stderr:
            try:
                proc = subprocess.Popen(
                    self._argv(command),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            except OSError as exc:
                raise FaultError(f"{self.label}: cannot run `{shown}`: {exc.strerror}") from None
            try:
                code = proc.wait(timeout=self.timeout_sec)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise FaultError(
                    f"{self.label}: `{shown}` did not finish within {self.timeout_sec:g} s (killed)"
                ) from None
            except BaseException:
                _kill(proc)
                raise
            stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - 4096))
            return code, stderr.read().decode(errors="replace")

    def _run_ok(self, command: str, what: str) -> None:
        code, err = self._run(command)
        if code != 0:
            raise FaultError(f"{self.label}: {what} `{redact(command)}` {_failed(code, err)}")

    def _check(self) -> bool:
        assert self.check_command is not None
        code, err = self._run(self.check_command)
        if code == 0:
            return True
        if code < 0 or code in _CHECK_ERRORS:
            raise FaultError(
                f"{self.label}: check `{redact(self.check_command)}` {_failed(code, err)}: "
                "cannot tell whether the fault is in effect"
            )
        return False

    def _wait_for_check(self, in_effect: bool) -> bool:
        deadline = time.monotonic() + self.timeout_sec
        while self._check() != in_effect:
            if time.monotonic() >= deadline:
                return False
            time.sleep(CHECK_INTERVAL_SEC)
        return True


def _label_of(name: str, params: Mapping[str, str]) -> str:
    subject = params.get("server") or params.get("zone") or params.get("service")
    return f"{name} {subject}" if subject else name


def _expects_shell(token: str) -> bool:
    return token in _SHELL_TOKENS or token.startswith("$") or "$(" in token or "`" in token


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise FaultError(f"command fault: timeout_sec must be a number, not {value!r}") from None
    if not seconds > 0 or seconds == float("inf"):
        raise FaultError(f"command fault: timeout_sec must be > 0, not {value!r}")
    return seconds


def _failed(code: int, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = f": {redact(lines[-1])[:300]}" if lines else " (nothing on stderr)"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}{said}"
    return f"exited {code}{said}"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


FAULTS: tuple[type[Fault], ...] = (CommandFault,)
