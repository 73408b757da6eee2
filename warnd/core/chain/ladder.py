"""Calls, attempts and the escalation ladder of one division (contracts §3).

``step(division, event, now, rules, people) -> (division, commands)`` is the whole rule book
for reaching one place: it never reads a clock, a database or the network. The engine loads a
``DivisionState``, feeds it one event with the ``Rules`` of its policy and the ``People`` to call
at each rung, stores what comes back and carries out the commands.

Rules, in the contract's words:
- A call is a sequence of attempts to one person on behalf of one division: attempt 1 at the
  call's start, attempt k one ``window`` after attempt k-1, up to ``attempts``; the call fails one
  window after its last attempt. (After downtime an overdue attempt goes out at once and the
  next is timed from it, so calls are never bunched.)
- An acknowledgement ends the call. The division is reached when anyone called on its behalf
  acknowledges. A persons' own calls run to their end regardless; calls at later rungs stop.
- When every call of the current rung has ended and the division is not reached, it moves to
  the next rung of the ladder: ``backup`` (B persons), ``superior`` (A persons of the enclosing
  division), ``duty`` (the not-woken list of its county, and the county's duty persons) — what
  each rung does is a row of ``warnd.core.chain.rungs``. A rung with nobody to call is skipped at
  once (a rung that lists the division on the not-woken list still lists it). After the last
  rung the ladder ends.
- Bundling (contracts §8, the rule itself in ``warnd.core.chain.bundle``) brings attempts forward
  with two events: ``Early`` makes a running call's next attempt now (the next one is timed
  from it), ``StartOne`` calls one A person of a division whose stage has not fired yet (the
  stage, when it fires, calls the others; a call made ahead escalates only once it has).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from warnd.core.chain.rungs import STAGE as STAGE  # where it lived before: still importable
from warnd.core.chain.rungs import get as rung_row

ENDED = "ended"


class People(Protocol):
    """Who can be called for a division at each rung (the directory, seen by the core)."""

    def for_rung(self, code: str, rung: str) -> tuple[str, ...]:
        """Contact ids to call for division ``code`` at ``rung``."""
        ...


@dataclass(frozen=True, slots=True)
class Rules:
    window: timedelta
    attempts: int
    ladder: tuple[str, ...]

    @property
    def rungs(self) -> tuple[str, ...]:
        return (STAGE, *self.ladder)


class CallState(NamedTuple):
    """One call's state. A NamedTuple, not a dataclass: a province-wide fan-out builds a
    million of them, and a frozen dataclass's ``__init__`` costs several times a tuple's."""

    key: str  # unique within the division: "<round>:<rung>:<contact_id>"
    contact_id: str
    rung: str
    round: int
    start_at: datetime
    attempts_made: int = 0
    next_due_at: datetime | None = None
    state: str = "active"  # active|acked|failed|cancelled
    ended_at: datetime | None = None
    acked_at: datetime | None = None
    ack_source: str | None = None

    @property
    def active(self) -> bool:
        return self.state == "active"


class DivisionState(NamedTuple):
    """One division's place on the ladder and its calls (immutable, built like ``CallState``)."""

    code: str
    level: str
    round: int = 0
    rung: str = STAGE
    rung_started_at: datetime | None = None
    reached_at: datetime | None = None
    reached_by: str | None = None
    reached_source: str | None = None
    unreached_at: datetime | None = None
    stopped: bool = False
    calls: tuple[CallState, ...] = ()

    @property
    def reached(self) -> bool:
        return self.reached_at is not None

    def call(self, key: str) -> CallState | None:
        for c in self.calls:
            if c.key == key:
                return c
        return None


# The hot paths below build states positionally (``_replace`` costs several times more, and a
# province-wide fan-out makes hundreds of thousands of them): keep them in step with the field
# order above.
assert list(CallState._fields) == [
    "key", "contact_id", "rung", "round", "start_at", "attempts_made", "next_due_at", "state",
    "ended_at", "acked_at", "ack_source",
]  # fmt: skip
assert list(DivisionState._fields) == [
    "code", "level", "round", "rung", "rung_started_at", "reached_at", "reached_by",
    "reached_source", "unreached_at", "stopped", "calls",
]  # fmt: skip


def _with_calls(div: DivisionState, calls: tuple[CallState, ...]) -> DivisionState:
    """``div._replace(calls=calls)``."""
    return DivisionState(
        div.code,
        div.level,
        div.round,
        div.rung,
        div.rung_started_at,
        div.reached_at,
        div.reached_by,
        div.reached_source,
        div.unreached_at,
        div.stopped,
        calls,
    )


def _ended(c: CallState, state: str, now: datetime) -> CallState:
    """``c._replace(state=state, ended_at=now, next_due_at=None)``."""
    return CallState(
        c.key,
        c.contact_id,
        c.rung,
        c.round,
        c.start_at,
        c.attempts_made,
        None,
        state,
        now,
        c.acked_at,
        c.ack_source,
    )


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """The division's stage fires (again, after a severity rise: a new round)."""


@dataclass(frozen=True, slots=True)
class CallDue:
    key: str


@dataclass(frozen=True, slots=True)
class Acked:
    key: str
    source: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Cancelled: every active call of the division ends, nothing more is started."""


@dataclass(frozen=True, slots=True)
class Early:
    """Bundling (contracts §8): the call's next attempt, due by ``until``, is made now."""

    key: str
    until: datetime


@dataclass(frozen=True, slots=True)
class StartOne:
    """Bundling (contracts §8): the division's stage is about to fire; one of its persons is
    called now. The stage, when it fires, calls everyone else and not this person again."""

    contact_id: str


Event = Start | CallDue | Acked | Stop | Early | StartOne


# ---- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendAttempt:
    call_key: str
    contact_id: str
    attempt: int
    rung: str


@dataclass(frozen=True, slots=True)
class Record:
    """A history event (contracts §4 drill report types: notify, ack, escalate, unreached)."""

    type: str
    contact_id: str | None = None
    data: tuple[tuple[str, object], ...] = ()


Command = SendAttempt | Record


# ---- the rules ----------------------------------------------------------------------------


def step(
    div: DivisionState, event: Event, now: datetime, rules: Rules, people: People
) -> tuple[DivisionState, list[Command]]:
    """Apply one event to one division; return its new state and what to do."""
    out: list[Command] = []
    if isinstance(event, Start):
        div = _start_round(div, now, rules, people, out)
    elif isinstance(event, CallDue):
        div = _call_due(div, event.key, now, rules, people, out)
    elif isinstance(event, Acked):
        div = _acked(div, event, now, out)
    elif isinstance(event, Stop):
        div = div._replace(stopped=True, calls=_end_calls(div.calls, _every, now))
    elif isinstance(event, Early):
        call = div.call(event.key)
        if (
            call is not None
            and call.active
            and call.attempts_made < rules.attempts
            and call.next_due_at is not None
            and call.next_due_at <= event.until
        ):
            div = _attempt(div, event.key, now, rules, out)
    elif isinstance(event, StartOne):
        div = _start_one(div, event.contact_id, now, rules, people, out)
    return div, out


def _early(div: DivisionState) -> bool:
    """Calls started ahead of the stage (``StartOne``), the stage not fired yet."""
    return div.round > 0 and div.rung == STAGE and div.rung_started_at is None


def _start_one(
    div: DivisionState,
    contact_id: str,
    now: datetime,
    rules: Rules,
    people: People,
    out: list[Command],
) -> DivisionState:
    if div.stopped or not (div.round == 0 or _early(div)):
        return div  # the stage has started (or is stopped): it calls this person itself
    if contact_id not in people.for_rung(div.code, STAGE):
        return div
    rnd = div.round or 1
    key = f"{rnd}:{STAGE}:{contact_id}"
    if div.call(key) is not None:
        return div
    call = CallState(key, contact_id, STAGE, rnd, now)
    div = div._replace(round=rnd, rung=STAGE, calls=(*div.calls, call))
    return _attempt(div, key, now, rules, out)


def next_due(div: DivisionState) -> datetime | None:
    """The earliest time this division needs the engine again."""
    dues = [c.next_due_at for c in div.calls if c.active and c.next_due_at is not None]
    return min(dues) if dues else None


def _start_round(
    div: DivisionState, now: datetime, rules: Rules, people: People, out: list[Command]
) -> DivisionState:
    if div.stopped:
        return div
    if _early(div):
        # The stage fires where some of its persons were called ahead (bundling): the rest now.
        return _enter_rung(div, 0, now, rules, people, out)
    # A new round supersedes what is still running of the last one.
    calls = _end_calls(div.calls, _every, now)
    div = DivisionState(
        div.code,
        div.level,
        div.round + 1,
        div.rung,
        div.rung_started_at,
        None,  # reached_at
        None,  # reached_by
        None,  # reached_source
        None,  # unreached_at
        div.stopped,
        calls,
    )
    return _enter_rung(div, 0, now, rules, people, out)


def _enter_rung(
    div: DivisionState,
    index: int,
    now: datetime,
    rules: Rules,
    people: People,
    out: list[Command],
) -> DivisionState:
    """Move to rung ``index`` (skipping rungs with nobody to call) and start its calls."""
    rungs = rules.rungs
    while index < len(rungs):
        rung = rungs[index]
        persons = people.for_rung(div.code, rung)
        if rung == STAGE and div.calls and _early(div):
            called = {c.contact_id for c in div.calls if c.round == div.round and c.rung == rung}
            if called & set(persons):
                persons = tuple(p for p in persons if p not in called)
                if not persons:  # everyone was called ahead: the stage has started
                    div = div._replace(rung=rung, rung_started_at=now)
                    # (an early call that already failed — its stage put off by an update —
                    # moves the division on now)
                    return _maybe_escalate(div, now, rules, people, out)
        if rung != STAGE:
            not_woken = rung_row(rung).not_woken
            if persons or not_woken:
                out.append(Record("escalate", None, (("rung", rung),)))
            if not_woken and div.unreached_at is None:
                div = div._replace(unreached_at=now)
                out.append(Record("unreached", None, (("rung", rung),)))
        if persons:
            if len(set(persons)) != len(persons):  # the same person twice: the general path
                new = tuple(
                    CallState(f"{div.round}:{rung}:{cid}", cid, rung, div.round, now)
                    for cid in persons
                )
                div = div._replace(rung=rung, rung_started_at=now, calls=div.calls + new)
                for call in new:
                    div = _attempt(div, call.key, now, rules, out)
                return div
            # Each new call made and attempted at once: what ``_attempt`` does to a fresh call.
            rnd, due = div.round, now + rules.window
            started: list[CallState] = []
            for cid in persons:
                key = f"{rnd}:{rung}:{cid}"
                started.append(CallState(key, cid, rung, rnd, now, 1, due))
                out.append(SendAttempt(key, cid, 1, rung))
                out.append(Record("notify", cid, (("attempt", 1), ("rung", rung))))
            return DivisionState(
                div.code,
                div.level,
                rnd,
                rung,
                now,  # rung_started_at
                div.reached_at,
                div.reached_by,
                div.reached_source,
                div.unreached_at,
                div.stopped,
                div.calls + tuple(started),
            )
        index += 1
    return div._replace(rung=ENDED, rung_started_at=now)


def _attempt(
    div: DivisionState, key: str, now: datetime, rules: Rules, out: list[Command]
) -> DivisionState:
    call = div.call(key)
    assert call is not None
    n = call.attempts_made + 1
    call = CallState(
        call.key,
        call.contact_id,
        call.rung,
        call.round,
        call.start_at,
        n,
        now + rules.window,
        call.state,
        call.ended_at,
        call.acked_at,
        call.ack_source,
    )
    out.append(SendAttempt(call.key, call.contact_id, n, call.rung))
    out.append(Record("notify", call.contact_id, (("attempt", n), ("rung", call.rung))))
    return _put(div, call)


def _call_due(
    div: DivisionState,
    key: str,
    now: datetime,
    rules: Rules,
    people: People,
    out: list[Command],
) -> DivisionState:
    call = div.call(key)
    if call is None or not call.active or call.next_due_at is None or call.next_due_at > now:
        return div  # stale timer (already handled, acked or cancelled): nothing to do
    if call.attempts_made < rules.attempts:
        return _attempt(div, key, now, rules, out)
    div = _put(div, _ended(call, "failed", now))
    return _maybe_escalate(div, now, rules, people, out)


def _maybe_escalate(
    div: DivisionState, now: datetime, rules: Rules, people: People, out: list[Command]
) -> DivisionState:
    if div.reached or div.stopped or div.rung == ENDED or div.rung_started_at is None:
        return div  # (no start: calls made ahead of a stage that has not fired)
    rnd, rung = div.round, div.rung
    for c in div.calls:
        if c.state == "active" and c.round == rnd and c.rung == rung:
            return div
    return _enter_rung(div, rules.rungs.index(div.rung) + 1, now, rules, people, out)


def _acked(div: DivisionState, event: Acked, now: datetime, out: list[Command]) -> DivisionState:
    call = div.call(event.key)
    if call is None or call.state == "acked":
        return div  # unknown or already acknowledged: idempotent
    late = not call.active
    source = event.source
    call = CallState(  # call._replace(state="acked", acked_at=now, ack_source=source, ...)
        call.key,
        call.contact_id,
        call.rung,
        call.round,
        call.start_at,
        call.attempts_made,
        None,  # next_due_at
        "acked",
        call.ended_at or now,
        now,  # acked_at
        source,
    )
    data: tuple[tuple[str, object], ...] = (("rung", call.rung), ("source", source))
    if late:
        data += (("late", True),)
    out.append(Record("ack", call.contact_id, data))
    key = call.key
    calls = tuple(call if c.key == key else c for c in div.calls)
    if div.reached:
        return _with_calls(div, calls)
    # Reached: calls made on the division's behalf at later rungs stop; A calls run on.
    return DivisionState(
        div.code,
        div.level,
        div.round,
        div.rung,
        div.rung_started_at,
        now,  # reached_at
        call.contact_id,  # reached_by
        source,  # reached_source
        div.unreached_at,
        div.stopped,
        _end_calls(calls, _not_stage, now),
    )


def _not_stage(call: CallState) -> bool:
    return call.rung != STAGE


def _every(_call: CallState) -> bool:
    return True


def _end_calls(
    calls: Sequence[CallState], pick: Callable[[CallState], bool], now: datetime
) -> tuple[CallState, ...]:
    return tuple(
        _ended(c, "cancelled", now) if c.state == "active" and pick(c) else c for c in calls
    )


def _put(div: DivisionState, call: CallState) -> DivisionState:
    key = call.key
    return _with_calls(div, tuple(call if c.key == key else c for c in div.calls))
