"""Load baselines: record locust's per-endpoint statistics, compare a later run against them.

locust runs as a subprocess (``python -m locust``), never imported here: its gevent
monkey-patching breaks boto3 and pytest. A baseline is a JSON file
``baselines/<target>-<name>.json`` (folder: ``$GAMEDAY_BASELINES_DIR`` or ``baselines/``) with
the totals, per-endpoint requests/s, p50/p95/p99 (ms) and failure ratio, and the conditions
of the run (users, spawn rate, duration, target, git revision, date).

``compare()`` is a pure function: latency percentiles may rise by at most a percentage, the
throughput may drop by at most a percentage, the failure ratio may rise by at most some
percentage points; endpoints with too few requests in either run are reported, not judged.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gameday import load
from gameday.stats import nearest_rank_of_counts
from gameday.target import Target, path_safe
from gameday.verdict import Verdict, failed, passed

REPO_DIR = Path(__file__).resolve().parent.parent
BASELINES_ENV = "GAMEDAY_BASELINES_DIR"
DEFAULT_NAME = "default"
TOTAL = "total"

LATENCY_METRICS = ("p50", "p95", "p99")
METRICS = (*LATENCY_METRICS, "rps", "failures")
UNITS = {"p50": "ms", "p95": "ms", "p99": "ms", "rps": "req/s", "failures": "%"}


class BaselineError(Exception):
    """Bad input (a cap, a tolerance spec, a missing or broken baseline file): exit 2."""


# locust did not run to the end or wrote no statistics: exit 1.
LoadRunError = load.LoadRunError


# -- statistics --------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointStats:
    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def value(self, metric: str) -> float:
        if metric == "failures":
            return self.failure_ratio
        return float(getattr(self, metric))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failure_ratio": round(self.failure_ratio, 6)}

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> EndpointStats:
        requests = int(raw["requests"])
        failures = raw.get("failures")
        if failures is None:  # a hand-written file with the ratio only
            failures = round(float(raw.get("failure_ratio", 0.0)) * requests)
        return cls(
            name=name,
            requests=requests,
            failures=int(failures),
            rps=float(raw["rps"]),
            p50=float(raw["p50"]),
            p95=float(raw["p95"]),
            p99=float(raw["p99"]),
        )


@dataclass(frozen=True)
class LoadResult:
    endpoints: dict[str, EndpointStats]
    total: EndpointStats
    duration_sec: float

    def all(self) -> dict[str, EndpointStats]:
        return {**self.endpoints, TOTAL: self.total}


def percentile(histogram: Mapping[float, int], fraction: float) -> float:
    """The smallest response time (ms) at or under which ``fraction`` of the requests fell."""
    return nearest_rank_of_counts(histogram, fraction * 100)


def _endpoint(
    name: str, requests: int, failures: int, hist: Mapping[float, int], span: float
) -> EndpointStats:
    return EndpointStats(
        name=name,
        requests=requests,
        failures=failures,
        rps=round(requests / span, 3) if span > 0 else 0.0,
        p50=percentile(hist, 0.50),
        p95=percentile(hist, 0.95),
        p99=percentile(hist, 0.99),
    )


def parse_locust_json(entries: Sequence[Mapping[str, Any]], run_time_sec: float) -> LoadResult:
    """Per-endpoint and total statistics from locust's ``--json-file`` list of entries.

    Requests/s over the run's span (first request to last), the same for every endpoint;
    percentiles from the response-time histograms (locust rounds the times it stores).
    """
    starts = [float(e["start_time"]) for e in entries if e.get("num_requests")]
    ends = [float(e["last_request_timestamp"]) for e in entries if e.get("num_requests")]
    span = (max(ends) - min(starts)) if starts else 0.0
    span = span if span > 0 else run_time_sec
    merged: dict[str, dict[float, int]] = {}
    counts: dict[str, list[int]] = {}
    for e in entries:
        name = str(e["name"])  # the same name under two methods: one endpoint
        hist = merged.setdefault(name, {})
        for key, n in dict(e.get("response_times") or {}).items():
            hist[float(key)] = hist.get(float(key), 0) + int(n)
        c = counts.setdefault(name, [0, 0])
        c[0] += int(e.get("num_requests", 0))
        c[1] += int(e.get("num_failures", 0))
    endpoints: dict[str, EndpointStats] = {
        name: _endpoint(name, counts[name][0], counts[name][1], merged[name], span)
        for name in sorted(merged)
    }
    all_hist: dict[float, int] = {}
    for hist in merged.values():
        for key, n in hist.items():
            all_hist[key] = all_hist.get(key, 0) + n
    total = _endpoint(
        TOTAL,
        sum(c[0] for c in counts.values()),
        sum(c[1] for c in counts.values()),
        all_hist,
        span,
    )
    return LoadResult(endpoints, total, round(span, 3))


# -- running locust ------------------------------------------------------------------------


def check_load(
    users: int, spawn_rate: float, duration_sec: int, target: Target | None = None
) -> None:
    """Bad input before anything starts: the harness caps, then the target's `load:` caps."""
    if not 1 <= users <= load.MAX_USERS:
        raise BaselineError(f"--users {users}: must be 1..{load.MAX_USERS} (harness cap)")
    if not (math.isfinite(spawn_rate) and spawn_rate > 0):
        raise BaselineError(f"--spawn-rate {spawn_rate}: must be a number more than 0")
    if not 1 <= duration_sec <= load.MAX_DURATION_SEC:
        raise BaselineError(
            f"--duration {duration_sec}: must be 1..{load.MAX_DURATION_SEC} s (harness cap)"
        )
    if target is not None:
        try:
            load.check_limits(
                target, users=users, rps=load.users_ceiling_rps(users), duration_sec=duration_sec
            )
        except load.LoadLimitError as exc:
            raise BaselineError(str(exc)) from None


def run_locust(
    target: Target,
    *,
    users: int,
    spawn_rate: float,
    duration_sec: int,
    workdir: Path,
    workers: int = 0,
    records: bool = False,
    locustfile: Path = load.LOCUSTFILE,
) -> LoadResult:
    """Run locust headless against the target's entrypoint; its statistics, per endpoint.

    With `workers`, a master and that many worker processes (locust's distributed mode); with
    `records`, every request is also written to `workdir`'s records file(s).
    """
    check_load(users, spawn_rate, duration_sec, target)
    refusal = load.journeys_refusal(target) if locustfile == load.LOCUSTFILE else None
    if refusal:
        raise BaselineError(refusal)
    plan = load.LocustPlan(
        host=target.entrypoint.url, users=users, spawn_rate=spawn_rate,
        run_time_sec=duration_sec, folder=workdir, workers=workers, records=records,
        locustfile=locustfile,
    )  # fmt: skip
    return parse_locust_json(load.run(plan), float(duration_sec))


# -- baseline files ------------------------------------------------------------------------


@dataclass(frozen=True)
class Conditions:
    target: str
    users: int
    spawn_rate: float
    duration_sec: int
    git_revision: str = "unknown"
    date: str = ""


@dataclass(frozen=True)
class Baseline:
    conditions: Conditions
    result: LoadResult

    def to_json(self) -> dict[str, Any]:
        return {
            "conditions": asdict(self.conditions),
            "measured_duration_sec": self.result.duration_sec,
            "total": self.result.total.to_json(),
            "endpoints": {n: s.to_json() for n, s in self.result.endpoints.items()},
        }


def baselines_dir(override: str | Path | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get(BASELINES_ENV, "").strip()
    return Path(env) if env else REPO_DIR / "baselines"


def baseline_path(
    target_name: str, name: str = DEFAULT_NAME, directory: Path | None = None
) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise BaselineError(f"--name {name!r}: must be a plain file name")
    # The target's name is free text: only its path-safe form becomes part of a file name.
    return (directory or baselines_dir()) / f"{path_safe(target_name)}-{name}.json"


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def new_conditions(target: str, users: int, spawn_rate: float, duration_sec: int) -> Conditions:
    return Conditions(
        target=target,
        users=users,
        spawn_rate=spawn_rate,
        duration_sec=duration_sec,
        git_revision=git_revision(),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def save_baseline(baseline: Baseline, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(baseline.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def load_baseline(path: Path) -> Baseline:
    if not path.exists():
        raise BaselineError(f"{path}: no such baseline (record one with `gameday baseline record`)")
    try:
        raw = json.loads(path.read_text())
        c = raw["conditions"]
        conditions = Conditions(
            target=str(c["target"]),
            users=int(c["users"]),
            spawn_rate=float(c["spawn_rate"]),
            duration_sec=int(c["duration_sec"]),
            git_revision=str(c.get("git_revision", "unknown")),
            date=str(c.get("date", "")),
        )
        endpoints = {n: EndpointStats.from_json(n, s) for n, s in raw["endpoints"].items()}
        total = EndpointStats.from_json(TOTAL, raw["total"])
        duration = float(raw.get("measured_duration_sec", conditions.duration_sec))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BaselineError(f"{path}: not a baseline file ({type(exc).__name__}: {exc})") from None
    return Baseline(conditions, LoadResult(endpoints, total, duration))


# -- comparing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerances:
    """Allowed change per metric: latency rise %, throughput drop %, failure-ratio rise in
    percentage points. ``overrides``: per endpoint (or "total"), metric -> allowed.

    ``latency_slack_ms``: a latency rise smaller than this is never a regression (the lab
    answers in a few ms and locust rounds to whole ms: 3 -> 4 ms is +33 % of noise).
    """

    p50: float = 20.0
    p95: float = 20.0
    p99: float = 50.0
    rps: float = 10.0
    failures: float = 1.0
    min_requests: int = 20
    latency_slack_ms: float = 2.0
    overrides: dict[str, dict[str, float]] = field(default_factory=dict)

    def allowed(self, endpoint: str, metric: str) -> float:
        override = self.overrides.get(endpoint, {}).get(metric)
        return override if override is not None else float(getattr(self, metric))


def parse_tolerances(specs: Iterable[str], base: Tolerances | None = None) -> Tolerances:
    """``"p95=30"`` (every endpoint) or ``"product page:p95=30,p99=80"`` (one endpoint).

    Metrics: p50, p95, p99 (rise %), rps (drop %), failures (rise, percentage points).
    """
    base = base or Tolerances()
    defaults: dict[str, float] = {}
    overrides: dict[str, dict[str, float]] = {k: dict(v) for k, v in base.overrides.items()}
    for spec in specs:
        endpoint, sep, pairs = spec.rpartition(":")
        endpoint = endpoint.strip()
        if sep and not endpoint:
            raise BaselineError(f"--tolerance {spec!r}: empty endpoint name before ':'")
        for pair in pairs.split(","):
            metric, eq, number = pair.partition("=")
            metric = metric.strip()
            if not eq or metric not in METRICS:
                raise BaselineError(
                    f"--tolerance {spec!r}: expected [ENDPOINT:]METRIC=NUMBER with METRIC one "
                    f"of {', '.join(METRICS)}"
                )
            try:
                value = float(number.strip().rstrip("%").strip())
            except ValueError:
                raise BaselineError(f"--tolerance {spec!r}: {number!r} is not a number") from None
            if not value >= 0 or math.isinf(value):
                raise BaselineError(f"--tolerance {spec!r}: {value} must be 0 or more")
            if endpoint:
                overrides.setdefault(endpoint, {})[metric] = value
            else:
                defaults[metric] = value
    fields = {m: defaults.get(m, base.allowed("", m)) for m in METRICS}
    return Tolerances(
        **fields,
        min_requests=base.min_requests,
        latency_slack_ms=base.latency_slack_ms,
        overrides=overrides,
    )


@dataclass(frozen=True)
class Comparison:
    endpoint: str
    metric: str  # p50, p95, p99, rps, failures; "requests" for a row not judged
    baseline: float
    current: float
    change: float | None  # % for latency and rps; percentage points for failures
    allowed: float | None  # + % rise (latency), - % drop (rps), + points (failures)
    ok: bool
    judged: bool = True
    note: str = ""

    @property
    def excess(self) -> float:
        """How far past the allowance (0 when within): ranks the regressions."""
        if self.ok or self.allowed is None:
            return 0.0
        change = self.change if self.change is not None else math.inf
        if self.metric == "rps":
            return -change - self.allowed
        return change - self.allowed

    def describe(self) -> str:
        """``product page p95 42.0 ms vs 21.0 ms baseline (+100 %, allowed +20 %)``."""
        if not self.judged:
            return f"{self.endpoint}: {self.note}"
        if self.metric == "failures":
            return (
                f"{self.endpoint} failure ratio {self.current * 100:.1f} % vs "
                f"{self.baseline * 100:.1f} % baseline ({_signed(self.change)} points, allowed "
                f"+{_num(self.allowed)} points)"
            )
        unit = UNITS[self.metric]
        sign = "-" if self.metric == "rps" else "+"
        return (
            f"{self.endpoint} {self.metric} {self.current:.1f} {unit} vs {self.baseline:.1f} "
            f"{unit} baseline ({_signed(self.change)} %, allowed {sign}{_num(self.allowed)} %)"
        )


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def _signed(value: float | None) -> str:
    if value is None:
        return "new"
    return f"{value:+.0f}" if abs(value) >= 10 else f"{value:+.1f}"


def _pct_change(baseline: float, current: float) -> float | None:
    if baseline == 0:
        return 0.0 if current == 0 else None
    return (current - baseline) / baseline * 100


def compare(
    baseline: Mapping[str, EndpointStats],
    current: Mapping[str, EndpointStats],
    tolerances: Tolerances | None = None,
) -> list[Comparison]:
    """Compare per endpoint (and "total", if both have it); baseline endpoints first.

    An endpoint missing from one run, or with fewer than ``min_requests`` in either, gets one
    row "too few requests" and is not judged.
    """
    tol = tolerances or Tolerances()
    rows: list[Comparison] = []
    names = [n for n in baseline if n != TOTAL] + [
        n for n in current if n not in baseline and n != TOTAL
    ]
    if TOTAL in baseline or TOTAL in current:
        names.append(TOTAL)
    for name in names:
        b, c = baseline.get(name), current.get(name)
        b_req, c_req = (b.requests if b else 0), (c.requests if c else 0)
        if b is None or c is None or min(b_req, c_req) < tol.min_requests:
            rows.append(
                Comparison(
                    name,
                    "requests",
                    float(b_req),
                    float(c_req),
                    None,
                    None,
                    ok=True,
                    judged=False,
                    note=f"too few requests ({b_req} baseline, {c_req} now; "
                    f"need {tol.min_requests})",
                )
            )
            continue
        for metric in METRICS:
            rows.append(_judge(name, metric, b.value(metric), c.value(metric), tol))
    return rows


def _judge(name: str, metric: str, b: float, c: float, tol: Tolerances) -> Comparison:
    allowed = tol.allowed(name, metric)
    if metric == "failures":
        change: float | None = (c - b) * 100
        ok = change is not None and change <= allowed + 1e-9
    elif metric == "rps":
        change = _pct_change(b, c)
        ok = change is None or change >= -allowed - 1e-9
    else:
        change = _pct_change(b, c)
        within = change is not None and change <= allowed + 1e-9
        ok = within or (c - b) <= tol.latency_slack_ms
    return Comparison(name, metric, b, c, change, allowed, ok)


def regressions(rows: Iterable[Comparison]) -> list[Comparison]:
    """The failing rows, worst (furthest past its allowance) first."""
    return sorted((r for r in rows if not r.ok), key=lambda r: r.excess, reverse=True)


def verdict(rows: Sequence[Comparison]) -> Verdict:
    bad = regressions(rows)
    judged = sum(1 for r in rows if r.judged)
    skipped = sorted({r.endpoint for r in rows if not r.judged})
    measured: dict[str, Any] = {"judged": judged, "regressions": len(bad), "too_few": skipped}
    if bad:
        worst = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return failed("load baseline", f"regression: {worst.describe()}{more}", **measured)
    if judged == 0:
        return failed("load baseline", "nothing to judge: every endpoint had too few requests")
    return passed("load baseline", summary(rows), **measured)


def judge_metric(
    baseline: Baseline,
    current: LoadResult,
    endpoint: str,
    metric: str,
    allowed: float,
    *,
    users: int | None = None,
) -> Verdict:
    """One endpoint's metric against the baseline, with its own allowance (a Then-step's).

    Fails when the endpoint is missing or had too few requests in either run (no evidence is
    not a pass), and when `users` differs from the baseline's (the numbers do not compare).
    """
    check = f"load baseline {metric}"
    if metric not in METRICS:
        raise BaselineError(f"metric {metric!r}: must be one of {', '.join(METRICS)}")
    if users is not None and users != baseline.conditions.users:
        return failed(
            check,
            f"the baseline was recorded with {baseline.conditions.users} users, this load has "
            f"{users}: record a baseline under the same conditions",
        )
    tol = Tolerances(overrides={endpoint: {metric: allowed}})
    rows = [
        r
        for r in compare(baseline.result.all(), current.all(), tol)
        if r.endpoint == endpoint and r.metric in (metric, "requests")
    ]
    c = baseline.conditions
    measured = {"baseline_users": c.users, "baseline_revision": c.git_revision}
    if not rows:
        known = ", ".join(sorted(current.all())) or "none"
        return failed(check, f"no endpoint {endpoint!r} in this load (endpoints: {known})")
    row = rows[0]
    if not row.judged:
        return failed(check, row.describe(), **measured)
    measured.update(baseline_value=row.baseline, current=row.current, change=row.change)
    return (passed if row.ok else failed)(check, row.describe(), **measured)


def failure_ratio_at_most(result: LoadResult, max_ratio: float) -> Verdict:
    """The share of the run's requests that failed is at most `max_ratio`; no request fails."""
    t = result.total
    measured = {"requests": t.requests, "failures": t.failures, "ratio": t.failure_ratio}
    if t.requests == 0:
        return failed("load failures", "the load sent no request: no evidence", **measured)
    by_endpoint = ", ".join(
        f"{s.name} {s.failures}" for s in result.endpoints.values() if s.failures
    )
    message = (
        f"{t.failures} of {t.requests} requests failed ({t.failure_ratio * 100:.2f} %, "
        f"max {max_ratio * 100:g} %)" + (f": {by_endpoint}" if by_endpoint else "")
    )
    verdict = passed if t.failure_ratio <= max_ratio else failed
    return verdict("load failures", message, **measured)


def summary(rows: Sequence[Comparison]) -> str:
    bad = regressions(rows)
    judged = [r for r in rows if r.judged]
    endpoints = len({r.endpoint for r in judged})
    skipped = sorted({r.endpoint for r in rows if not r.judged})
    tail = f"; not judged (too few requests): {', '.join(skipped)}" if skipped else ""
    if bad:
        return f"{len(bad)} of {len(judged)} checks out of tolerance; worst: {bad[0].describe()}"
    return f"all {len(judged)} checks on {endpoints} endpoints within tolerance{tail}"


def _fmt(metric: str, value: float) -> str:
    if metric == "failures":
        return f"{value * 100:.2f} %"
    if metric == "requests":
        return f"{value:.0f}"
    return f"{value:.1f} {UNITS[metric]}"


def table(rows: Sequence[Comparison]) -> str:
    header = ("ENDPOINT", "METRIC", "BASELINE", "NOW", "CHANGE", "ALLOWED", "")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        if not r.judged:
            lines.append(
                (
                    r.endpoint,
                    "requests",
                    _fmt("requests", r.baseline),
                    _fmt("requests", r.current),
                    "",
                    "",
                    "too few requests",
                )
            )
            continue
        unit = " pt" if r.metric == "failures" else " %"
        sign = "-" if r.metric == "rps" else "+"
        lines.append(
            (
                r.endpoint,
                r.metric,
                _fmt(r.metric, r.baseline),
                _fmt(r.metric, r.current),
                (_signed(r.change) + unit) if r.change is not None else "new",
                f"{sign}{_num(r.allowed)}{unit}",
                "ok" if r.ok else "REGRESSION",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def result_table(result: LoadResult) -> str:
    """The statistics of one run (for `record`)."""
    header = ("ENDPOINT", "REQUESTS", "FAILURES", "REQ/S", "P50 MS", "P95 MS", "P99 MS")
    lines = [header] + [
        (
            s.name,
            str(s.requests),
            f"{s.failures} ({s.failure_ratio * 100:.1f} %)",
            f"{s.rps:.2f}",
            f"{s.p50:g}",
            f"{s.p95:g}",
            f"{s.p99:g}",
        )
        for s in result.all().values()
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
