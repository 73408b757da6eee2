"""The outbox: queued messages are claimed with a lease, sent, and marked.

A claimed row carries a lease; a process that dies mid-send leaves it to expire and another
pass sends it again under the same id (at-least-once, idempotent towards the gateway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import or_, select

from warnd.engine.context import Context
from warnd.store.tables import Call, Outbox, WarningRow

log = structlog.get_logger("warnd.outbox")

LEASE = timedelta(seconds=60)
RETRY_AFTER = timedelta(seconds=20)


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


async def claim(ctx: Context, now: datetime, limit: int = 200) -> list[Claimed]:
    """Take due messages (and ones whose lease ran out) for sending, under a lease."""
    out: list[Claimed] = []
    async with ctx.store.write() as session:
        q = (
            select(Outbox, WarningRow.key, Call.state, Call.attempts_made)
            .join(WarningRow, WarningRow.id == Outbox.warning_id)
            .outerjoin(Call, Call.id == Outbox.call_id)
            .where(
                or_(
                    (Outbox.state == "pending") & (Outbox.due_at <= now),  # type: ignore[operator]
                    (Outbox.state == "sending") & (Outbox.lease_until <= now),  # type: ignore[operator]
                )
            )
            .order_by(Outbox.due_at, Outbox.id)
            .limit(limit)
        )
        if not ctx.store.is_sqlite:
            q = q.with_for_update(skip_locked=True, of=Outbox)  # type: ignore[arg-type]
        for row, wkey, call_state, attempts_made in (await session.execute(q)).all():
            if row.purpose == "call" and (
                call_state != "active" or (row.attempt or 0) < (attempts_made or 0)
            ):
                # Answered, cancelled, or overtaken by the next attempt: sending is pointless.
                row.state, row.error = "cancelled", "call no longer open"
                continue
            row.state = "sending"
            row.lease_until = now + LEASE
            row.claimed_by = ctx.instance
            row.tries += 1
            out.append(
                Claimed(
                    row.id,
                    row.to,
                    row.purpose,
                    row.text,
                    wkey,
                    row.contact_id,
                    row.drill,
                    row.attempt,
                    row.rung,
                    row.reply_code,
                    row.token,
                    row.call_id,
                    row.tries,
                )
            )
    return out


async def mark_sent(ctx: Context, message_id: str, channel: str, now: datetime) -> None:
    async with ctx.store.write() as session:
        row = await session.get(Outbox, message_id)
        if row is not None and row.state in ("sending", "pending"):
            row.state, row.channel, row.sent_at, row.error, row.lease_until = (
                "sent",
                channel,
                now,
                None,
                None,
            )


async def mark_failed(
    ctx: Context, message_id: str, error: str, *, permanent: bool, now: datetime
) -> None:
    """Permanent: the attempt failed (the ladder goes on by its timers). Transient: retry later."""
    async with ctx.store.write() as session:
        row = await session.get(Outbox, message_id)
        if row is None or row.state not in ("sending", "pending"):
            return
        row.error = error[:500]
        row.lease_until = None
        if permanent:
            row.state = "failed"
        else:
            row.state, row.due_at = "pending", now + RETRY_AFTER
    log.warning("send_failed", message=message_id, permanent=permanent, error=error[:200])
