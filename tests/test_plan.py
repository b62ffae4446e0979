"""Game-day plans: what they select, when they may run, and bad input refused in one line
(exit 2, nothing injected) by `gameday run`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gameday.plan import PlanError, load_plan, window_problem
from tests.gameday_project import Project, running_project

ROOT = Path(__file__).resolve().parent.parent
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with running_project(tmp_path / "proj") as project:
        yield project


def plan_in(project: Project, text: str, name: str = "p") -> str:
    project.write(f"gamedays/{name}.yaml", text)
    return name


# -- selection -------------------------------------------------------------------------------


def test_the_shipped_lab_plan_selects_what_pytest_collects() -> None:
    loaded = load_plan("lab-smoke", project=ROOT)
    assert loaded.destructive
    titles = [s.title for s in loaded.scenarios]
    assert "A crashed backend process is restarted without users noticing much" in titles
    # The node ids handed to pytest are the ones pytest-bdd generates.
    ids = [s.nodeid for s in loaded.scenarios]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:]
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert collected == ids


def test_tags_and_titles_narrow_the_selection(project: Project) -> None:
    name = plan_in(project, "target: targets/fake.yaml\nfeatures: [features]\ntags: [acceptance]\n")
    loaded = load_plan(name, project=project.folder)
    assert {s.feature for s in loaded.scenarios} == {"features/ok.feature"}
    assert not loaded.destructive
    name = plan_in(
        project,
        "target: targets/fake.yaml\nfeatures: [features/ok.feature]\n"
        "scenarios: [The entrypoint answers its health check]\n",
    )
    loaded = load_plan(name, project=project.folder)
    assert loaded.pytest_args() == [
        "features/ok.feature::test_the_entrypoint_answers_its_health_check",
        "--target", "targets/fake.yaml",
    ]  # fmt: skip


def test_notification_urls_are_secrets(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from gameday.secrets import redact

    monkeypatch.setenv("HOOK", "https://hooks.slack.com/services/T000/B000/XyZsecret")
    name = plan_in(
        project,
        "target: targets/fake.yaml\nfeatures: [features/ok.feature]\n"
        "notify: [{kind: slack, url: '${HOOK}'}]\n",
    )
    load_plan(name, project=project.folder)
    assert "XyZsecret" not in redact(
        "posting to https://hooks.slack.com/services/T000/B000/XyZsecret"
    )


# -- windows ---------------------------------------------------------------------------------

WINDOWED = """\
target: targets/fake.yaml
features: [features/ok.feature]
time_zone: Europe/Berlin
windows:
  - {days: mon-fri, start: "02:00", end: "05:00"}
  - {days: [sat], start: "22:00", end: "01:00"}
blackouts:
  - 2025-12-24
  - {from: 2025-12-28, to: 2026-01-02, reason: holidays}
"""


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        (datetime(2025, 12, 2, 2, 30, tzinfo=BERLIN), None),  # a Tuesday, in the window
        (datetime(2025, 12, 2, 5, 0, tzinfo=BERLIN), "outside the plan's windows; the next "
         "window opens Wed 2025-12-03 02:00 Europe/Berlin"),
        (datetime(2025, 12, 6, 23, 30, tzinfo=BERLIN), None),  # Saturday night
        (datetime(2025, 12, 7, 0, 30, tzinfo=BERLIN), None),  # ... past midnight
        (datetime(2025, 12, 7, 1, 30, tzinfo=BERLIN), "outside"),
        (datetime(2025, 12, 24, 2, 30, tzinfo=BERLIN), "today is a blackout date 2025-12-24"),
        (datetime(2025, 12, 30, 2, 30, tzinfo=BERLIN), "blackout 2025-12-28 to 2026-01-02 "
         "(holidays)"),
        (datetime(2025, 12, 2, 1, 30, tzinfo=ZoneInfo("UTC")), None),  # 02:30 in Berlin
    ],
)  # fmt: skip
def test_windows_and_blackouts(project: Project, when: datetime, problem: str | None) -> None:
    loaded = load_plan(plan_in(project, WINDOWED), project=project.folder)
    found = window_problem(loaded.plan, when)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_outside_its_window_a_run_is_refused_with_exit_3(project: Project) -> None:
    name = plan_in(
        project,
        "target: targets/fake.yaml\nfeatures: [features/hold.feature]\n"
        "blackouts: [{from: 2000-01-01, to: 2999-12-31, reason: change freeze}]\n",
    )
    out = project.gameday("run", name)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "change freeze" in out.stderr and "--ignore-window" in out.stderr
    assert not project.marker.exists()


# -- bad input: one line, exit 2, nothing injected --------------------------------------------

BASE = "target: targets/fake.yaml\nfeatures: [features/hold.feature]\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("target: targets/nope.yaml\nfeatures: [features/hold.feature]\n",
         "gamedays/p.yaml: target: targets/nope.yaml: no such target file"),
        ("target: targets/fake.yaml\nfeatures: [features/nope.feature]\n",
         "gamedays/p.yaml: features[0]: 'features/nope.feature': no such feature file"),
        (BASE + "tags: [resilence]\n",
         "gamedays/p.yaml: tags[0]: 'resilence' is not a registered marker (known: acceptance"),
        (BASE + "time_zone: Mars/Olympus_Mons\n",
         "gamedays/p.yaml: time_zone: 'Mars/Olympus_Mons' is not a time zone"),
        (BASE + "windows: [{days: [mon], time_zone: Europe/Atlantis}]\n",
         "gamedays/p.yaml: windows[0].time_zone: 'Europe/Atlantis' is not a time zone"),
        (BASE + "windows: [{days: [funday]}]\n",
         "gamedays/p.yaml: windows[0].days: 'funday' is not a day"),
        (BASE + "windows: [{start: '25:00'}]\n",
         "gamedays/p.yaml: windows[0].start: '25:00' is not a time of day"),
        (BASE + "scenarios: [No such scenario]\n",
         "gamedays/p.yaml: scenarios[0]: no scenario titled 'No such scenario'"),
        (BASE + "regression: {tolerances: {speed: '10%'}}\n",
         "gamedays/p.yaml: regression.tolerances: 'speed' is not a number gameday measures"),
        (BASE + "ledger: postgresql://gd:hunter2@127.0.0.1:18399/ledger\n",
         "gamedays/p.yaml: ledger: postgresql://gd:***@127.0.0.1:18399/ledger: cannot connect"),
        (BASE + "notify: [{kind: pager, url: 'http://x'}]\n",
         "gamedays/p.yaml: notify[0].kind: 'pager' is not one of 'webhook' or 'slack'"),
        (BASE + "colour: blue\n", "gamedays/p.yaml: colour: unknown key"),
        ("target: targets/fake.yaml\n", "gamedays/p.yaml: features: required but missing"),
    ],
)  # fmt: skip
def test_bad_plans_are_one_line_exit_2_nothing_injected(
    project: Project, text: str, line: str
) -> None:
    out = project.gameday("run", plan_in(project, text))
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gameday: {line}"), out.stderr
    assert "Traceback" not in out.stderr and "hunter2" not in out.stderr + out.stdout
    assert not project.marker.exists()
    assert not (project.folder / "reports").exists()


def test_an_unreachable_ledger_in_the_environment_is_exit_2(project: Project) -> None:
    out = project.gameday(
        "run", "hold", GAMEDAY_LEDGER_URL="postgresql://gd:pw9876@127.0.0.1:18399/l"
    )
    assert out.returncode == 2
    assert out.stderr.startswith("gameday: GAMEDAY_LEDGER_URL: postgresql://gd:***@127.0.0.1")
    assert "pw9876" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not project.marker.exists()


def test_a_missing_plan_names_the_known_ones(project: Project) -> None:
    out = project.gameday("run", "nightly")
    assert out.returncode == 2
    assert out.stderr.strip() == "gameday: gamedays/nightly.yaml: no such plan file (plans in " \
        "gamedays/: hold)"  # fmt: skip


def test_destructive_scenarios_need_consent(project: Project) -> None:
    project.write(
        "targets/careful.yaml",
        (project.folder / "targets/fake.yaml")
        .read_text()
        .replace("allow_destructive: true", "allow_destructive: false"),
    )
    name = plan_in(project, "target: targets/careful.yaml\nfeatures: [features/hold.feature]\n")
    with pytest.raises(PlanError, match="allow_destructive: the plan selects destructive"):
        load_plan(name, project=project.folder)
    plan_in(project, "allow_destructive: true\n" + (project.folder / f"gamedays/{name}.yaml")
            .read_text(), name)  # fmt: skip
    assert load_plan(name, project=project.folder).pytest_args()[-1] == "--allow-destructive"


def test_check_says_what_would_run(project: Project) -> None:
    out = project.gameday("run", "hold", "--check")
    assert out.returncode == 0, out.stderr
    assert "gamedays/hold.yaml: ok: plan hold on target fake" in out.stdout
    assert "scenario: A marker fault held for a while (destructive)" in out.stdout
    assert not project.marker.exists()
