"""The outbox: queued messages are claimed with a lease, sent, and marked.

A claimed row carries a lease; a process that dies mid-send leaves it to expire and another
pass sends it again under the same id (at-least-once, idempotent towards the gateway). A live
sender renews the lease of what it has not finished (``renew``) every third of a lease. On
PostgreSQL rows are claimed with ``FOR UPDATE SKIP LOCKED`` so that instances share the work.

Messages go out in order of due time; among those due at the same instant, in the order the
due-time index holds them (on SQLite by rowid: queueing order): no claim sorts all due rows.
On SQLite, claim and mark are driver-level statements (``warnd.store.bulk.SQLiteBulk``): a
sender spends most of its time here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from warnd.engine.context import Context
from warnd.store.bulk import SQLiteBulk, bulk_for
from warnd.store.tables import Call, Outbox, WarningRow

log = structlog.get_logger("warnd.outbox")

LEASE = timedelta(seconds=60)
RETRY_AFTER = timedelta(seconds=20)
_O = Outbox.__table__  # type: ignore[attr-defined]
_C = Call.__table__  # type: ignore[attr-defined]
_W = WarningRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    to: str
    purpose: str
    text: str
    warning: str
    contact: str
    drill: bool
    attempt: int | None
    rung: str | None
    reply_code: str | None
    token: str | None
    call_id: int | None
    tries: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed message."""

    id: str
    ok: bool
    channel: str | None = None
    error: str | None = None
    permanent: bool = False


async def claim(ctx: Context, now: datetime, limit: int = 500) -> list[Claimed]:
    """Take due messages (and ones whose lease ran out) for sending, under a lease."""
    async with ctx.store.write() as session:
        bulk = bulk_for(session)
        sqlite = bulk if isinstance(bulk, SQLiteBulk) else None
        if sqlite is not None:
            rows = await _due_sqlite(sqlite, session, now, limit)
        else:
            rows = await _due_core(ctx, session, now, limit)
        # rows: Claimed's fields (tries as stored), the call's state and attempts made, and
        # (SQLite) the rowid
        stale = [r for r in rows if _stale(r)]
        take = [r for r in rows if not _stale(r)] if stale else rows
        if stale:
            # Answered, cancelled, or overtaken by the next attempt: sending is pointless.
            if sqlite is not None:
                await _by_rowid(
                    sqlite,
                    session,
                    "UPDATE outbox SET state = 'cancelled', error = 'call no longer open'",
                    (),
                    [r[15] for r in stale],
                )
            else:
                await session.execute(
                    update(_O)
                    .where(_O.c.id.in_([r[0] for r in stale]))
                    .values(state="cancelled", error="call no longer open")
                )
        if take and sqlite is not None:
            await _by_rowid(
                sqlite,
                session,
                "UPDATE outbox SET state = 'sending', lease_until = ?, claimed_by = ?,"
                " tries = tries + 1",
                (sqlite.bind(_O, "lease_until", now + LEASE), ctx.instance),
                [r[15] for r in take],
            )
        elif take:
            await session.execute(
                update(_O)
                .where(_O.c.id.in_([r[0] for r in take]))
                .values(
                    state="sending",
                    lease_until=now + LEASE,
                    claimed_by=ctx.instance,
                    tries=_O.c.tries + 1,
                )
            )
    return [
        Claimed(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12] + 1)
        for r in take
    ]


async def _by_rowid(
    bulk: SQLiteBulk,
    session: AsyncSession,
    sql: str,
    params: tuple[Any, ...],
    rowids: list[int],
) -> None:
    """``sql WHERE rowid IN (...)``, in chunks that stay below SQLite's parameter limit."""
    for i in range(0, len(rowids), 5000):
        part = rowids[i : i + 5000]
        await bulk.execute(
            session, f"{sql} WHERE rowid IN ({', '.join('?' * len(part))})", (*params, *part)
        )


def _stale(r: tuple[Any, ...]) -> bool:
    """A call attempt whose call was answered, cancelled, or overtaken by the next attempt."""
    return r[2] == "call" and (r[13] != "active" or (r[7] or 0) < (r[14] or 0))


async def _due_sqlite(
    bulk: SQLiteBulk, session: AsyncSession, now: datetime, limit: int
) -> list[tuple[Any, ...]]:
    """The due rows in order of due time, then of queueing (rowid), reading no more than needed.

    SQLite walks ``ix_outbox_due`` (state, due_at, rowid) in order and stops at ``limit``. The
    portable query's tie-break on the message id would make it sort every due row first (a
    province-wide fan-out queues ~100,000 at the same instant) on every claim.
    """
    head = (
        'SELECT o.id, o."to", o.purpose, o.text, w."key", o.contact_id, o.drill, o.attempt,'
        " o.rung, o.reply_code, o.token, o.call_id, o.tries, c.state, c.attempts_made,"
        ' o.rowid, o.due_at FROM outbox AS o JOIN "warning" AS w ON w.id = o.warning_id'
        ' LEFT OUTER JOIN "call" AS c ON c.id = o.call_id'
    )
    pending = await bulk.execute(
        session,
        f"{head} WHERE o.state = 'pending' AND o.due_at <= ? ORDER BY o.due_at, o.rowid LIMIT ?",
        (bulk.bind(_O, "due_at", now), limit),
    )
    expired = await bulk.execute(
        session,
        f"{head} WHERE o.state = 'sending' AND o.lease_until <= ?"
        f" ORDER BY o.due_at, o.rowid LIMIT ?",
        (bulk.bind(_O, "lease_until", now), limit),
    )
    rows, late = pending.all(), expired.all()
    if late:  # both kinds, in one order (stored timestamps as Core reads them)
        rows = bulk.results(_O, _ORDER_COLS, [*rows, *late])
        rows.sort(key=lambda r: (r[16], r[15]))
        rows = rows[:limit]
    drill = bulk.reader(_O, "drill")
    return [(*r[:6], drill(r[6]), *r[7:]) for r in rows]


_ORDER_COLS = (*(None,) * 16, "due_at")


async def _due_core(
    ctx: Context, session: AsyncSession, now: datetime, limit: int
) -> list[tuple[Any, ...]]:
    """The portable claim (PostgreSQL): due rows, then rows whose lease ran out, each query
    ordered by due time alone so that the server walks ``ix_outbox_due`` (state, due_at) and
    stops at ``limit``. A tie-break on the id made it sort every due row on every claim — a
    province-wide fan-out queues ~100,000 at the same instant. Among rows due at the same
    instant the index hands them over in the order it holds them (about queueing order)."""
    cols = (
        _O.c.id,
        _O.c.to,
        _O.c.purpose,
        _O.c.text,
        _W.c.key,
        _O.c.contact_id,
        _O.c.drill,
        _O.c.attempt,
        _O.c.rung,
        _O.c.reply_code,
        _O.c.token,
        _O.c.call_id,
        _O.c.tries,
        _C.c.state.label("call_state"),
        _C.c.attempts_made,
        _O.c.due_at,
    )
    joined = _O.join(_W, _W.c.id == _O.c.warning_id).outerjoin(_C, _C.c.id == _O.c.call_id)
    rows: list[tuple[Any, ...]] = []
    for state, column in (("pending", _O.c.due_at), ("sending", _O.c.lease_until)):
        q = (
            select(*cols)
            .select_from(joined)
            .where(_O.c.state == state, column <= now)
            .order_by(_O.c.due_at)
            .limit(limit)
        )
        if not ctx.store.is_sqlite:
            # instances sharing the database: each takes rows nobody else holds
            q = q.with_for_update(skip_locked=True, of=_O)
        rows.extend(tuple(r) for r in await session.execute(q))
    rows.sort(key=lambda r: r[15])  # both kinds in one order of due time (a stable sort)
    return [r[:15] for r in rows[:limit]]


async def renew(ctx: Context, ids: list[str], now: datetime) -> int:
    """Extend the lease of messages this process claimed and is still sending.

    A claim at a channel's rate limit (500 messages at 5/s) or a gateway retrying within its
    deadline can outlast one lease; without renewal another instance would take the rest of
    the claim and ring the same people a second time through a provider that does not drop
    repeated ids. Rows another instance has taken meanwhile (``claimed_by``) are left alone.
    Returns the rows renewed.
    """
    if not ids:
        return 0
    renewed = 0
    async with ctx.store.write() as session:
        for i in range(0, len(ids), 500):
            result = await session.execute(
                update(_O)
                .where(
                    _O.c.id.in_(ids[i : i + 500]),
                    _O.c.claimed_by == ctx.instance,
                    _O.c.state == "sending",
                )
                .values(lease_until=now + LEASE)
            )
            renewed += int(getattr(result, "rowcount", 0) or 0)
    return renewed


async def mark(ctx: Context, outcomes: list[Outcome], now: datetime) -> None:
    """Record many send outcomes in one transaction (sent, failed, or back to pending)."""
    if not outcomes:
        return
    sent = [{"_id": o.id, "channel": o.channel} for o in outcomes if o.ok]
    failed = [
        {"_id": o.id, "error": (o.error or "")[:500]} for o in outcomes if not o.ok and o.permanent
    ]
    retry = [
        {"_id": o.id, "error": (o.error or "")[:500]}
        for o in outcomes
        if not o.ok and not o.permanent
    ]
    async with ctx.store.write() as session:
        bulk = bulk_for(session)
        if isinstance(bulk, SQLiteBulk):
            await _mark_sqlite(bulk, session, sent, failed, retry, now)
        else:
            await _mark_core(session, sent, failed, retry, now)
    for o in outcomes:
        if not o.ok:
            log.warning(
                "send_failed", message=o.id, permanent=o.permanent, error=(o.error or "")[:200]
            )


_LIVE = "(state = 'sending' OR state = 'pending')"


async def _mark_sqlite(
    bulk: SQLiteBulk,
    session: AsyncSession,
    sent: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    retry: list[dict[str, Any]],
    now: datetime,
) -> None:
    """The statements of ``_mark_core`` as driver-level executemany."""
    if sent:
        at = bulk.bind(_O, "sent_at", now)
        await bulk.execute(
            session,
            "UPDATE outbox SET state = 'sent', channel = ?, sent_at = ?, error = NULL,"
            f" lease_until = NULL WHERE id = ? AND {_LIVE}",
            [(o["channel"], at, o["_id"]) for o in sent],
        )
    if failed:
        await bulk.execute(
            session,
            f"UPDATE outbox SET state = 'failed', error = ?, lease_until = NULL"
            f" WHERE id = ? AND {_LIVE}",
            [(o["error"], o["_id"]) for o in failed],
        )
    if retry:
        due = bulk.bind(_O, "due_at", now + RETRY_AFTER)
        await bulk.execute(
            session,
            "UPDATE outbox SET state = 'pending', error = ?, lease_until = NULL, due_at = ?"
            f" WHERE id = ? AND {_LIVE}",
            [(o["error"], due, o["_id"]) for o in retry],
        )


async def _mark_core(
    session: AsyncSession,
    sent: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    retry: list[dict[str, Any]],
    now: datetime,
) -> None:
    live = or_(_O.c.state == "sending", _O.c.state == "pending")  # no IN: executemany
    if sent:
        await session.execute(
            update(_O)
            .where(_O.c.id == bindparam("_id"), live)
            .values(
                state="sent",
                channel=bindparam("channel"),
                sent_at=now,
                error=None,
                lease_until=None,
            ),
            sent,
        )
    if failed:
        await session.execute(
            update(_O)
            .where(_O.c.id == bindparam("_id"), live)
            .values(state="failed", error=bindparam("error"), lease_until=None),
            failed,
        )
    if retry:
        await session.execute(
            update(_O)
            .where(_O.c.id == bindparam("_id"), live)
            .values(
                state="pending",
                error=bindparam("error"),
                lease_until=None,
                due_at=now + RETRY_AFTER,
            ),
            retry,
        )


async def mark_sent(ctx: Context, message_id: str, channel: str, now: datetime) -> None:
    await mark(ctx, [Outcome(message_id, True, channel)], now)


async def mark_failed(
    ctx: Context, message_id: str, error: str, *, permanent: bool, now: datetime
) -> None:
    """Permanent: the attempt failed (the ladder goes on by its timers). Transient: retry later."""
    await mark(ctx, [Outcome(message_id, False, None, error, permanent)], now)
