"""Checks of the network between zones: egress per zone, a NAT per zone, one writer at a time.

Pure functions over samples of the egress probe (`egress <zone>`: `ok` when the internet
answered, `server` the address it saw the zone come from) and of the writable-nodes probe
(one sample per node per round, all of a round sharing its `seq`, `ok` when the node took the
write). Each returns a `Verdict` whose message carries the times and addresses measured:
"zone a lost egress at +3.1 s (0.04 s after the fault took hold)", "zones a and b both leave
through 198.51.100.2", "two database nodes accepted writes at once: ...".

Times are seconds on the run's clock; samples are judged by their send time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from gameday.checks.resilience import Window, _in_send_order, _sec, failure_kind
from gameday.history import Sample
from gameday.verdict import Verdict, failed, passed

# How many consecutive answers make egress "back" after a heal (as a recovery needs).
BACK_CONSECUTIVE = 3


def _suffix(judged_from: str | None) -> str:
    return f" (judged from {judged_from})" if judged_from else ""


def _settled(samples: Iterable[Sample], until: float | None) -> list[Sample]:
    return [s for s in _in_send_order(samples) if until is None or s.sent <= until]


def egress_lost(
    samples: Iterable[Sample],
    *,
    zone: str,
    fault_start: float,
    took_hold: float,
    end: float,
    within_sec: float,
    until: float | None = None,
    judged_from: str | None = None,
) -> Verdict:
    """The zone lost its egress within `within_sec` of `fault_start`, and did not get it back
    before `end` (the heal): the loss moment is the send time of the first failure after the
    zone's last answer before `end`. `took_hold` is when the fault was in place (its
    inject-end); the message gives the loss against both. Samples sent after `until` (still
    in flight) are not judged, nor a request sent before `end` but answered after it (its
    retried SYN went through once the heal began: an answer of the heal, not of the fault)."""
    name = "egress_lost"
    why = _suffix(judged_from)
    during = [
        s
        for s in _settled(samples, until)
        if fault_start <= s.sent < end
        and (not s.ok or s.duration is None or s.sent + s.duration <= end)
    ]
    if not during:
        return failed(
            name, f"zone {zone}: no egress request was sent during the fault{why}: no evidence",
            lost_at=None,
        )  # fmt: skip
    last_ok = max((i for i, s in enumerate(during) if s.ok), default=-1)
    if last_ok == len(during) - 1:
        bad = sum(1 for s in during if not s.ok)
        return failed(
            name,
            f"zone {zone} kept its egress: its last request of the fault, sent at "
            f"{_sec(during[-1].sent)} s, was answered (through {during[-1].server or '?'}); "
            f"{bad} of {len(during)} failed during the fault{why}",
            lost_at=None, failed=bad, total=len(during),
        )  # fmt: skip
    lost = during[last_ok + 1]
    after = lost.sent - fault_start
    after_hold = lost.sent - took_hold
    kinds = Counter(failure_kind(s) for s in during[last_ok + 1 :])
    failures = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
    relapse = (
        f"; it had answered again at {_sec(during[last_ok].sent)} s after failing earlier"
        if last_ok >= 0 and any(not s.ok for s in during[:last_ok])
        else ""
    )
    text = (
        f"zone {zone} lost egress at {_sec(lost.sent)} s, {_sec(after)} s after the fault began "
        f"({_sec(after_hold)} s after it took hold); every one of its "
        f"{len(during) - last_ok - 1} requests since failed ({failures}){relapse}{why}"
    )
    measured = {"lost_at": lost.sent, "after_fault_sec": after, "after_hold_sec": after_hold}
    if after > within_sec:
        return failed(name, f"{text}: later than {_sec(within_sec)} s", **measured)
    return passed(name, f"{text}, within {_sec(within_sec)} s", **measured)


def egress_kept(
    samples: Iterable[Sample],
    *,
    zone: str,
    window: Window,
    until: float | None = None,
    judged_from: str | None = None,
) -> Verdict:
    """The zone's egress did not fail once during `window`."""
    name = "egress_kept"
    why = _suffix(judged_from)
    start, end = window
    inside = [s for s in _settled(samples, until) if start <= s.sent <= end]
    if not inside:
        return failed(
            name, f"zone {zone}: no egress request was sent during the fault{why}: no evidence",
            failed=None,
        )  # fmt: skip
    bad = [s for s in inside if not s.ok]
    through = sorted({s.server for s in inside if s.ok and s.server})
    via = f" (through {', '.join(through)})" if through else ""
    if bad:
        kinds = Counter(failure_kind(s) for s in bad)
        return failed(
            name,
            f"zone {zone} lost egress during the fault: {len(bad)} of {len(inside)} requests "
            f"failed, the first at {_sec(bad[0].sent)} s, the last at {_sec(bad[-1].sent)} s "
            f"({', '.join(f'{k} {n}' for k, n in kinds.most_common())}){via}{why}",
            failed=len(bad), total=len(inside),
        )  # fmt: skip
    return passed(
        name,
        f"zone {zone} never lost egress: all {len(inside)} requests during the fault were "
        f"answered{via}{why}",
        failed=0, total=len(inside),
    )  # fmt: skip


def egress_back(
    samples: Iterable[Sample],
    *,
    zone: str,
    heal_start: float,
    within_sec: float,
    until: float | None = None,
    judged_from: str | None = None,
) -> Verdict:
    """The zone reaches the internet again within `within_sec` of `heal_start`: the first of
    BACK_CONSECUTIVE answered requests in a row sent after it."""
    name = "egress_back"
    why = _suffix(judged_from)
    after = [s for s in _settled(samples, until) if s.sent >= heal_start]
    run = 0
    for i, s in enumerate(after):
        run = run + 1 if s.ok else 0
        if run == BACK_CONSECUTIVE:
            back = after[i - BACK_CONSECUTIVE + 1]
            delay = back.sent - heal_start
            text = (
                f"zone {zone} has egress again at {_sec(back.sent)} s, {_sec(delay)} s after "
                f"the heal began (through {back.server or '?'}){why}"
            )
            if delay > within_sec:
                return failed(name, f"{text}: later than {_sec(within_sec)} s", back_sec=delay)
            return passed(name, f"{text}, within {_sec(within_sec)} s", back_sec=delay)
    seen = f"{sum(1 for s in after if s.ok)} of {len(after)} requests answered"
    return failed(
        name,
        f"zone {zone} has no egress back after the heal began at {_sec(heal_start)} s "
        f"({seen}; {BACK_CONSECUTIVE} in a row needed){why}",
        back_sec=None,
    )  # fmt: skip


def own_nat_per_zone(
    samples_by_zone: Mapping[str, Iterable[Sample]],
    *,
    before: float | None = None,
    judged_from: str | None = None,
) -> Verdict:
    """Each zone reaches the internet, each through an address of its own (the seed: a NAT per
    zone, so losing one loses one zone's egress only). Judged on samples sent before `before`
    (the fault), the steady state."""
    name = "own_nat_per_zone"
    why = _suffix(judged_from)
    seen: dict[str, Counter[str]] = {}
    for zone, samples in sorted(samples_by_zone.items()):
        pool = [s for s in samples if before is None or s.sent < before]
        seen[zone] = Counter(s.server or "?" for s in pool if s.ok)
    shown = "; ".join(
        f"zone {z} through {', '.join(sorted(c)) or 'nothing'}" for z, c in seen.items()
    )
    silent = [z for z, c in seen.items() if not c]
    if silent:
        return failed(
            name, f"zone {silent[0]} never reached the internet before the fault ({shown}){why}",
            zones=dict(seen),
        )  # fmt: skip
    users: dict[str, list[str]] = {}
    for zone, counter in seen.items():
        for address in counter:
            users.setdefault(address, []).append(zone)
    shared = {a: zs for a, zs in users.items() if len(zs) > 1}
    if shared:
        address, zones = sorted(shared.items())[0]
        return failed(
            name,
            f"zones {' and '.join(zones)} both leave through {address}: one NAT serves "
            f"several zones, so losing it cuts them all ({shown}){why}",
            zones=dict(seen),
        )  # fmt: skip
    return passed(name, f"each zone has a NAT of its own: {shown}{why}", zones=dict(seen))


def one_writer_at_a_time(
    samples: Iterable[Sample],
    *,
    store: str,
    window: Window,
    until: float | None = None,
) -> Verdict:
    """During `window`, no round of the writable-nodes probe found two nodes of `store` that
    accepted a write: at most one primary (one master) at a time."""
    name = "one_writer_at_a_time"
    start, end = window
    rounds: dict[int, list[Sample]] = {}
    for s in _settled(samples, until):
        if start <= s.sent <= end:
            rounds.setdefault(s.seq, []).append(s)
    if not rounds:
        return failed(
            name, f"no {store} node was asked for a write during the fault: no evidence",
            split_rounds=None,
        )  # fmt: skip
    split: list[tuple[float, list[str]]] = []
    writers: list[str] = []
    for seq in sorted(rounds):
        accepted = sorted({s.server or "?" for s in rounds[seq] if s.ok})
        when = min(s.sent for s in rounds[seq])
        if len(accepted) > 1:
            split.append((when, accepted))
        for node in accepted:
            if not writers or writers[-1] != node:
                writers.append(node)
    if split:
        nodes = sorted({n for _, ns in split for n in ns})
        return failed(
            name,
            f"two {store} nodes accepted writes at once (split brain): {' and '.join(nodes)}, "
            f"in {len(split)} of {len(rounds)} rounds from {_sec(split[0][0])} s to "
            f"{_sec(split[-1][0])} s",
            split_rounds=len(split), nodes=nodes,
        )  # fmt: skip
    none = sum(1 for r in rounds.values() if not any(s.ok for s in r))
    sequence = " then ".join(writers) or "none"
    gaps = f"; {none} rounds found no node taking writes" if none else ""
    return passed(
        name,
        f"at most one {store} node accepted writes at a time during the fault "
        f"({len(rounds)} rounds; writer: {sequence}){gaps}",
        split_rounds=0, writers=writers,
    )  # fmt: skip


def zone_samples(samples: Sequence[Sample], prefix: str) -> dict[str, list[Sample]]:
    """Egress samples by zone, from probe names `<prefix><zone>`."""
    out: dict[str, list[Sample]] = {}
    for s in samples:
        if s.probe.startswith(prefix):
            out.setdefault(s.probe[len(prefix) :], []).append(s)
    return out
