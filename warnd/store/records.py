"""The rows the engine reads and writes, as plain values, and the column layouts of its bulk
statements (tuples in these orders: a province-wide tick writes ~100,000 of each).

Only the call columns a ladder step can change are written back: key, person, rung, round and
start are a call's identity (``CALL_FIXED``) and never change once it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from warnd.core.chain.ladder import CallState, DivisionState

CALL_FIELDS = tuple(CallState._fields)
CALL_FIXED = ("key", "contact_id", "rung", "round", "start_at")  # a call's identity
CALL_CHANGING = CALL_FIELDS[len(CALL_FIXED) :]
DIV_FIELDS = (
    "round",
    "rung",
    "rung_started_at",
    "reached_at",
    "reached_by",
    "reached_source",
    "unreached_at",
    "stopped",
)
# to_state builds the core values positionally from these layouts
assert CALL_FIELDS[: len(CALL_FIXED)] == CALL_FIXED
assert list(DivisionState._fields) == ["code", "level", *DIV_FIELDS, "calls"]

#: a division as the engine loads it: identity, then its ladder fields
DIVISION_LOAD = ("id", "warning_id", "code", "name", "level", *DIV_FIELDS)
DIVISION_INSERT = ("id", "warning_id", "code", "name", "level", "county", *DIV_FIELDS, "start_due")
#: a call as the engine loads it: ids, what the messages need, then its ladder fields
CALL_LOAD = ("id", "division_id", "phone", "reply_code", "token", "last_message", *CALL_FIELDS)
CALL_INSERT = ("id", "warning_id", *CALL_LOAD[1:])
CALL_UPDATE = (*CALL_CHANGING, "last_message")
#: outbox rows as the engine makes them; ``seq`` last (see ``Tx.seq``)
OUTBOX_INSERT = (
    "id", "warning_id", "call_id", "message_id", "contact_id", "to", "purpose", "attempt", "rung",
    "text", "at", "due_at", "state", "tries", "drill", "seq",
)  # fmt: skip
EVENT_INSERT = ("warning_id", "at", "type", "contact_id", "division", "level", "data", "seq")
ACK_INSERT = (
    "warning_id", "call_id", "division_id", "outbox_id", "contact_id", "source", "received_at",
    "by", "note", "dedupe_key", "late", "counted", "seq",
)  # fmt: skip


@dataclass(slots=True)
class DivisionRow:
    """A division as stored: identity, and its ladder fields (``DIV_FIELDS`` order)."""

    id: int
    warning_id: int
    code: str
    name: str
    level: str
    values: tuple[Any, ...]


@dataclass(slots=True)
class CallRow:
    """A call as stored: ids, number, reply code, link token, latest attempt, ladder fields."""

    id: int
    division_id: int
    phone: str
    reply_code: str | None
    token: str | None
    last_message: str | None
    values: CallState


def to_state(row: DivisionRow, calls: list[CallRow]) -> DivisionState:
    v = row.values
    return DivisionState(
        row.code,
        row.level,
        v[0],
        v[1],
        v[2],
        v[3],
        v[4],
        v[5],
        v[6],
        v[7],
        tuple([c.values for c in calls]),
    )


@dataclass(slots=True)
class WarningRec:
    """A warning's row; ingest changes its fields and writes it back (``Tx.save_warning``)."""

    id: int
    key: str
    sender: str
    identifier: str
    drill: bool
    state: str
    reason: str | None
    reason_code: str | None
    severity: str | None
    event: str | None
    headline: str | None
    reference_at: datetime | None
    reference_kind: str | None
    expires_at: datetime | None
    area: list[str]
    arrived_at: datetime
    updated_at: datetime
    note: str | None


WARNING_COLS: tuple[str, ...] = WarningRec.__slots__


@dataclass(slots=True)
class StageRec:
    id: int
    warning_id: int
    idx: int
    level: str
    lead_s: int
    due_at: datetime
    state: str
