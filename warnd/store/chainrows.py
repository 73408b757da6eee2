"""Rows ↔ core values for the chain, in bulk: the one place that knows both shapes.

The engine moves thousands of divisions per tick during a province-wide fan-out, so loading
and saving go through Core statements (one SELECT per batch, executemany UPDATEs, INSERT …
RETURNING) rather than the ORM's object-at-a-time unit of work.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warnd.chain.ladder import CallState, DivisionState
from warnd.store.tables import Call, Division, Event, Outbox

CALL_FIELDS = [f.name for f in fields(CallState)]
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
_D = Division.__table__  # type: ignore[attr-defined]
_C = Call.__table__  # type: ignore[attr-defined]
_O = Outbox.__table__  # type: ignore[attr-defined]
_E = Event.__table__  # type: ignore[attr-defined]
_CHUNK = 500  # IN (...) lists stay well below every backend's parameter limit


def to_state(row: Any, calls: Sequence[Any]) -> DivisionState:
    return DivisionState(
        code=row.code,
        level=row.level,
        **{name: getattr(row, name) for name in DIV_FIELDS},
        calls=tuple(CallState(**{n: getattr(c, n) for n in CALL_FIELDS}) for c in calls),
    )


async def load_many(
    session: AsyncSession, division_ids: Iterable[int]
) -> dict[int, tuple[Any, list[Any]]]:
    """Division rows and their calls (in creation order), by division id."""
    ids = sorted(set(division_ids))
    out: dict[int, tuple[Any, list[Any]]] = {}
    for i in range(0, len(ids), _CHUNK):
        part = ids[i : i + _CHUNK]
        divs = (await session.execute(select(_D).where(_D.c.id.in_(part)))).all()
        calls: dict[int, list[Any]] = defaultdict(list)
        rows = await session.execute(select(_C).where(_C.c.division_id.in_(part)).order_by(_C.c.id))
        for c in rows:
            calls[c.division_id].append(c)
        for d in divs:
            out[d.id] = (d, calls[d.id])
    return out


async def insert_divisions(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert division rows of one warning; returns their ids by code.

    RETURNING is matched by code, not by order: asking the driver to keep parameter order
    makes bulk inserts several times slower.
    """
    if not rows:
        return {}
    result = await session.execute(insert(_D).returning(_D.c.id, _D.c.code), rows)
    return {r.code: r.id for r in result}


async def save_many(
    session: AsyncSession,
    changes: Sequence[tuple[Any, Sequence[Any], DivisionState, dict[str, str]]],
) -> dict[tuple[int, str], int]:
    """Write new states over their rows; returns call ids by (division id, call key)."""
    div_updates: list[dict[str, Any]] = []
    call_updates: list[dict[str, Any]] = []
    call_inserts: list[dict[str, Any]] = []
    ids: dict[tuple[int, str], int] = {}
    for row, calls, state, phones in changes:
        upd = {name: getattr(state, name) for name in DIV_FIELDS}
        if any(getattr(row, n) != v for n, v in upd.items()):
            div_updates.append({"_id": row.id, **upd})
        old = {c.key: c for c in calls}
        for c in calls:
            ids[(row.id, c.key)] = c.id
        for cs in state.calls:
            prev = old.get(cs.key)
            values = {n: getattr(cs, n) for n in CALL_FIELDS}
            if prev is None:
                call_inserts.append(
                    {
                        **values,
                        "warning_id": row.warning_id,
                        "division_id": row.id,
                        "phone": phones.get(cs.contact_id, ""),
                    }
                )
            elif any(getattr(prev, n) != v for n, v in values.items()):
                call_updates.append({"_id": prev.id, **values})
    if div_updates:
        await session.execute(
            update(_D)
            .where(_D.c.id == bindparam("_id"))
            .values({n: bindparam(n) for n in DIV_FIELDS}),
            div_updates,
        )
    if call_updates:
        await session.execute(
            update(_C)
            .where(_C.c.id == bindparam("_id"))
            .values({n: bindparam(n) for n in CALL_FIELDS}),
            call_updates,
        )
    for i in range(0, len(call_inserts), 5000):
        part = call_inserts[i : i + 5000]
        result = await session.execute(
            insert(_C).returning(_C.c.id, _C.c.division_id, _C.c.key),
            part,
        )
        for r in result:
            ids[(r.division_id, r.key)] = r.id
    return ids


async def insert_outbox(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 5000):
        await session.execute(insert(_O), rows[i : i + 5000])


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), 5000):
        await session.execute(insert(_E), rows[i : i + 5000])
