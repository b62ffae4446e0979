"""Game-day plans: one YAML file in `gamedays/` per scheduled game day.

A plan names the target, the features (and optionally the scenarios or tags) to run, whether
it may break things, the windows it may run in (days, hours, time zone) and its blackout
dates, the tolerances that make a run a regression against the runs before it, who is told
at the start and the end, and optionally a drill (a fault left for people to handle).

Loading checks everything a run would trip over, before anything is touched, and fails with
one line naming the file, the field and the value (`PlanError`, exit code 2): a missing
target or feature file, a scenario or tag that does not exist, a time zone that does not
exist, a tolerance for a number gameday does not measure. Values may use `${VAR}` like
target files; notification URLs are treated as secrets (Slack's carry a token).
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from gameday.secrets import register_secret
from gameday.target import (
    HttpUrl,
    Target,
    TargetError,
    UrlPath,
    _first_error,
    _interpolate,
    _Model,
    _shown,
    load_target,
)
from gameday.trend import DEFAULT_TOLERANCES, METRICS, Tolerance

PLANS_DIR = Path("gamedays")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PlanError(Exception):
    """A plan cannot be used. `str()` is the one line to show the user."""


# -- fields ------------------------------------------------------------------------------------


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone (an IANA name such as Europe/Berlin or UTC)"
        ) from None
    return value


TimeZone = Annotated[str, AfterValidator(_zone)]
_HHMM = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")


def _clock_time(value: str) -> str:
    match = _HHMM.match(str(value))
    if not match or (match[1] == "24" and match[2] != "00"):
        raise ValueError(f"{value!r} is not a time of day HH:MM (00:00 to 24:00)")
    return str(value)


ClockTime = Annotated[str, AfterValidator(_clock_time)]


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


class Window(_Model):
    """When the game day may start: on these days, from `start` to `end` (local time in
    `time_zone`, else the plan's). An `end` before `start` runs past midnight."""

    days: list[str] = Field(default_factory=lambda: list(DAYS))
    start: ClockTime = "00:00"
    end: ClockTime = "24:00"
    time_zone: TimeZone | None = None

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise ValueError("a list of days (mon, tue, ... or a range such as mon-fri)")
        out: list[str] = []
        for item in items:
            text = str(item).strip().lower()[:7]
            first, _, last = text.partition("-")
            first, last = first[:3], (last or first)[:3]
            if first not in DAYS or last not in DAYS:
                raise ValueError(f"{item!r} is not a day (mon, tue, ... sun) or a range (mon-fri)")
            i, j = DAYS.index(first), DAYS.index(last)
            span = range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)]
            out += [DAYS[k] for k in span if DAYS[k] not in out]
        return out

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: the window is empty")
        return self


class Blackout(_Model):
    """Dates (in the plan's time zone) on which the game day never runs."""

    from_: date = Field(alias="from")
    to: date
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Blackout:
        if self.to < self.from_:
            raise ValueError(f"to ({self.to}) is before from ({self.from_})")
        return self


class Receiver(_Model):
    """Where the start and the end of a run are announced."""

    kind: Literal["webhook", "slack"]
    url: HttpUrl
    name: str | None = None
    # Extra headers for a generic webhook (e.g. an Authorization header, from ${VAR}).
    headers: dict[str, str] = Field(default_factory=dict)


class RegressionRules(_Model):
    """A passing run still fails when a number is worse than the median of the last
    `last_runs` passing runs of its scenario by more than the tolerance."""

    last_runs: int = Field(default=10, ge=1, le=1000)
    min_runs: int = Field(default=3, ge=1, le=1000)
    tolerances: dict[str, str | float] = Field(default_factory=dict)

    @field_validator("tolerances")
    @classmethod
    def _known(cls, value: dict[str, str | float]) -> dict[str, str | float]:
        for metric, spec in value.items():
            if metric not in METRICS:
                known = ", ".join(METRICS)
                raise ValueError(f"{metric!r} is not a number gameday measures ({known})")
            try:
                Tolerance.parse(spec)
            except ValueError as exc:
                raise ValueError(f"{metric}: {exc}") from None
        return value

    def judged(self) -> dict[str, Tolerance]:
        """The tolerances in force: the defaults, overridden by the plan's."""
        out = dict(DEFAULT_TOLERANCES)
        out.update({m: Tolerance.parse(spec) for m, spec in self.tolerances.items()})
        return out


class DeploymentRevision(_Model):
    """How to read the deployed revision, for the ledger: an HTTP GET (the body, or one
    field of its JSON) or a command's first line of output."""

    url: HttpUrl | None = None
    json_field: str | None = None
    command: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> DeploymentRevision:
        if (self.url is None) == (self.command is None):
            raise ValueError("give exactly one of url or command")
        return self


class Drill(_Model):
    """`gameday run PLAN --drill`: inject `fault` and leave it to people; measure how long
    they take to notice (`gameday ack`, or the first alert), to get users served again, and
    to bring the deployment back to its steady state; heal at `deadline_sec` if they have
    not."""

    fault: str = Field(min_length=1)
    params: dict[str, str] = Field(default_factory=dict)
    deadline_sec: float = Field(default=900, gt=0, le=86400)
    # The probe whose recovery is "mitigated": GET this path through the entrypoint.
    probe_path: UrlPath | None = None
    probe_rate: float = Field(default=5, gt=0, le=50)
    # Alertmanager's API (v2): the first alert carrying every one of `alert_labels` that
    # starts after the fault counts as detection, like an acknowledgement.
    alertmanager_url: HttpUrl | None = None
    alert_labels: dict[str, str] = Field(default_factory=dict)


class Plan(_Model):
    name: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    description: str = ""
    target: str = Field(min_length=1)
    features: list[str] = Field(min_length=1)
    # Scenario titles to run; none: every scenario of the features (filtered by tags).
    scenarios: list[str] = Field(default_factory=list)
    # Run only the scenarios carrying at least one of these tags (registered markers).
    tags: list[str] = Field(default_factory=list)
    allow_destructive: bool = False
    time_zone: TimeZone = "UTC"
    windows: list[Window] = Field(default_factory=list)
    blackouts: list[date | Blackout] = Field(default_factory=list)
    regression: RegressionRules = RegressionRules()
    notify: list[Receiver] = Field(default_factory=list)
    ledger: str | None = Field(default=None, min_length=1)
    lease_ttl_sec: float = Field(default=60, ge=2, le=3600)
    # The whole run is stopped (its faults heal) after this long.
    timeout_sec: float = Field(default=3600, gt=0, le=86400)
    deployment_revision: DeploymentRevision | None = None
    drill: Drill | None = None

    source: str = Field(default="", exclude=True)


# -- what a plan selects -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlanScenario:
    feature: str  # as the plan names it (relative to the project folder, or absolute)
    title: str
    tags: frozenset[str]
    nodeid: str  # what pytest calls it: <feature>::test_<name>

    @property
    def destructive(self) -> bool:
        return "destructive" in self.tags


@dataclass(frozen=True)
class LoadedPlan:
    plan: Plan
    target: Target
    scenarios: tuple[PlanScenario, ...]

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def source(self) -> str:
        return self.plan.source

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.scenarios)

    def pytest_args(self) -> list[str]:
        """What `gameday run` hands to pytest: the selected scenarios, the target, consent."""
        args = [s.nodeid for s in self.scenarios] + ["--target", self.plan.target]
        if self.plan.allow_destructive:
            args.append("--allow-destructive")
        return args


def resolve_plan_path(name_or_path: str, project: Path) -> Path:
    """`nightly` means gamedays/nightly.yaml; anything with a slash or a suffix is a path."""
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        return path if path.is_absolute() else project / path
    return project / PLANS_DIR / f"{name_or_path}.yaml"


def load_plan(name_or_path: str, *, project: Path | None = None) -> LoadedPlan:
    """Read, validate and resolve a plan; PlanError (one line) for anything wrong."""
    project = project or Path.cwd()
    path = resolve_plan_path(name_or_path, project)
    shown = _shown(path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (project / PLANS_DIR).glob("*.yaml"))) or "none"
        raise PlanError(f"{shown}: no such plan file (plans in {PLANS_DIR}/: {known})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanError(f"{shown}: {where}invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"{shown}: a plan is a mapping of fields, not {type(raw).__name__}")
    try:
        raw = _interpolate(raw, shown, ())
    except TargetError as exc:
        raise PlanError(str(exc)) from None
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        raise PlanError(f"{shown}: {_first_error(exc)}") from None
    plan = plan.model_copy(update={"source": shown, "name": plan.name or path.stem})
    for receiver in plan.notify:
        register_secret(receiver.url)
        for value in receiver.headers.values():
            register_secret(value)
    return _resolve(plan, project)


def _fail(plan: Plan, where: str, problem: str) -> PlanError:
    return PlanError(f"{plan.source}: {where}: {problem}")


def _resolve(plan: Plan, project: Path) -> LoadedPlan:
    name = plan.target
    if ("/" in name or name.endswith((".yaml", ".yml"))) and not Path(name).is_absolute():
        name = str(project / name)  # the project folder's, wherever gameday runs from
    try:
        target = load_target(name)
    except TargetError as exc:
        raise _fail(plan, "target", str(exc)) from None
    markers = registered_markers(project)
    for i, tag in enumerate(plan.tags):
        if tag not in markers:
            known = ", ".join(sorted(markers))
            raise _fail(plan, f"tags[{i}]", f"{tag!r} is not a registered marker (known: {known})")
    found: list[PlanScenario] = []
    for i, feature in enumerate(plan.features):
        found += _scenarios_of(plan, f"features[{i}]", feature, project)
    titles = {s.title for s in found}
    for i, title in enumerate(plan.scenarios):
        if title not in titles:
            listing = "; ".join(sorted(titles))
            raise _fail(
                plan, f"scenarios[{i}]", f"no scenario titled {title!r} in the plan's features "
                f"(scenarios: {listing})",
            )  # fmt: skip
    selected = [
        s
        for s in found
        if (not plan.scenarios or s.title in plan.scenarios)
        and (not plan.tags or s.tags & set(plan.tags))
    ]
    if not selected:
        raise _fail(plan, "tags", f"no scenario of the plan's features carries {plan.tags}")
    loaded = LoadedPlan(plan, target, tuple(selected))
    if loaded.destructive and not (plan.allow_destructive or target.allow_destructive):
        raise _fail(
            plan, "allow_destructive", "the plan selects destructive scenarios but neither it "
            f"nor target {target.name} ({target.source}) allows them: set allow_destructive: "
            "true in the plan",
        )  # fmt: skip
    if plan.drill is not None and not (plan.allow_destructive or target.allow_destructive):
        raise _fail(plan, "drill", "a drill injects a fault: set allow_destructive: true")
    return loaded


def registered_markers(project: Path) -> set[str]:
    """The markers pytest.ini registers (tags must be one of them: --strict-markers)."""
    ini = project / "pytest.ini"
    if not ini.exists():
        ini = Path(__file__).resolve().parent.parent / "pytest.ini"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    lines = parser.get("pytest", "markers", fallback="").splitlines()
    return {line.split(":")[0].split("(")[0].strip() for line in lines if line.strip()}


def _scenarios_of(plan: Plan, where: str, feature: str, project: Path) -> list[PlanScenario]:
    from pytest_bdd.parser import FeatureParser
    from pytest_bdd.scenario import get_python_name_generator

    path = Path(feature) if Path(feature).is_absolute() else project / feature
    if path.is_dir():
        files = sorted(path.rglob("*.feature"))
        if not files:
            raise _fail(plan, where, f"{feature!r}: no .feature file in this folder")
        out: list[PlanScenario] = []
        for f in files:
            shown = str(f) if Path(feature).is_absolute() else str(f.relative_to(project))
            out += _scenarios_of(plan, where, shown, project)
        return out
    if not path.is_file() or path.suffix != ".feature":
        raise _fail(plan, where, f"{feature!r}: no such feature file")
    try:
        parsed = FeatureParser(str(path.parent), path.name).parse()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(plan, where, f"{feature!r}: not valid Gherkin: {first}") from None
    used: set[str] = set()
    out = []
    for title, template in parsed.scenarios.items():
        name = next(n for n in get_python_name_generator(title) if n not in used)
        used.add(name)
        tags = frozenset(parsed.tags) | frozenset(template.tags)
        out.append(PlanScenario(feature, title, tags, f"{feature}::{name}"))
    return out


# -- when a plan may run -----------------------------------------------------------------------


def _blackout_of(plan: Plan, day: date) -> str | None:
    for b in plan.blackouts:
        if isinstance(b, date) and b == day:
            return f"blackout date {b.isoformat()}"
        if isinstance(b, Blackout) and b.from_ <= day <= b.to:
            why = f" ({b.reason})" if b.reason else ""
            return f"blackout {b.from_.isoformat()} to {b.to.isoformat()}{why}"
    return None


def _opens(plan: Plan, window: Window, day: date) -> tuple[datetime, datetime]:
    zone = ZoneInfo(window.time_zone or plan.time_zone)
    start = datetime.combine(day, time(), zone) + timedelta(minutes=_minutes(window.start))
    end_day = day if _minutes(window.end) > _minutes(window.start) else day + timedelta(days=1)
    end = datetime.combine(end_day, time(), zone) + timedelta(minutes=_minutes(window.end))
    return start, end


def window_problem(plan: Plan, now: datetime) -> str | None:
    """Why the plan may not start at `now` (outside every window, or a blackout), else None."""
    local_day = now.astimezone(ZoneInfo(plan.time_zone)).date()
    blackout = _blackout_of(plan, local_day)
    if blackout:
        return f"today is a {blackout} in {plan.time_zone}"
    if not plan.windows:
        return None
    for window in plan.windows:
        zone = ZoneInfo(window.time_zone or plan.time_zone)
        today = now.astimezone(zone).date()
        for day in (today - timedelta(days=1), today):
            if DAYS[day.weekday()] not in window.days:
                continue
            start, end = _opens(plan, window, day)
            if start <= now < end:
                return None
    nxt = next_window(plan, now)
    when = f"; the next window opens {nxt}" if nxt else ""
    return f"outside the plan's windows{when}"


def next_window(plan: Plan, now: datetime) -> str | None:
    """When the next allowed window opens (within four weeks), in words."""
    best: tuple[datetime, Window] | None = None
    for window in plan.windows:
        zone = ZoneInfo(window.time_zone or plan.time_zone)
        today = now.astimezone(zone).date()
        for k in range(29):
            day = today + timedelta(days=k)
            if DAYS[day.weekday()] not in window.days or _blackout_of(plan, day):
                continue
            start, _ = _opens(plan, window, day)
            if start > now and (best is None or start < best[0]):
                best = (start, window)
                break
    if best is None:
        return None
    start, window = best
    return f"{start.strftime('%a %Y-%m-%d %H:%M')} {window.time_zone or plan.time_zone}"
