"""Rows ↔ core values for the chain: the one place that knows both shapes."""

from __future__ import annotations

from dataclasses import fields

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from warnd.chain.ladder import CallState, DivisionState
from warnd.store.tables import Call, Division

_CALL_FIELDS = [f.name for f in fields(CallState)]
_DIV_FIELDS = [
    "round",
    "rung",
    "rung_started_at",
    "reached_at",
    "reached_by",
    "reached_source",
    "unreached_at",
    "stopped",
]


def to_state(row: Division, calls: list[Call]) -> DivisionState:
    return DivisionState(
        code=row.code,
        level=row.level,
        round=row.round,
        rung=row.rung,
        rung_started_at=row.rung_started_at,
        reached_at=row.reached_at,
        reached_by=row.reached_by,
        reached_source=row.reached_source,
        unreached_at=row.unreached_at,
        stopped=row.stopped,
        calls=tuple(CallState(**{name: getattr(c, name) for name in _CALL_FIELDS}) for c in calls),
    )


async def load(session: AsyncSession, division_id: int) -> tuple[Division, list[Call]]:
    row = await session.get(Division, division_id)
    if row is None:
        raise LookupError(f"division row {division_id} not found")
    calls = list(
        (
            await session.execute(
                select(Call).where(Call.division_id == division_id).order_by(Call.id)
            )
        )
        .scalars()
        .all()
    )
    return row, calls


async def save(
    session: AsyncSession,
    row: Division,
    calls: list[Call],
    state: DivisionState,
    phones: dict[str, str],
) -> dict[str, Call]:
    """Write ``state`` back onto the rows; new calls are added. Returns calls by key (with ids)."""
    for name in _DIV_FIELDS:
        setattr(row, name, getattr(state, name))
    by_key = {c.key: c for c in calls}
    added = False
    for cs in state.calls:
        existing = by_key.get(cs.key)
        if existing is None:
            assert row.id is not None
            existing = Call(
                warning_id=row.warning_id,
                division_id=row.id,
                phone=phones.get(cs.contact_id, ""),
                **{name: getattr(cs, name) for name in _CALL_FIELDS},
            )
            session.add(existing)
            by_key[cs.key] = existing
            added = True
        else:
            for name in _CALL_FIELDS:
                value = getattr(cs, name)
                if getattr(existing, name) != value:
                    setattr(existing, name, value)
    if added:
        await session.flush()
    return by_key
