"""Checks over a run's history: what the users saw while a fault was in effect.

Pure functions over samples (or a `History`): availability in a window, the longest outage,
time to recover, lost and duplicated writes, latency percentiles, where traffic went. Each
returns a `Verdict` whose message carries the measured numbers, so a failed then-step says
what happened, not only that something did.

Times are seconds on the run's clock. Samples are judged by their *send* time: a request
that hung and was cut by its timeout counts as a failure at the moment it was sent. Phases
relative to a fault window (start, end): "before" (< start), "during" ([start, end]),
"after" (> end).
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal, TypeAlias, cast

from gameday.history import History, Sample
from gameday.stats import nearest_rank
from gameday.verdict import Verdict, failed, passed

Window: TypeAlias = tuple[float, float]
Phase: TypeAlias = Literal["before", "during", "after"]
PHASES: tuple[Phase, ...] = ("before", "during", "after")
# How many ids a message lists; the counts are always complete.
LISTED_IDS = 20
UNKNOWN_SERVER = "(unknown)"


# -- helpers ---------------------------------------------------------------------------------


def phase_of(t: float, window: Window) -> Phase:
    start, end = window
    if t < start:
        return "before"
    return "during" if t <= end else "after"


def _in_send_order(samples: Iterable[Sample]) -> list[Sample]:
    # Probes append a sample when it completes; concurrent requests complete out of order.
    return sorted(samples, key=lambda s: (s.sent, s.seq))


def _sec(x: float) -> str:
    """Seconds for a message: two decimals at most, no trailing zeros (2.3, 10, 0.05)."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _ms(x: float) -> str:
    return f"{x:.1f}"


def _pct(ratio: float, against: float | None = None) -> str:
    """A share as a percentage, with as many decimals as it takes for the rounded figure to
    fall on the same side of `against` (and of 100%) as the true one: no "99.0% (min 99%)"
    on a failed check."""
    text = f"{ratio * 100:.1f}"
    for decimals in range(1, 5):
        text = f"{ratio * 100:.{decimals}f}"
        shown = float(text) / 100
        same_side = against is None or (shown >= against) == (ratio >= against)
        if same_side and (shown < 1 or ratio >= 1):
            break
    return f"{text}%"


def _probe_name(samples: Sequence[Sample]) -> str:
    names = sorted({s.probe for s in samples})
    return "+".join(names) if names else "probe"


def failure_kind(s: Sample) -> str:
    """A failure in the words verdicts use: "http 503", "timeout", "refused"..."""
    if s.error in (None, "http") and s.status is not None:
        return f"http {s.status}"
    return s.error or "unknown"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _where(window: Window | None) -> str:
    if window is None:
        return "over the run"
    return f"during the fault [{_sec(window[0])} s, {_sec(window[1])} s]"


def _in_window(samples: Iterable[Sample], window: Window | None) -> list[Sample]:
    if window is None:
        return list(samples)
    start, end = window
    return [s for s in samples if start <= s.sent <= end]


# -- availability ----------------------------------------------------------------------------


def availability(
    samples: Iterable[Sample],
    *,
    window: Window | None,
    min_ratio: float,
    interval: float | None = None,
    until: float | None = None,
) -> Verdict:
    """Share of successful samples sent in the window (the whole run if None), at least
    `min_ratio`. No sample in the window is a failure: there is no evidence.

    With the probe's send `interval`, the times it fell silent in the window (up to `until`,
    where its record is complete) count as failed requests ("silent"): a probe that stalled
    during the fault did not see the service answer."""
    name = "availability"
    pool = list(samples)
    probe = _probe_name(pool)
    inside = _in_window(pool, window)
    if interval is not None and window is not None and inside:
        end = window[1] if until is None else min(window[1], until)
        inside = with_silences(inside, start=window[0], end=end, interval=interval)
    where = _where(window)
    if not inside:
        return failed(
            name,
            f"{probe}: no requests were sent {where}: no evidence of availability",
            total=0,
            ratio=None,
        )
    bad = [s for s in inside if not s.ok]
    ratio = (len(inside) - len(bad)) / len(inside)
    kinds = Counter(failure_kind(s) for s in bad)
    failures = f"{len(bad)} failed ({_counts(kinds)})" if bad else "none failed"
    message = (
        f"{probe}: {_pct(ratio, min_ratio)} of {len(inside)} requests succeeded {where} "
        f"(min {min_ratio * 100:g}%): {failures}"
    )
    measured = {"ratio": ratio, "total": len(inside), "failed": len(bad), "errors": dict(kinds)}
    return (passed if ratio >= min_ratio else failed)(name, message, **measured)


# -- outages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """A run of consecutive failed samples. It ends when the next success was sent; an
    `ongoing` outage had no success after it, and ends at its last failure's send time plus
    that request's duration (0 when it was cut by a timeout and has none)."""

    start: float
    end: float
    failures: int
    ongoing: bool

    @property
    def length(self) -> float:
        return self.end - self.start


def outages(samples: Iterable[Sample]) -> list[Outage]:
    """Every run of consecutive failures, in send order."""
    found: list[Outage] = []
    start: float | None = None
    count = 0
    last_failure: Sample | None = None
    for s in _in_send_order(samples):
        if not s.ok:
            if start is None:
                start, count = s.sent, 0
            count += 1
            last_failure = s
        elif start is not None:
            found.append(Outage(start, s.sent, count, ongoing=False))
            start = None
    if start is not None and last_failure is not None:
        end = last_failure.sent + (last_failure.duration or 0.0)
        found.append(Outage(start, end, count, ongoing=True))
    return found


def longest_outage(samples: Iterable[Sample], *, max_sec: float) -> Verdict:
    """The longest run of consecutive failures lasts at most `max_sec`, and the probe is not
    still failing when its samples end."""
    name = "longest_outage"
    ordered = _in_send_order(samples)
    probe = _probe_name(ordered)
    if not ordered:
        return failed(name, f"{probe}: no samples: no evidence", longest_sec=None)
    found = outages(ordered)
    span = f"{len(ordered)} requests from {_sec(ordered[0].sent)} s to {_sec(ordered[-1].sent)} s"
    if not found:
        return passed(name, f"{probe}: no failed request among {span}", longest_sec=0.0, outages=0)
    longest = max(found, key=lambda o: o.length)
    measured = {
        "longest_sec": longest.length,
        "longest_start": longest.start,
        "outages": len(found),
        "still_failing": found[-1].ongoing,
    }
    if found[-1].ongoing:
        last = found[-1]
        return failed(
            name,
            f"{probe}: still failing at the end: {last.failures} failed requests since "
            f"{_sec(last.start)} s ({_sec(last.length)} s and counting, max {_sec(max_sec)} s)",
            **measured,
        )
    summary = (
        f"{probe}: longest outage {_sec(longest.length)} s from {_sec(longest.start)} s to "
        f"{_sec(longest.end)} s ({longest.failures} failed requests)"
    )
    others = f"{len(found)} outage(s) among {span}"
    if longest.length > max_sec:
        return failed(name, f"{summary} exceeds {_sec(max_sec)} s; {others}", **measured)
    return passed(name, f"{summary}, max {_sec(max_sec)} s; {others}", **measured)


# -- recovery --------------------------------------------------------------------------------


# A probe that sent nothing for this many of its intervals (and at least SILENCE_MIN_SEC) was
# silent: it stalled or died, and that is an outage, never "no outage seen".
SILENCE_INTERVALS = 4
SILENCE_MIN_SEC = 0.5


def silences(
    sent: Sequence[float], *, start: float, end: float, interval: float
) -> list[tuple[float, float]]:
    """The spans of [start, end] in which a probe due every `interval` seconds sent nothing
    for longer than max(SILENCE_INTERVALS intervals, SILENCE_MIN_SEC): (last send, next)."""
    gap = max(SILENCE_INTERVALS * interval, SILENCE_MIN_SEC)
    points = [start, *sorted(t for t in sent if start <= t <= end), end]
    return [(a, b) for a, b in pairwise(points) if b - a > gap]


def with_silences(
    samples: Sequence[Sample], *, start: float, end: float, interval: float
) -> list[Sample]:
    """`samples` plus a failed sample ("silent") at each moment the probe was due but silent,
    so a stalled or dead probe reads as the outage it is."""
    name = samples[0].probe if samples else "probe"
    filled = list(samples)
    for a, b in silences([s.sent for s in samples], start=start, end=end, interval=interval):
        t = a + interval
        while t < b:
            filled.append(Sample(name, -1, t, None, False, error="silent"))
            t += interval
    return _in_send_order(filled)


def time_to_recover(
    samples: Iterable[Sample],
    *,
    fault_start: float,
    within_sec: float,
    consecutive: int = 5,
    in_effect_at: float | None = None,
    until: float | None = None,
    interval: float | None = None,
) -> Verdict:
    """Time from `fault_start` until the probe works again, at most `within_sec`.

    Jepsen-style: the recovery moment is the send time of the first sample of the first run
    of `consecutive` successes that follows the first failure sent at or after `fault_start`.
    No failure after `fault_start` means no outage was seen: 0 s, but only with `consecutive`
    successes sent once the fault was fully in effect (`in_effect_at`, its inject-end):
    successes from before the fault took hold prove nothing. Failures after the recovery (a
    relapse, e.g. while the fault is healed) are reported, not judged here: `longest_outage`
    and `availability` judge those.

    Judging a live probe: `until` is the send time up to which its record is complete (every
    request sent earlier has its sample: a request in flight may yet fail), and `interval` its
    send interval: a silence (no send for several intervals up to `until`) counts as failures.
    """
    if consecutive < 1:
        raise ValueError(f"consecutive must be at least 1, got {consecutive}")
    name = "time_to_recover"
    pool = list(samples)
    probe = _probe_name(pool)
    ordered = [
        s
        for s in _in_send_order(pool)
        if s.sent >= fault_start and (until is None or s.sent <= until)
    ]
    if interval is not None:
        end = until if until is not None else (ordered[-1].sent if ordered else fault_start)
        ordered = with_silences(ordered, start=fault_start, end=end, interval=interval)
    began = f"the fault began at {_sec(fault_start)} s"
    if not ordered:
        return failed(
            name, f"{probe}: no samples sent after {began}: no evidence", recovery_sec=None
        )
    first_failure = next((i for i, s in enumerate(ordered) if not s.ok), None)
    if first_failure is None and len(ordered) < consecutive:
        # A probe that went quiet is not a probe that saw no outage.
        return failed(
            name,
            f"{probe}: only {len(ordered)} samples sent after {began} (need {consecutive} "
            "to call it no outage): no evidence",
            recovery_sec=None,
        )
    if first_failure is None:
        held = in_effect_at if in_effect_at is not None else fault_start
        after = sum(1 for s in ordered if s.sent >= held)
        if after < consecutive:
            return failed(
                name,
                f"{probe}: no failure yet, but only {after} requests sent since the fault took "
                f"hold at {_sec(held)} s (need {consecutive} to call it no outage): no evidence",
                recovery_sec=None,
            )
        return passed(
            name,
            f"{probe}: recovery 0 s: no failed request among {len(ordered)} sent after {began}"
            " (no outage seen)",
            recovery_sec=0.0,
            outage_sec=0.0,
        )
    run = 0
    recovered_at: int | None = None
    for i in range(first_failure + 1, len(ordered)):
        if ordered[i].ok:
            run += 1
            if run == consecutive:
                recovered_at = i - consecutive + 1
                break
        else:
            run = 0
    failures = [s for s in ordered if not s.ok]
    if recovered_at is None:
        return failed(
            name,
            f"{probe}: not recovered by the end (last failure at {_sec(failures[-1].sent)} s; "
            f"{run} successes after it, {consecutive} consecutive needed; {began}, "
            f"{len(failures)} failed requests since)",
            recovery_sec=None,
            last_failure=failures[-1].sent,
        )
    moment = ordered[recovered_at].sent
    recovery = moment - fault_start
    first_fail_at = ordered[first_failure].sent
    relapse = [s for s in ordered[recovered_at + consecutive :] if not s.ok]
    detail = (
        f"first failure at {_sec(first_fail_at)} s, first of {consecutive} consecutive "
        f"successes at {_sec(moment)} s"
    )
    if relapse:
        detail += (
            f"; failed again later: {len(relapse)} requests, the last at {_sec(relapse[-1].sent)} s"
        )
    measured = {
        "recovery_sec": recovery,
        "outage_sec": moment - first_fail_at,
        "recovered_at": moment,
        "relapse_failures": len(relapse),
    }
    if recovery > within_sec:
        return failed(
            name,
            f"{probe}: recovered {_sec(recovery)} s after {began} (> {_sec(within_sec)} s): "
            f"{detail}",
            **measured,
        )
    return passed(
        name,
        f"{probe}: recovered {_sec(recovery)} s after {began} (within {_sec(within_sec)} s): "
        f"{detail}",
        **measured,
    )


# -- lost writes -----------------------------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[str | int, ...]:
    """Sort key that orders digit runs by value: "o-2" before "o-10"."""
    # split() with a group alternates text and digits, so position i always holds the same
    # type for every id: the tuples compare without mixing str and int.
    parts = cast(list[str | int], _DIGITS.split(text))
    parts[1::2] = map(int, parts[1::2])
    return tuple(parts)


def _first(ids: Iterable[str]) -> list[str]:
    return heapq.nsmallest(LISTED_IDS, ids, key=natural_key)


def _listing(ids: list[str], total: int) -> str:
    more = f" and {total - len(ids)} more" if total > len(ids) else ""
    return ", ".join(ids) + more


def lost_writes(
    acknowledged: Iterable[str],
    unknown: Iterable[str],
    found: Iterable[str],
    *,
    probe: str | None = None,
    max_lost: int = 0,
) -> Verdict:
    """Every acknowledged write is in the final read, and none is there twice.

    `max_lost` allows a stated loss (asynchronous replication promises "at most 1 s of
    writes"): up to that many lost acknowledged writes still pass, and are listed.

    A write of unknown outcome ("info": e.g. timed out after sending) may or may not have
    been applied, so it is never counted as lost; how many of them were found is reported
    apart. An id both acknowledged and unknown (a retried write) counts as acknowledged.
    """
    name = "lost_writes"
    prefix = f"{probe}: " if probe else ""
    acked = set(acknowledged)
    read = found if isinstance(found, list | tuple) else list(found)
    # Sets, not a Counter of a million ids: counted only when some id is there twice.
    seen = set(read)
    unknown_ids = set(unknown) - acked
    if not acked:
        return failed(
            name,
            f"{prefix}no acknowledged write: nothing shows that writes are kept "
            f"({len(unknown_ids)} of unknown outcome, {len(read)} ids read back)",
            acknowledged=0,
            lost=0,
            duplicates=0,
        )
    lost = acked.difference(seen)
    duplicated = [k for k, n in Counter(read).items() if n > 1] if len(seen) < len(read) else []
    unknown_found = len(unknown_ids.intersection(seen))
    unexpected = len(seen.difference(acked, unknown_ids))
    lost_ids, dup_ids = _first(lost), _first(duplicated)
    measured = {
        "acknowledged": len(acked),
        "lost": len(lost),
        "lost_ids": lost_ids,
        "duplicates": len(duplicated),
        "duplicate_ids": dup_ids,
        "unknown": len(unknown_ids),
        "unknown_found": unknown_found,
        "unknown_missing": len(unknown_ids) - unknown_found,
        "unexpected": unexpected,
    }
    notes = []
    if unknown_ids:
        notes.append(
            f"{len(unknown_ids)} writes of unknown outcome: {unknown_found} applied, "
            f"{len(unknown_ids) - unknown_found} not applied (neither counts as lost)"
        )
    if unexpected:
        notes.append(f"{unexpected} ids read back were never written by this probe")
    tail = f"; {'; '.join(notes)}" if notes else ""
    problems = []
    if lost and len(lost) <= max_lost:
        notes.insert(
            0,
            f"{len(lost)} lost, within the allowed {max_lost}: {_listing(lost_ids, len(lost))}",
        )
        tail = f"; {'; '.join(notes)}"
    elif lost:
        problems.append(
            f"{len(lost)} of {len(acked)} acknowledged writes lost: {_listing(lost_ids, len(lost))}"
        )
    if duplicated:
        problems.append(
            f"{len(duplicated)} writes applied more than once: {_listing(dup_ids, len(duplicated))}"
        )
    if problems:
        return failed(name, prefix + "; ".join(problems) + tail, **measured)
    found_once = len(acked) - len(lost)
    return passed(
        name,
        f"{prefix}{'all ' if not lost else ''}{found_once} of {len(acked)} acknowledged writes "
        f"found once in the final read{tail}"
        if lost
        else f"{prefix}all {len(acked)} acknowledged writes found once in the final read{tail}",
        **measured,
    )


def lost_writes_in(history: History, probe: str, *, max_lost: int = 0) -> Verdict:
    """`lost_writes` for a write probe of a history: acknowledged ("ok") and unknown ("info")
    keys from its samples, found keys from its last ReadBack (the final read)."""
    final = history.readback(probe)
    if final is None:
        return failed(
            "lost_writes",
            f"{probe}: no final read of the written ids: cannot tell whether acknowledged "
            "writes were lost",
            acknowledged=None,
            lost=None,
        )
    # Read from the history's columns: a million writes are not made into a million objects.
    samples = history.samples(probe)
    acknowledged, unknown = samples.keys("ok"), samples.keys("info")
    verdict = lost_writes(acknowledged, unknown, final.keys, probe=probe, max_lost=max_lost)
    if not verdict.measured.get("lost"):
        return verdict
    return _with_where_lost(verdict, samples, set(acknowledged).difference(final.keys))


def _with_where_lost(verdict: Verdict, samples: Iterable[Sample], lost: set[str]) -> Verdict:
    """The verdict, its message saying which servers acknowledged the lost writes and when
    they were sent, next to where the kept ones went: a lost block acknowledged by the old
    primary after the failover began reads differently from one the promoted node dropped.
    Only when the probe knows its servers (the ledger writer names the database node)."""
    where_lost: Counter[str] = Counter()
    where_kept: Counter[str] = Counter()
    first = last = None
    for s in samples:
        if s.outcome != "ok" or s.key is None:
            continue
        if s.key in lost:
            where_lost[s.server or UNKNOWN_SERVER] += 1
            first = s.sent if first is None else min(first, s.sent)
            last = s.sent if last is None else max(last, s.sent)
        else:
            where_kept[s.server or UNKNOWN_SERVER] += 1
    if first is None or last is None or set(where_lost) | set(where_kept) == {UNKNOWN_SERVER}:
        return verdict
    note = (
        f"the lost ones were sent {first:.1f}-{last:.1f} s into the run and acknowledged by "
        f"{_counts(where_lost)}; the kept ones by {_counts(where_kept) or 'none'}"
    )
    measured = {
        **verdict.measured,
        "lost_by_server": dict(where_lost),
        "kept_by_server": dict(where_kept),
        "lost_sent": [round(first, 3), round(last, 3)],
    }
    return Verdict(verdict.check, verdict.ok, f"{verdict.message}; {note}", measured)


# -- latency ---------------------------------------------------------------------------------


def _latencies_ms(samples: Iterable[Sample]) -> list[float]:
    return sorted(s.duration * 1000 for s in samples if s.ok and s.duration is not None)


def latency_percentiles(
    samples: Iterable[Sample], *, window: Window
) -> dict[str, dict[str, float]]:
    """phase -> {"p50", "p95", "p99" (ms, nearest rank), "count"} over successful samples.
    A phase without any successful sample is left out (there is no latency to give)."""
    by_phase: dict[Phase, list[Sample]] = {p: [] for p in PHASES}
    for s in samples:
        by_phase[phase_of(s.sent, window)].append(s)
    out: dict[str, dict[str, float]] = {}
    for phase, group in by_phase.items():
        values = _latencies_ms(group)
        if values:
            out[phase] = {
                "p50": nearest_rank(values, 50),
                "p95": nearest_rank(values, 95),
                "p99": nearest_rank(values, 99),
                "count": float(len(values)),
            }
    return out


def latency_within(
    samples: Iterable[Sample], *, window: Window, phase: Phase, percentile: float, max_ms: float
) -> Verdict:
    """The `percentile` latency of successful samples sent in `phase` is at most `max_ms`."""
    name = "latency_within"
    pool = list(samples)
    probe = _probe_name(pool)
    values = _latencies_ms(s for s in pool if phase_of(s.sent, window) == phase)
    label = f"p{percentile:g}"
    if not values:
        return failed(
            name, f"{probe}: no successful request {phase} the fault: no latency to judge",
            count=0,
        )  # fmt: skip
    value = nearest_rank(values, percentile)
    message = (
        f"{probe}: {label} latency {phase} the fault {_ms(value)} ms over {len(values)} "
        f"successful requests (max {max_ms:g} ms)"
    )
    measured = {"latency_ms": value, "percentile": percentile, "count": len(values)}
    return (passed if value <= max_ms else failed)(name, message, **measured)


# -- where traffic went ----------------------------------------------------------------------


def servers_by_phase(samples: Iterable[Sample], *, window: Window) -> dict[str, Counter[str]]:
    """phase -> how many successful answers each server gave (missing server: "(unknown)")."""
    out: dict[str, Counter[str]] = {p: Counter() for p in PHASES}
    for s in samples:
        if s.ok:
            out[phase_of(s.sent, window)][s.server or UNKNOWN_SERVER] += 1
    return out


def traffic_moved_to(
    samples: Iterable[Sample],
    *,
    window: Window,
    survivor: str | Collection[str],
    within_sec: float,
) -> Verdict:
    """From `within_sec` after the fault began until it ended, every successful answer came
    from `survivor` (or one of several survivors). An answer that names no server is not
    counted as a survivor's."""
    name = "traffic_moved_to"
    survivors = {survivor} if isinstance(survivor, str) else set(survivor)
    who_survived = " or ".join(sorted(survivors)) or "(none)"
    start, end = window
    cutoff = start + within_sec
    pool = _in_send_order(samples)
    probe = _probe_name(pool)
    if cutoff > end:
        return failed(
            name,
            f"{probe}: the fault lasted {_sec(end - start)} s, less than the {_sec(within_sec)} s "
            "allowed for traffic to move: nothing to judge",
            strays=None,
        )
    ok = [s for s in pool if s.ok]
    judged = [s for s in ok if cutoff <= s.sent <= end]
    span = f"from {_sec(cutoff)} s to {_sec(end)} s"
    if not judged:
        return failed(
            name, f"{probe}: no successful answer {span}: cannot tell where traffic went",
            strays=None,
        )  # fmt: skip
    elsewhere = [s for s in ok if start <= s.sent <= end and s.server not in survivors]
    strays = [s for s in judged if s.server not in survivors]
    last = elsewhere[-1] if elsewhere else None
    measured = {
        "answers": len(judged),
        "strays": len(strays),
        "moved_after_sec": (last.sent - start) if last else 0.0,
    }
    if strays:
        who = Counter(s.server or UNKNOWN_SERVER for s in strays)
        stray = strays[-1]
        return failed(
            name,
            f"{probe}: {len(strays)} of {len(judged)} answers {span} came from other servers "
            f"than {who_survived} ({_counts(who)}); the last from {stray.server or UNKNOWN_SERVER} "
            f"at {_sec(stray.sent)} s, {_sec(stray.sent - start)} s after the fault began "
            f"(allowed {_sec(within_sec)} s)",
            **measured,
        )
    if last is None:
        moved = "no other server answered during the fault"
    else:
        moved = (
            f"the last answer from another server ({last.server or UNKNOWN_SERVER}) was at "
            f"{_sec(last.sent)} s, {_sec(last.sent - start)} s after the fault began"
        )
    return passed(
        name,
        f"{probe}: all {len(judged)} answers {span} came from {who_survived}; {moved}",
        **measured,
    )
