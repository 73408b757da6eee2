"""Read-only views of the store for the duty desk: status, the not-woken list.

The figures come from aggregate queries over the chain's rows (``division``, ``call``,
``outbox``) along their ``warning_id`` / ``division_id`` indexes and a call's latest attempt
(``call.last_message``); the per-person
listing reads only the rows it shows unless asked for all of them. Rows are read with plain SQL
through ``warnd.desk.views.reader`` (the stdlib ``sqlite3`` or ``asyncpg``, no SQLAlchemy: importing
it costs more than the queries of ``warnd status``) and timestamps parsed once per distinct
value; per-person values are NamedTuples (immutable, typed, cheap at 100,000 rows). Nothing
here writes, so every command built on it works while the daemon is down.

The 631 deadline of a level (``deadlines``, from ``warnd.core.deadline``): a level must be reached
before the next, narrower level of the timetable is warned (county before the townships'
T − 3h, townships before the villages' T − 1h), and the last level before the onset T itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from warnd.core.chain import rungs
from warnd.core.deadline import deadlines
from warnd.core.division import DIRECTORY_LEVELS

#: the levels in the order every listing shows them (the directory's, widest first)
LEVEL_ORDER: tuple[str, ...] = DIRECTORY_LEVELS


class Timestamps:
    """Stored timestamps → aware UTC datetimes, memoised: a fan-out repeats a few instants.

    SQLite hands back the stored text (``2025-06-14 00:00:00.000000``, UTC by convention of
    ``UTCDateTime``); PostgreSQL an aware datetime.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[Any, datetime] = {}

    def __call__(self, value: Any) -> datetime | None:
        if value is None:
            return None
        out = self._seen.get(value)
        if out is None:
            t = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            out = self._seen[value] = (
                t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
            )
        return out


# ---- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StageView:
    """One 631 stage of a warning, with the deadline its level must be reached by."""

    level: str
    lead: timedelta
    due_at: datetime
    state: str  # pending|fired|cancelled|expired
    fired_at: datetime | None
    deadline: datetime | None


@dataclass(frozen=True, slots=True)
class Counts:
    """Progress of a set of divisions and the persons called on their behalf."""

    divisions: int = 0
    reached: int = 0
    escalated: int = 0  # moved past the stage rung (B, superior, duty)
    not_woken: int = 0  # on the duty office's list and not yet resolved
    overdue: int = 0  # past the level's 631 deadline, not reached
    persons_notified: int = 0  # distinct persons called (every rung)
    persons_acknowledged: int = 0
    redialling: int = 0  # persons whose open call is past its first attempt
    open_calls: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Counts)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(Counts)}


@dataclass(frozen=True, slots=True)
class LevelView:
    level: str
    stage: StageView | None  # the level's (last) stage
    counts: Counts


@dataclass(frozen=True, slots=True)
class WarningView:
    id: int
    key: str
    sender: str
    headline: str | None
    event: str | None
    severity: str | None
    drill: bool
    state: str  # active|skipped|cancelled
    reason: str | None
    onset: datetime | None  # T of the timetable (onset, else effective, else sent)
    onset_kind: str | None
    expires_at: datetime | None
    arrived_at: datetime | None
    updated_at: datetime | None
    stages: tuple[StageView, ...] = ()
    levels: tuple[LevelView, ...] = ()

    @property
    def totals(self) -> Counts:
        total = Counts()
        for lv in self.levels:
            total = total + lv.counts
        return total

    def next_stage(self) -> StageView | None:
        pending = [s for s in self.stages if s.state == "pending"]
        return min(pending, key=lambda s: s.due_at) if pending else None

    def time_to_onset(self, now: datetime) -> timedelta | None:
        return None if self.onset is None else self.onset - now

    def overdue_levels(self, now: datetime) -> tuple[str, ...]:
        """Levels whose 631 deadline has passed."""
        return tuple(
            lv.level
            for lv in self.levels
            if lv.stage and lv.stage.deadline is not None and now > lv.stage.deadline
        )


class PersonView(NamedTuple):
    """One person called on behalf of one division (rounds merged: the latest one counts)."""

    contact_id: str
    rung: str  # stage|backup|superior|duty
    rank: str  # A|B|duty (a superior is the parent's A)
    phone: str
    attempts: int
    state: str  # active|acked|failed|cancelled
    started_at: datetime | None
    last_attempt_at: datetime | None
    last_channel: str | None
    last_delivery: str | None  # the last attempt's outbox state
    next_due_at: datetime | None
    acknowledged_at: datetime | None
    ack_source: str | None
    ack_by: str | None = None
    ack_note: str | None = None
    name: str | None = None
    #: its last attempt went out in one message with other warnings' (contracts §8)
    bundled: bool = False

    @property
    def acknowledged(self) -> bool:
        return self.state == "acked"

    @property
    def pending(self) -> bool:
        """Not answered and not stopped (the chain may still call, or has given up)."""
        return self.state in ("active", "failed")


class DivisionView(NamedTuple):
    code: str
    name: str
    level: str
    rung: str
    reached_at: datetime | None
    reached_by: str | None
    reached_source: str | None
    not_woken_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolved_note: str | None
    stopped: bool
    deadline: datetime | None
    escalations: tuple[str, ...]
    persons: tuple[PersonView, ...] = ()

    def overdue(self, now: datetime) -> bool:
        """Past its 631 deadline and nobody has answered for it."""
        return (
            self.reached_at is None
            and not self.stopped
            and self.deadline is not None
            and now > self.deadline
        )

    @property
    def on_list(self) -> bool:
        return self.not_woken_at is not None and self.resolved_at is None


@dataclass(frozen=True, slots=True)
class Detail:
    """A warning's divisions; ``total`` divisions match the filters, the first ones are here."""

    warning: WarningView
    divisions: tuple[DivisionView, ...]
    total: int


class ToCall(NamedTuple):
    """A number the duty officer can ring for a not-woken division."""

    contact_id: str
    rung: str
    rank: str
    phone: str
    state: str
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class NotWoken:
    """An entry of the duty office's not-woken (未叫醒) list."""

    warning_key: str
    headline: str | None
    drill: bool
    warning_state: str
    code: str
    name: str
    level: str
    since: datetime
    reached_at: datetime | None
    reached_by: str | None
    reached_source: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolved_note: str | None
    to_call: tuple[ToCall, ...] = field(default=())

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None


# ---- rules --------------------------------------------------------------------------------


def escalations_of(called: Iterable[str], not_woken: bool) -> tuple[str, ...]:
    """The rungs a division has been moved to (it has calls at ``called``), in table order.

    A division on the not-woken list has reached a rung that lists it (``warnd.core.chain.rungs``:
    ``not_woken``), even when that rung had nobody to call.
    """
    seen = set(called) - {rungs.STAGE}
    listing = [r.name for r in rungs.table() if r.not_woken]
    if not_woken and listing and not seen.intersection(listing):
        seen.add(listing[0])
    return tuple(r.name for r in rungs.table() if r.name in seen)


def level_key(level: str) -> int:
    return LEVEL_ORDER.index(level) if level in LEVEL_ORDER else len(LEVEL_ORDER)


from warnd.desk.views.status import detail, find, warning, warnings  # noqa: E402
from warnd.desk.views.unreached import not_woken  # noqa: E402

__all__ = [
    "Counts",
    "Detail",
    "DivisionView",
    "LevelView",
    "NotWoken",
    "PersonView",
    "StageView",
    "Timestamps",
    "ToCall",
    "WarningView",
    "deadlines",
    "detail",
    "find",
    "not_woken",
    "warning",
    "warnings",
]
