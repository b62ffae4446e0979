"""The shipped schedules (schedules/): a systemd service and timer (verified by
systemd-analyze, and the service's ExecStart run for real on the lab), a cron line (its
command run for real on the lab), a GitHub Actions workflow and a Kubernetes CronJob
(checked for what matters, and their game-day commands run against a paused lab: refused,
mapped to success, nothing broken). kubectl needs an API server to validate a manifest and
none runs here, so the CronJob's fields are checked by hand."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gameday.ledger import Ledger
from gameday.plan import load_plan
from gameday.target import load_target
from lab.layout import LabLayout
from tests.conftest import lab_healthy

ROOT = Path(__file__).resolve().parent.parent
SCHEDULES = ROOT / "schedules"
INSTALLED = "/opt/gameday"
PLAN = "lab-smoke"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the schedules give the run, with this test's ledger and journal."""
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    monkeypatch.setenv("GAMEDAY_STATE_DIR", str(tmp_path / "state"))
    return dict(os.environ)


def here(text: str) -> str:
    """A schedule's text as installed in this checkout instead of /opt/gameday."""
    return text.replace(INSTALLED, str(ROOT))


def records(env: dict[str, str]) -> list[object]:
    with Ledger.open(env["GAMEDAY_LEDGER_URL"]) as ledger:
        return list(ledger.records())


# -- systemd -------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SCHEDULES / "systemd" / name).read_text())
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_units_verify(tmp_path: Path) -> None:
    for name in ("gameday@.service", "gameday@.timer"):
        instance = name.replace("@.", f"@{PLAN}.")
        (tmp_path / instance).write_text(here((SCHEDULES / "systemd" / name).read_text()))
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / f"gameday@{PLAN}.service"),
         str(tmp_path / f"gameday@{PLAN}.timer")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "gameday" in line]  # fmt: skip
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def test_the_systemd_service_is_safe_to_stop_and_treats_refusal_as_success() -> None:
    service = unit("gameday@.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["KillMode"] == "mixed"  # SIGTERM to gameday only: it passes it on once
    assert service["SuccessExitStatus"] == "3"
    assert service["ExecStart"] == f"{INSTALLED}/.venv/bin/gameday run %i"
    assert "GAMEDAY_STATE_DIR=/var/lib/gameday" in service["Environment"]
    timer = unit("gameday@.timer")["Timer"]
    assert timer["OnCalendar"] and timer["Persistent"] == "true"


@pytest.mark.lab
@pytest.mark.slow
def test_the_systemd_execstart_runs_the_game_day(
    running_lab: LabLayout, env: dict[str, str], tmp_path: Path
) -> None:
    service = unit("gameday@.service")["Service"]
    command = here(service["ExecStart"]).replace("%i", PLAN).split()
    cwd = here(service["WorkingDirectory"])
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert f"game day {PLAN} on lab: PASSED" in out.stdout
    assert len(records(env)) == 3 and lab_healthy(running_lab)


# -- cron ----------------------------------------------------------------------------------

_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron_line() -> tuple[list[str], str, str]:
    lines = [
        line for line in (SCHEDULES / "cron" / "gameday").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]  # fmt: skip
    assert len(lines) == 1, lines
    parts = lines[0].split(None, 6)
    return parts[:5], parts[5], parts[6]


def test_the_cron_line_is_valid() -> None:
    fields, user, command = cron_line()
    for field, (lo, hi) in zip(fields, _RANGES, strict=True):
        assert _FIELD.match(field), field
        for number in map(int, re.findall(r"\d+", field.split("/")[0])):
            assert lo <= number <= hi, field
    assert user == "root"
    assert "%" not in command  # cron would turn it into a newline
    assert f".venv/bin/gameday run {PLAN}" in command
    load_plan(PLAN, project=ROOT)  # the plan it names exists and is valid


@pytest.mark.lab
@pytest.mark.slow
def test_the_cron_command_runs_the_game_day(
    running_lab: LabLayout, env: dict[str, str], tmp_path: Path
) -> None:
    _, _, command = cron_line()
    log = tmp_path / "gameday.log"
    command = here(command).replace("/var/log/gameday-lab-smoke.log", str(log))
    command = command.replace("/etc/gameday/env", str(tmp_path / "no-env-file"))
    out = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, log.read_text()[-3000:]
    assert f"game day {PLAN} on lab: PASSED" in log.read_text()
    assert len(records(env)) == 3 and lab_healthy(running_lab)


# -- GitHub Actions and Kubernetes ----------------------------------------------------------


def workflow() -> dict[str, object]:
    data = yaml.safe_load((SCHEDULES / "github-actions" / "gameday.yml").read_text())
    assert isinstance(data, dict)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads a bare `on` as true
    return data


def test_the_github_workflow_is_scheduled_and_never_cancels_a_game_day() -> None:
    wf = workflow()
    crons = [s["cron"] for s in wf["on"]["schedule"]]  # type: ignore[index]
    assert len(crons) == 1 and all(_FIELD.match(f) for f in crons[0].split())
    assert wf["concurrency"]["cancel-in-progress"] is False  # type: ignore[index]
    job = wf["jobs"]["gameday"]  # type: ignore[index]
    assert "self-hosted" in job["runs-on"]
    steps = {s.get("name", s.get("uses")): s for s in job["steps"]}
    assert f".venv/bin/gameday run {PLAN}" in steps["game day"]["run"]
    assert steps["reports"]["if"] == "always()"


def cronjob() -> dict[str, object]:
    data = yaml.safe_load((SCHEDULES / "kubernetes" / "cronjob.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_the_kubernetes_cronjob_forbids_overlap_and_lets_faults_heal() -> None:
    cj = cronjob()
    assert (cj["apiVersion"], cj["kind"]) == ("batch/v1", "CronJob")
    spec = cj["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"  # type: ignore[index]
    assert all(_FIELD.match(f) for f in spec["schedule"].split())  # type: ignore[index]
    job = spec["jobTemplate"]["spec"]  # type: ignore[index]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] >= 300
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["GAMEDAY_LEDGER_URL"]["valueFrom"]
    state = env["GAMEDAY_STATE_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in claims[mounts[state]]  # the journal outlives the pod
    assert f"gameday run {PLAN}" in container["command"][-1]
    containerfile = (SCHEDULES / "kubernetes" / "Containerfile").read_text()
    assert "COPY . ." in containerfile and "WORKDIR /gameday" in containerfile


@pytest.mark.lab
@pytest.mark.slow
def test_the_workflow_and_cronjob_commands_treat_a_refusal_as_success(
    running_lab: LabLayout, env: dict[str, str]
) -> None:
    """Run as written, against the lab while it is paused: refused (exit 3) becomes success
    with a line saying so; nothing is injected, nothing recorded."""
    with Ledger.open(env["GAMEDAY_LEDGER_URL"]) as ledger:
        ledger.pause(load_target("lab"), reason="schedule test", by="tests")
    steps = {s.get("name"): s for s in workflow()["jobs"]["gameday"]["steps"]}  # type: ignore[index]
    gha = subprocess.run(["bash", "-c", steps["game day"]["run"]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert gha.returncode == 0, gha.stdout + gha.stderr
    assert "::notice::game day refused" in gha.stdout and "paused by tests" in gha.stderr
    (container,) = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    command = [a.replace("gameday run", f"{sys.executable} -m gameday.cli run")
               for a in container["command"]]  # fmt: skip
    k8s = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert k8s.returncode == 0, k8s.stdout + k8s.stderr
    assert "gameday: refused, not a failure" in k8s.stdout
    assert records(env) == [] and lab_healthy(running_lab)
