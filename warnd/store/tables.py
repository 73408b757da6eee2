"""The database tables: the only place SQLModel table classes live.

Every timer is a row with a due time (``stage.due_at``, ``division.start_due``,
``call.next_due_at``, ``outbox.due_at``): the engine finds work by querying them, so a restart
resumes exactly where the last transaction left off. All times are stored as UTC.

The chain's history (the drill report's events, contracts §4) is not kept twice: an attempt or a
notice is its ``outbox`` row, an answer its ``ack`` row; only what has no row of its own
(``escalate``, ``unreached``, ``skip``) is an ``event`` row. ``seq`` orders the three among
themselves at one instant (``warnd.desk.views.history`` reads them back as one list). The hot tables
carry few indexes, partial where only some rows are looked up: a province-wide tick writes
~100,000 rows to each (docs/performance.md). For the same reason they declare no foreign keys:
the engine writes a row only after (or with) the rows it refers to and never deletes any, and
on PostgreSQL the per-row checks of ``COPY`` were a third of a fan-out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _where(condition: str) -> dict[str, Any]:
    """A partial index's condition, on both backends."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


def _json() -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class WarningRow(SQLModel, table=True):
    """One warning: the first message and every Update/Cancel that belongs to it."""

    __tablename__ = "warning"
    __table_args__ = (UniqueConstraint("sender", "identifier"),)
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True)  # identifier of the first message (contracts §4)
    sender: str
    identifier: str
    drill: bool = False
    state: str = Field(default="active", index=True)  # active|skipped|cancelled|expired
    reason: str | None = Field(default=None, sa_column=Column(Text))
    reason_code: str | None = None
    severity: str | None = None
    event: str | None = None
    headline: str | None = Field(default=None, sa_column=Column(Text))
    reference_at: datetime | None = _ts()  # T of the 631 timetable
    reference_kind: str | None = None
    expires_at: datetime | None = _ts()
    area: list[str] = _json()
    arrived_at: datetime | None = _ts(nullable=False)
    updated_at: datetime | None = _ts(nullable=False)
    note: str | None = Field(default=None, sa_column=Column(Text))


class Message(SQLModel, table=True):
    """A CAP message as received, raw bytes kept verbatim; ingested once per identity."""

    __tablename__ = "message"
    __table_args__ = (UniqueConstraint("sender", "identifier", "sent_utc"),)
    id: int | None = Field(default=None, primary_key=True)
    warning_id: int | None = Field(default=None, foreign_key="warning.id", index=True)
    sender: str
    identifier: str
    sent_utc: datetime | None = _ts(nullable=False)
    sent_text: str
    msg_type: str
    status: str
    severity: str | None = None
    origin: str = ""
    received_at: datetime | None = _ts(nullable=False)
    note: str | None = Field(default=None, sa_column=Column(Text))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Stage(SQLModel, table=True):
    """One 631 stage of one warning: a timer until it fires."""

    __tablename__ = "stage"
    __table_args__ = (
        UniqueConstraint("warning_id", "idx"),
        Index("ix_stage_due", "state", "due_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    warning_id: int = Field(foreign_key="warning.id")
    idx: int
    level: str
    lead_s: int
    due_at: datetime | None = _ts(nullable=False)
    state: str = "pending"  # pending|fired|cancelled|expired
    fired_at: datetime | None = _ts()
    divisions: list[str] = _json()


class Division(SQLModel, table=True):
    """A division of a warning's area being reached: its rung on the ladder and outcome."""

    __tablename__ = "division"
    # (warning_id, code) also serves every lookup by warning: no separate warning_id index
    __table_args__ = (
        UniqueConstraint("warning_id", "code"),
        Index("ix_division_start", "start_due", **_where("start_due IS NOT NULL")),
    )
    id: int | None = Field(default=None, primary_key=True)
    warning_id: int
    code: str
    name: str
    level: str
    county: str | None = None
    round: int = 1  # a severity rise starts the stage call again: round + 1
    rung: str = "stage"  # stage|backup|superior|duty|ended
    rung_started_at: datetime | None = _ts()
    reached_at: datetime | None = _ts()
    reached_by: str | None = None  # contact id
    reached_source: str | None = None
    unreached_at: datetime | None = _ts(index=True)  # put on the not-woken list
    resolved_at: datetime | None = _ts()
    resolved_by: str | None = None
    resolved_note: str | None = Field(default=None, sa_column=Column(Text))
    stopped: bool = False  # cancel / left the area: nothing more for it
    #: its stage fired and its calls are still to be started (instances share a stage's
    #: divisions in batches); NULL once started
    start_due: datetime | None = _ts()


class Call(SQLModel, table=True):
    """A sequence of attempts to one person on behalf of one division (contracts §3)."""

    __tablename__ = "call"
    # Few indexes: a province-wide escalation inserts and updates ~100,000 calls per tick, and
    # every index is written each time. (division_id, key) serves lookups by division,
    # (warning_id, contact_id) those by warning and an officer's lookup of a person.
    __table_args__ = (
        Index("ix_call_due", "next_due_at", **_where("state = 'active'")),
        UniqueConstraint("division_id", "key"),
        Index("ix_call_warning_contact", "warning_id", "contact_id"),
        Index("ix_call_token", "token", unique=True, **_where("token IS NOT NULL")),
    )
    id: int | None = Field(default=None, primary_key=True)
    warning_id: int
    division_id: int
    key: str  # "<round>:<rung>:<contact_id>", the core's name for the call
    contact_id: str
    phone: str  # kept: a redial still reaches the person if the directory is reloaded
    rung: str  # stage|backup|superior|duty
    round: int = 1
    start_at: datetime | None = _ts(nullable=False)
    attempts_made: int = 0
    next_due_at: datetime | None = _ts()
    state: str = "active"  # active|acked|failed|cancelled
    ended_at: datetime | None = _ts()
    acked_at: datetime | None = _ts()
    ack_source: str | None = None
    #: the four digits its messages print (an SMS reply names them); unique among the
    #: person's open calls
    reply_code: str | None = None
    token: str | None = None  # of its confirmation link (only when links are configured)
    last_message: str | None = None  # outbox id of its latest attempt


class Outbox(SQLModel, table=True):
    """One outbound message: an attempt of a call, or an update/lift notice.

    The row is the message's queue entry and its own record: its id is the idempotency key the
    gateway sees (contracts §5); ``at`` (when it was made) and ``seq`` place it in the history.
    Two indexes: the id, and the messages still to send in queueing order (partial: sent ones
    leave it); a third, partial, holds only bundled attempts (contracts §8).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "due_at", "seq", **_where("state = 'pending'")),
        Index("ix_outbox_bundle", "bundle", **_where("bundle IS NOT NULL")),
    )
    id: str = Field(primary_key=True)
    warning_id: int
    call_id: int | None = None
    message_id: int | None = None  # the CAP message an update/lift notice answers
    contact_id: str
    to: str
    purpose: str  # call|update|lift
    attempt: int | None = None
    rung: str | None = None
    text: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime | None = _ts(nullable=False)  # made (the history's time); never changes
    due_at: datetime | None = _ts(nullable=False)  # next try
    state: str = "pending"  # pending|sending|sent|failed|cancelled|bundled (sent with its lead)
    tries: int = 0
    channel: str | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    claimed_by: str | None = None  # the instance sending it (PostgreSQL, state sending)
    sent_at: datetime | None = _ts()
    drill: bool = False
    seq: int | None = Field(default=None, sa_column=Column(BigInteger))  # NULL: before 0003
    #: contracts §8: the id of the message that carried this attempt with others (the lead's
    #: own id on the lead); NULL: a message of its own
    bundle: str | None = None


class Ack(SQLModel, table=True):
    """An explicit answer: IVR key, SMS reply, link button, or an officer's record."""

    __tablename__ = "ack"
    # Answers arrive by the thousand per second: besides the key, only the dedupe key is
    # indexed for all of them; an officer's records are looked up by warning (status)
    __table_args__ = (
        UniqueConstraint("dedupe_key"),
        Index("ix_ack_officer", "warning_id", **_where("source = 'officer'")),
    )
    id: int | None = Field(default=None, primary_key=True)
    warning_id: int
    call_id: int | None = None
    division_id: int | None = None
    outbox_id: str | None = None
    contact_id: str | None = None
    source: str  # ivr|sms|link|officer|simulated
    received_at: datetime | None = _ts(nullable=False)
    by: str | None = None
    note: str | None = Field(default=None, sa_column=Column(Text))
    dedupe_key: str
    late: bool = False  # arrived after the call had ended
    #: it ended its call (the history's ``ack`` event); a second answer on an answered call is
    #: kept, not counted
    counted: bool = False
    seq: int | None = Field(default=None, sa_column=Column(BigInteger))


class Event(SQLModel, table=True):
    """The history events that have no row of their own: escalate, unreached, skip.

    (Stores upgraded from schema 0002 also keep their earlier notify/update/cancel/ack events
    here; ``warnd.desk.views.history`` reads both.)
    """

    __tablename__ = "event"
    __table_args__ = (Index("ix_event_warning_at", "warning_id", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    warning_id: int | None = None
    at: datetime | None = _ts(nullable=False)
    type: str
    contact_id: str | None = None
    division: str | None = None
    level: str | None = None
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    seq: int | None = Field(default=None, sa_column=Column(BigInteger))


class Receipt(SQLModel, table=True):
    """What a provider reported about one message: submitted, delivered, answered, no key, failed.

    Recorded for the record and never an acknowledgement (domain: a picked-up call without the
    key press does not count); ``ref`` is the provider's own id (CallId, BizId, SerialNo) so that
    a callback that does not echo warnd's message id can still be matched.
    """

    __tablename__ = "receipt"
    __table_args__ = (Index("ix_receipt_ref", "provider", "ref"),)
    id: int | None = Field(default=None, primary_key=True)
    warning_id: int | None = Field(default=None, foreign_key="warning.id", index=True)
    outbox_id: str | None = Field(default=None, index=True)
    contact_id: str | None = None
    provider: str  # channel type: aliyun|tencent|...
    ref: str | None = None
    status: str  # submitted|delivered|undelivered|answered|no_key|keypress|no_answer|failed
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    received_at: datetime | None = _ts(nullable=False)


class Instance(SQLModel, table=True):
    """A running daemon sharing a PostgreSQL store: its heartbeat keeps its claims.

    Messages it claimed (``outbox.claimed_by``) go back to the queue when it has been silent for
    two heartbeats (``warnd.store.postgres``). The heartbeat is the database server's time: it
    is about the process being alive, not about the chain's (injected) clock.
    """

    __tablename__ = "instance"
    id: str = Field(primary_key=True)
    host: str
    pid: int
    started_at: datetime | None = _ts(nullable=False)
    heartbeat_at: datetime | None = _ts(nullable=False)


class Counter(SQLModel, table=True):
    """Named counters of a SQLite store (``history``: the next ``seq``); PostgreSQL uses
    sequences instead, so that instances never wait on one row."""

    __tablename__ = "counter"
    name: str = Field(primary_key=True)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))
