"""Rows ↔ core values for the chain, in bulk: the one place that knows both shapes.

The engine moves thousands of divisions per tick during a province-wide fan-out (a province is
~100,000 calls, outbox rows and history events per stage), so loading and saving are bulk
statements, issued the backend's way (``warnd.store.bulk``), never the ORM's
object-at-a-time unit of work.

Only the call columns a ladder step can change are written back: key, person, rung, round
and start are a call's identity (``CALL_FIXED``) and never change once it exists.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from warnd.chain.ladder import CallState, DivisionState
from warnd.store.bulk import bulk_for
from warnd.store.tables import Call, Division, Event, Outbox

CALL_FIELDS = list(CallState._fields)
CALL_FIXED = ("key", "contact_id", "rung", "round", "start_at")  # a call's identity
CALL_CHANGING = tuple(CALL_FIELDS[len(CALL_FIXED) :])
DIV_FIELDS = [
    "round",
    "rung",
    "rung_started_at",
    "reached_at",
    "reached_by",
    "reached_source",
    "unreached_at",
    "stopped",
]
# to_state builds the core values positionally from these layouts
assert tuple(CALL_FIELDS[: len(CALL_FIXED)]) == CALL_FIXED
assert list(DivisionState._fields) == ["code", "level", *DIV_FIELDS, "calls"]

_D: Table = Division.__table__  # type: ignore[attr-defined]
_C: Table = Call.__table__  # type: ignore[attr-defined]
_O: Table = Outbox.__table__  # type: ignore[attr-defined]
_E: Table = Event.__table__  # type: ignore[attr-defined]
_DIV_COLS = ("id", "warning_id", "code", "name", "level", *DIV_FIELDS)
_CALL_COLS = ("id", "division_id", "phone", *CALL_FIELDS)
#: the layouts of outbox and event rows as the engine makes them (tuples, not dicts: a
#: province-wide batch makes 100,000 of each, taken by the store as they are)
OUTBOX_COLS = (
    "id", "warning_id", "call_id", "contact_id", "to", "purpose", "attempt", "rung", "text",
    "due_at", "state", "tries", "reply_code", "token", "drill",
)  # fmt: skip
EVENT_COLS = ("warning_id", "at", "type", "warning_key", "contact_id", "division", "level", "data")


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
    """A call as stored: ids, phone, and its ladder fields as the core's value."""

    id: int
    division_id: int
    phone: str
    values: CallState

    @property
    def key(self) -> str:
        return str(self.values[0])

    @property
    def contact_id(self) -> str:
        return str(self.values[1])


def to_state(row: DivisionRow, calls: Sequence[CallRow]) -> DivisionState:
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


def _state_values(state: DivisionState) -> tuple[Any, ...]:
    return tuple(state[2:10])  # DIV_FIELDS


# ---- the chain's rows ---------------------------------------------------------------------


async def load_many(
    session: AsyncSession, division_ids: Iterable[int]
) -> dict[int, tuple[DivisionRow, list[CallRow]]]:
    """Division rows and their calls (in creation order), by division id."""
    bulk = bulk_for(session)
    ids = sorted(set(division_ids))
    divs = await bulk.select_in(session, _D, _DIV_COLS, "id", ids)
    calls: dict[int, list[CallRow]] = defaultdict(list)
    for c in await bulk.select_in(session, _C, _CALL_COLS, "division_id", ids):
        calls[c[1]].append(CallRow(c[0], c[1], c[2], CallState(*c[3:])))
    out: dict[int, tuple[DivisionRow, list[CallRow]]] = {}
    for d in divs:
        out[d[0]] = (DivisionRow(d[0], d[1], d[2], d[3], d[4], d[5:]), calls[d[0]])
    return out


async def insert_divisions(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert division rows of one warning; returns their ids by code."""
    if not rows:
        return {}
    cols = list(rows[0])
    get = itemgetter(*cols)
    ids = await bulk_for(session).insert_returning_ids(
        session, _D, cols, [get(r) for r in rows], ("code",)
    )
    return {r["code"]: i for r, i in zip(rows, ids, strict=True)}


async def save_many(
    session: AsyncSession,
    changes: Sequence[tuple[DivisionRow, Sequence[CallRow], DivisionState, dict[str, str]]],
) -> dict[tuple[int, str], int]:
    """Write new states over their rows; returns call ids by (division id, call key)."""
    bulk = bulk_for(session)
    div_updates: list[tuple[Any, ...]] = []
    call_updates: list[tuple[Any, ...]] = []
    call_inserts: list[tuple[Any, ...]] = []
    ids: dict[tuple[int, str], int] = {}
    fixed = len(CALL_FIXED)
    for row, calls, state, phones in changes:
        values = _state_values(state)
        if values != row.values:
            div_updates.append((*values, row.id))
        old: dict[str, CallRow] = {}
        for c in calls:
            key = c.values[0]
            old[key] = c
            ids[(row.id, key)] = c.id
        for cs in state.calls:
            new = cs
            prev = old.get(cs.key)
            if prev is None:
                call_inserts.append((row.warning_id, row.id, phones.get(cs.contact_id, ""), *new))
            elif new != prev.values:
                if new[:fixed] != prev.values[:fixed]:
                    raise ValueError(f"call {prev.id} would change its identity: {new[:fixed]}")
                call_updates.append((*new[fixed:], prev.id))
    await bulk.update_by_id(session, _D, DIV_FIELDS, div_updates)
    await bulk.update_by_id(session, _C, CALL_CHANGING, call_updates)
    new_ids = await bulk.insert_returning_ids(
        session,
        _C,
        ("warning_id", "division_id", "phone", *CALL_FIELDS),
        call_inserts,
        ("division_id", "key"),
    )
    for r, cid in zip(call_inserts, new_ids, strict=True):
        ids[(r[1], r[3])] = cid
    return ids


async def insert_outbox(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    """Rows in ``OUTBOX_COLS`` order."""
    await bulk_for(session).insert(session, _O, OUTBOX_COLS, rows)


async def insert_events(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    """Rows in ``EVENT_COLS`` order."""
    await bulk_for(session).insert(session, _E, EVENT_COLS, rows)
