"""The outbox: queued messages are claimed with a lease, sent, and marked.

A claimed row carries a lease; a process that dies mid-send leaves it to expire and another
pass sends it again under the same id (at-least-once, idempotent towards the gateway). On
PostgreSQL rows are claimed with ``FOR UPDATE SKIP LOCKED`` so that instances share the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import bindparam, or_, select, update

from warnd.engine.context import Context
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
        q = (
            select(
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
            )
            .select_from(
                _O.join(_W, _W.c.id == _O.c.warning_id).outerjoin(_C, _C.c.id == _O.c.call_id)
            )
            .where(
                or_(
                    (_O.c.state == "pending") & (_O.c.due_at <= now),
                    (_O.c.state == "sending") & (_O.c.lease_until <= now),
                )
            )
            .order_by(_O.c.due_at, _O.c.id)
            .limit(limit)
        )
        if not ctx.store.is_sqlite:
            q = q.with_for_update(skip_locked=True, of=_O)
        rows = (await session.execute(q)).all()
        stale = [
            r.id
            for r in rows
            if r.purpose == "call"
            and (r.call_state != "active" or (r.attempt or 0) < (r.attempts_made or 0))
        ]
        stale_set = set(stale)
        take = [r for r in rows if r.id not in stale_set]
        if stale:
            # Answered, cancelled, or overtaken by the next attempt: sending is pointless.
            await session.execute(
                update(_O)
                .where(_O.c.id.in_(stale))
                .values(state="cancelled", error="call no longer open")
            )
        if take:
            await session.execute(
                update(_O)
                .where(_O.c.id.in_([r.id for r in take]))
                .values(
                    state="sending",
                    lease_until=now + LEASE,
                    claimed_by=ctx.instance,
                    tries=_O.c.tries + 1,
                )
            )
    return [
        Claimed(
            r.id,
            r.to,
            r.purpose,
            r.text,
            r.key,
            r.contact_id,
            r.drill,
            r.attempt,
            r.rung,
            r.reply_code,
            r.token,
            r.call_id,
            r.tries + 1,
        )
        for r in take
    ]


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
    live = or_(_O.c.state == "sending", _O.c.state == "pending")  # no IN: executemany
    async with ctx.store.write() as session:
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
    for o in outcomes:
        if not o.ok:
            log.warning(
                "send_failed", message=o.id, permanent=o.permanent, error=(o.error or "")[:200]
            )


async def mark_sent(ctx: Context, message_id: str, channel: str, now: datetime) -> None:
    await mark(ctx, [Outcome(message_id, True, channel)], now)


async def mark_failed(
    ctx: Context, message_id: str, error: str, *, permanent: bool, now: datetime
) -> None:
    """Permanent: the attempt failed (the ladder goes on by its timers). Transient: retry later."""
    await mark(ctx, [Outcome(message_id, False, None, error, permanent)], now)
