"""Acknowledgements: an explicit answer closes a call and reaches its division (contracts §6).

Every path (IVR key, SMS reply, link button, officer record, drill responder) ends in
``acknowledge``; each answer is stored once under its dedupe key, so a retried hook is harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from warnd import metrics
from warnd.chain import ladder
from warnd.engine.calls import Job, run_jobs
from warnd.engine.context import Context, message_id_of
from warnd.store.tables import Ack, Call, Division, Outbox, WarningRow

log = structlog.get_logger("warnd.engine")


@dataclass(frozen=True, slots=True)
class AckResult:
    ok: bool
    reason: str  # Chinese-first, shown to the person or the officer
    warning: str | None = None
    contact_id: str | None = None
    duplicate: bool = False
    # what a duty officer's record says (``ack_by_officer`` only): the place, who recorded it,
    # whether it resolved a not-woken entry, and when and how the call was answered
    division: str | None = None
    division_name: str | None = None
    level: str | None = None
    by: str | None = None
    resolved: bool = False
    at: datetime | None = None
    source: str | None = None


async def acknowledge_call(
    ctx: Context,
    session: AsyncSession,
    call: Call,
    *,
    source: str,
    dedupe_key: str,
    outbox_id: str | None,
    by: str | None,
    note: str | None,
    now: datetime,
) -> AckResult:
    w = await session.get(WarningRow, call.warning_id)
    assert w is not None and call.id is not None
    existing = (
        await session.execute(select(col(Ack.id)).where(col(Ack.dedupe_key) == dedupe_key))
    ).first()
    if existing is not None:
        return AckResult(True, "已确认（重复）", w.key, call.contact_id, duplicate=True)
    late = call.state != "active"
    session.add(
        Ack(
            warning_id=call.warning_id,
            call_id=call.id,
            division_id=call.division_id,
            outbox_id=outbox_id,
            contact_id=call.contact_id,
            source=source,
            received_at=now,
            by=by,
            note=note,
            dedupe_key=dedupe_key,
            late=late,
        )
    )
    if w.state == "active" or w.state == "cancelled":
        await run_jobs(ctx, session, [Job(call.division_id, [ladder.Acked(call.key, source)])], now)
    if call.start_at is not None and not late:
        metrics.TIME_TO_ACK.labels(source).observe((now - call.start_at).total_seconds())
    log.info(
        "ack_recorded",
        warning=w.key,
        contact=call.contact_id,
        source=source,
        call=call.id,
        late=late,
    )
    return AckResult(True, "已确认收到，谢谢", w.key, call.contact_id)


async def ack_message(
    ctx: Context,
    outbox_id: str,
    *,
    source: str,
    dedupe_key: str | None = None,
    by: str | None = None,
    note: str | None = None,
) -> AckResult:
    """Acknowledge the call that an attempt (outbox message) belongs to.

    ``outbox_id`` may be the id of a fallback route (``<id>-<n>``): the same attempt.
    """
    now = ctx.now()
    outbox_id = message_id_of(outbox_id)
    async with ctx.store.write() as session:
        msg = await session.get(Outbox, outbox_id)
        if msg is None or msg.call_id is None:
            return AckResult(False, "未找到该呼叫 (unknown attempt)")
        call = await session.get(Call, msg.call_id)
        assert call is not None
        return await acknowledge_call(
            ctx,
            session,
            call,
            source=source,
            dedupe_key=dedupe_key or f"{source}:{outbox_id}",
            outbox_id=outbox_id,
            by=by,
            note=note,
            now=now,
        )


#: A confirmation link works for this long after its attempt was (last) queued: people read the
#: SMS late (a phone silenced at night) and a late answer is still worth recording, but a link
#: forwarded or left in a chat must not acknowledge for ever (docs/hardening.md).
TOKEN_TTL = timedelta(hours=24)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what ``secrets.token_urlsafe(24)`` makes


@dataclass(frozen=True, slots=True)
class _Link:
    message_id: str
    text: str
    expired: bool


async def _link(ctx: Context, token: str) -> _Link | None:
    """The attempt a confirmation token belongs to, and whether it expired; None if unknown."""
    if not _TOKEN.fullmatch(token):
        return None  # not one of ours: no database lookup for arbitrary path junk
    async with ctx.store.read() as session:
        row = (
            await session.execute(
                select(col(Outbox.id), col(Outbox.text), col(Outbox.due_at)).where(
                    col(Outbox.token) == token
                )
            )
        ).first()
    if row is None:
        return None
    due = row[2]  # aware UTC (UTCDateTime), never NULL
    return _Link(row[0], row[1], expired=due is not None and ctx.now() > due + TOKEN_TTL)


async def ack_token(ctx: Context, token: str) -> AckResult:
    """The button of a confirmation link: acknowledges the call of its own attempt, only."""
    link = await _link(ctx, token)
    if link is None:
        return AckResult(False, "链接无效或已过期 (unknown link)")
    if link.expired:
        return AckResult(False, "链接已过期，请回复短信或联系值班室 (link expired)")
    mid = link.message_id
    return await ack_message(ctx, mid, source="link", dedupe_key=f"link:{mid}")


async def describe_token(ctx: Context, token: str) -> str | None:
    """The text of the message a valid confirmation link belongs to (for the GET page)."""
    link = await _link(ctx, token)
    return link.text if link is not None and not link.expired else None


_CODE = re.compile(r"\d{4,6}")


async def ack_reply(
    ctx: Context, phone: str, text: str, *, dedupe_key: str | None = None
) -> AckResult:
    """An SMS reply: a short code picks the attempt; a bare ``1`` the number's latest open one."""
    body = text.strip()
    async with ctx.store.read() as session:
        q = (
            select(col(Outbox.id), col(Outbox.reply_code))
            .where(
                col(Outbox.to) == phone,
                col(Outbox.purpose) == "call",
                col(Outbox.state).in_(("sent", "sending")),
            )
            .order_by(col(Outbox.due_at).desc(), col(Outbox.id).desc())
        )
        candidates = (await session.execute(q.limit(200))).all()
    if not candidates:
        return AckResult(False, "该号码没有待确认的呼叫 (no open call for this number)")
    codes = set(_CODE.findall(body))
    chosen: str | None = None
    if codes:
        chosen = next((mid for mid, code in candidates if code in codes), None)
    elif body in ("1", "１", "收到", "确认"):
        async with ctx.store.read() as session:
            for mid, _code in candidates:
                msg = await session.get(Outbox, mid)
                call = await session.get(Call, msg.call_id) if msg and msg.call_id else None
                if call is not None and call.state == "active":
                    chosen = mid
                    break
            if chosen is None:
                chosen = candidates[0][0]
    if chosen is None:
        return AckResult(False, "回复内容无法识别，请回复1 (reply not understood)")
    return await ack_message(ctx, chosen, source="sms", dedupe_key=dedupe_key or f"sms:{chosen}")


async def ack_ivr(ctx: Context, outbox_id: str, digits: str) -> AckResult:
    """A key press on a voice call: only ``1`` acknowledges (a picked-up call does not)."""
    if digits.strip() != "1":
        return AckResult(False, "按键不是1，不算确认 (only 1 acknowledges)")
    # dedupe key "ivr:<message id>": a fallback route's id (``<id>-<n>``) is the same attempt
    return await ack_message(ctx, outbox_id, source="ivr")


async def ack_by_officer(
    ctx: Context,
    *,
    warning: str,
    contact_id: str | None,
    division: str | None,
    by: str,
    note: str | None,
) -> AckResult:
    """A duty officer reached someone by phone: record who confirmed, for which place."""
    now = ctx.now()
    async with ctx.store.write() as session:
        w = await find_warning(session, warning)
        if w is None:
            return AckResult(False, f"未找到预警 {warning} (unknown or ambiguous warning)")
        q = select(Call).where(col(Call.warning_id) == w.id)
        if contact_id:
            q = q.where(col(Call.contact_id) == contact_id)
        if division:
            drow = (
                (
                    await session.execute(
                        select(Division).where(
                            col(Division.warning_id) == w.id, col(Division.code) == division
                        )
                    )
                )
                .scalars()
                .first()
            )
            if drow is None:
                return AckResult(False, f"预警 {w.key} 不涉及区划 {division}")
            q = q.where(col(Call.division_id) == drow.id)
        calls = (
            (await session.execute(q.order_by(col(Call.start_at).desc(), col(Call.id).desc())))
            .scalars()
            .all()
        )
        if not calls:
            return AckResult(False, "没有找到对应的呼叫 (no call for that person/place)")
        call = next((c for c in calls if c.state == "active"), calls[0])
        place = await session.get(Division, call.division_id)
        assert place is not None
        open_entry = place.unreached_at is not None and place.resolved_at is None
        resolves = open_entry and bool(division or call.rung == "duty")
        if call.state == "acked" and not resolves:
            return await _already(session, w.key, call, place)
        result = await acknowledge_call(
            ctx,
            session,
            call,
            source="officer",
            dedupe_key=f"officer:{call.id}:{now.isoformat()}",
            outbox_id=None,
            by=by,
            note=note,
            now=now,
        )
        if resolves:
            place.resolved_at, place.resolved_by, place.resolved_note = now, by, note
        return replace(
            result,
            reason="已登记" + ("，未叫醒条目已处置" if resolves else ""),
            division=place.code,
            division_name=place.name,
            level=place.level,
            by=by,
            resolved=resolves,
            at=now,
            source="officer",
        )


async def _already(session: AsyncSession, key: str, call: Call, place: Division) -> AckResult:
    """A record for a call that is answered already, with nothing left to resolve: kept once."""
    first = (
        await session.execute(
            select(col(Ack.received_at), col(Ack.source), col(Ack.by))
            .where(col(Ack.call_id) == call.id)
            .order_by(col(Ack.id))
            .limit(1)
        )
    ).first()
    at, source, by = first if first is not None else (call.acked_at, call.ack_source, None)
    return AckResult(
        True,
        "已应答过，未重复登记 (already acknowledged)",
        key,
        call.contact_id,
        duplicate=True,
        division=place.code,
        division_name=place.name,
        level=place.level,
        by=by,
        at=at,
        source=source,
    )


async def find_warning(session: AsyncSession, key: str) -> WarningRow | None:
    """A warning by key or by a unique prefix of its identifier."""
    exact = (
        (await session.execute(select(WarningRow).where(col(WarningRow.key) == key)))
        .scalars()
        .all()
    )
    if len(exact) == 1:
        return exact[0]
    like = (
        (
            await session.execute(
                select(WarningRow).where(col(WarningRow.key).startswith(key)).limit(2)
            )
        )
        .scalars()
        .all()
    )
    return like[0] if len(like) == 1 else None
