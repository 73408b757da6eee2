"""Taking a CAP message in: a new warning, an Update that re-times it, a Cancel that lifts it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from warnd import cap
from warnd.cap import Alert, dedup
from warnd.chain import ladder
from warnd.chain.plan import plan, reference_time, severity_rank, stage_due
from warnd.division import overlaps
from warnd.engine.calls import Job, run_jobs
from warnd.engine.context import Context, event_row, facts, outbox_row
from warnd.errors import CapError
from warnd.feeds import FeedItem, IngestResult, Outcome
from warnd.notice import lift_text, update_text
from warnd.store import chainrows
from warnd.store.tables import Division, Message, Outbox, Stage, WarningRow

log = structlog.get_logger("warnd.engine")


async def ingest(ctx: Context, item: FeedItem) -> IngestResult:
    """Parse and take in one feed item; bad input is rejected with its one-line reason."""
    try:
        alert = cap.parse(item.data, source=item.origin)
    except CapError as exc:
        log.warning("message_rejected", origin=item.origin, reason=str(exc))
        return IngestResult(Outcome.REJECTED, str(exc))
    return await ingest_alert(ctx, alert, item.data, item.origin)


async def ingest_alert(ctx: Context, alert: Alert, raw: bytes, origin: str) -> IngestResult:
    now = ctx.now()
    sent_utc = alert.sent.astimezone(UTC)
    async with ctx.store.write() as session:
        dup = (
            await session.execute(
                select(col(Message.id)).where(
                    col(Message.sender) == alert.sender,
                    col(Message.identifier) == alert.identifier,
                    col(Message.sent_utc) == sent_utc,
                )
            )
        ).first()
        if dup is not None:
            log.info("message_duplicate", key=alert.key, origin=origin)
            return IngestResult(Outcome.DUPLICATE, "already ingested (重复消息)", alert.key)
        # The same warning from another source (warnd.cap.dedup, docs/feeds.md): one chain.
        first = await _earlier_copy(session, alert, now)
        target: WarningRow | None
        note: str | None
        if first is not None:
            target, note = first[0], f"copy of {first[1]} from another source (另一来源的副本)"
        else:
            target, note = await _find_referenced(session, alert)
        msg = Message(
            sender=alert.sender,
            identifier=alert.identifier,
            sent_utc=sent_utc,
            sent_text=alert.sent.isoformat(),
            msg_type=alert.msg_type,
            status=alert.status,
            severity=alert.severity,
            origin=origin,
            received_at=now,
            note=note,
            raw=raw,
        )
        if first is not None and target is not None:
            if alert.msg_type == "Cancel" or not dedup.uncovered(target.area, alert.geocodes):
                msg.warning_id = target.id  # recorded with its source; the chain runs once
                session.add(msg)
                log.info("message_copy", key=alert.key, warning=target.key, first=first[1])
                return IngestResult(Outcome.DUPLICATE, note, alert.key)
            alert = dedup.with_area(alert, tuple(target.area))  # it names divisions the chain lacks
        if target is None:
            w = await _new_warning(ctx, session, alert, now, note)
        elif alert.msg_type == "Cancel":
            w = target
            await _cancel(ctx, session, w, alert, now)
        else:
            w = target
            await _update(ctx, session, w, alert, now)
        msg.warning_id = w.id
        session.add(msg)
    log.info(
        "message_accepted",
        key=alert.key,
        warning=w.key,
        msg_type=alert.msg_type,
        state=w.state,
        origin=origin,
    )
    return IngestResult(Outcome.ACCEPTED, w.reason if w.state == "skipped" else None, alert.key)


async def _earlier_copy(
    session: AsyncSession, alert: Alert, now: datetime
) -> tuple[WarningRow, str] | None:
    """Another sender's copy of this message already taken in, and its ``sender,identifier``.

    Candidates are the messages of recently updated warnings (the warning table is small; the
    message table holds every raw document) within the dedup window of this one's issue time.
    """
    key = dedup.key_of(alert)
    if key is None:
        return None
    sent, window = alert.sent.astimezone(UTC), dedup.DEFAULT_WINDOW
    recent = select(col(WarningRow.id)).where(
        col(WarningRow.updated_at) >= min(now, sent) - timedelta(days=2),
        col(WarningRow.drill) == alert.is_drill,
    )
    rows = await session.execute(
        select(
            col(Message.sender),
            col(Message.identifier),
            col(Message.sent_utc),
            col(Message.severity),
            WarningRow,
        )
        .join(WarningRow, col(WarningRow.id) == col(Message.warning_id))
        .where(
            col(Message.warning_id).in_(recent),
            col(Message.msg_type) == alert.msg_type,
            col(Message.sender) != alert.sender,
            col(Message.sent_utc) >= sent - window,
            col(Message.sent_utc) <= sent + window,
        )
    )
    best: tuple[timedelta, WarningRow, str] | None = None
    for sender, ident, at, severity, w in rows:
        if at is None:
            continue
        other = dedup.key_from(w.headline, w.event, severity, alert.msg_type, w.drill, at)
        if other is not None and dedup.same_warning(key, other, window):
            gap = abs(other.issued - sent)
            if best is None or gap < best[0]:
                best = (gap, w, f"{sender},{ident}")
    return (best[1], best[2]) if best is not None else None


async def _find_referenced(
    session: AsyncSession, alert: Alert
) -> tuple[WarningRow | None, str | None]:
    """The warning an Update/Cancel belongs to, by (sender, identifier) of its references."""
    if alert.msg_type not in ("Update", "Cancel") or not alert.references:
        return None, None
    for ref in alert.references:
        wid = (
            (
                await session.execute(
                    select(col(Message.warning_id)).where(
                        col(Message.sender) == ref.sender, col(Message.identifier) == ref.identifier
                    )
                )
            )
            .scalars()
            .first()
        )
        if wid is not None:
            return await session.get(WarningRow, wid), None
    refs = " ".join(f"{r.sender},{r.identifier},{r.sent}" for r in alert.references)
    return None, f"references an unknown message (引用了未知消息): {refs}"


def _apply_facts(w: WarningRow, alert: Alert, now: datetime) -> None:
    w.severity = alert.severity
    w.event = alert.primary_info.event if alert.primary_info else None
    w.headline = alert.headline
    w.reference_at, w.reference_kind = reference_time(alert)  # the one T rule (warnd.deadline)
    w.expires_at = alert.expires
    if alert.geocodes:
        w.area = list(alert.geocodes)
    w.updated_at = now


async def _new_warning(
    ctx: Context, session: AsyncSession, alert: Alert, now: datetime, note: str | None
) -> WarningRow:
    w = WarningRow(
        key=alert.identifier,
        sender=alert.sender,
        identifier=alert.identifier,
        drill=alert.is_drill,
        arrived_at=now,
        updated_at=now,
        note=note,
    )
    _apply_facts(w, alert, now)
    session.add(w)
    await session.flush()
    if alert.msg_type == "Cancel":
        w.state, w.reason_code = "skipped", "cancel"
        w.reason = "Cancel of an unknown warning: nothing to lift (无可解除的预警)"
    else:
        await _plan_stages(ctx, session, w, alert, now)
    if w.state == "skipped":
        skip = event_row(
            w,
            now,
            "skip",
            contact_id=None,
            division=None,
            level=None,
            data={"reason": w.reason, "code": w.reason_code},
        )
        await chainrows.insert_events(session, [skip])
    return w


async def _plan_stages(
    ctx: Context, session: AsyncSession, w: WarningRow, alert: Alert, now: datetime
) -> None:
    p = plan(alert, ctx.directory, ctx.policy, now)
    if not p.dispatch:
        w.state, w.reason_code, w.reason = "skipped", p.decision.code, p.decision.reason
        return
    w.state, w.reason_code, w.reason = "active", None, None
    assert w.id is not None
    for idx, st in enumerate(p.stages):
        session.add(
            Stage(
                warning_id=w.id,
                idx=idx,
                level=st.level,
                lead_s=int(st.lead.total_seconds()),
                due_at=st.due,
            )
        )


async def notified_contacts(session: AsyncSession, w: WarningRow) -> list[tuple[str, str]]:
    """(contact_id, phone) of everyone who has been sent a call for this warning so far."""
    rows = (
        await session.execute(
            select(col(Outbox.contact_id), col(Outbox.to))
            .where(
                col(Outbox.warning_id) == w.id,
                col(Outbox.purpose) == "call",
                col(Outbox.state).in_(("sent", "sending")),
            )
            .order_by(col(Outbox.due_at), col(Outbox.id))
        )
    ).all()
    seen: dict[str, str] = {}
    for cid, phone in rows:
        seen.setdefault(cid, phone)
    return list(seen.items())


async def _notify_all(
    session: AsyncSession, w: WarningRow, purpose: str, event: str, text: str, now: datetime
) -> None:
    """An update or lift notice to everyone notified so far, and its history events."""
    people = await notified_contacts(session, w)
    await chainrows.insert_outbox(
        session,
        [
            outbox_row(w, contact_id=cid, to=phone, purpose=purpose, text=text, now=now)
            for cid, phone in people
        ],
    )
    data = {"severity": w.severity} if event == "update" else {}
    await chainrows.insert_events(
        session,
        [
            event_row(w, now, event, contact_id=cid, division=None, level=None, data=data)
            for cid, _phone in people
        ],
    )


async def _update(
    ctx: Context, session: AsyncSession, w: WarningRow, alert: Alert, now: datetime
) -> None:
    """Re-time and re-target unfired stages; tell the notified; re-call on a severity rise."""
    if w.state == "cancelled":
        w.note = ((w.note or "") + " update after cancel ignored (解除后的更新已忽略)").strip()
        return
    rose = severity_rank(alert.severity) > severity_rank(w.severity)
    _apply_facts(w, alert, now)
    if w.state == "skipped":
        await _plan_stages(ctx, session, w, alert, now)  # it may qualify now
        return
    assert w.reference_at is not None
    pending = select(Stage).where(col(Stage.warning_id) == w.id, col(Stage.state) == "pending")
    for st in (await session.execute(pending)).scalars():
        st.due_at, _late = stage_due(w.reference_at, timedelta(seconds=st.lead_s), now)
    await _notify_all(session, w, "update", "update", update_text(facts(w), tz=ctx.tz), now)
    if rose:
        rows = await session.execute(
            select(col(Division.id), col(Division.code)).where(
                col(Division.warning_id) == w.id,
                col(Division.stopped) == False,  # noqa: E712
            )
        )
        jobs = [
            Job(int(did), [ladder.Start()])
            for did, code in rows
            if did is not None and any(overlaps(a, code) for a in w.area)
        ]
        await run_jobs(ctx, session, jobs, now)
    log.info("warning_updated", warning=w.key, severity=w.severity, rose=rose)


async def _cancel(
    ctx: Context, session: AsyncSession, w: WarningRow, alert: Alert, now: datetime
) -> None:
    """Lift the warning: stop every stage, attempt and escalation; tell everyone notified."""
    if w.state == "cancelled":
        return
    was_active = w.state == "active"
    w.state, w.updated_at = "cancelled", now
    await session.execute(
        update(Stage)
        .where(col(Stage.warning_id) == w.id, col(Stage.state) == "pending")
        .values(state="cancelled")
    )
    if not was_active:
        return
    ids = (
        await session.execute(select(col(Division.id)).where(col(Division.warning_id) == w.id))
    ).scalars()
    await run_jobs(
        ctx, session, [Job(int(did), [ladder.Stop()]) for did in ids if did is not None], now
    )
    await session.execute(
        update(Outbox)
        .where(
            col(Outbox.warning_id) == w.id,
            col(Outbox.purpose) == "call",
            col(Outbox.state) == "pending",
        )
        .values(state="cancelled")
    )
    await _notify_all(session, w, "lift", "cancel", lift_text(facts(w), tz=ctx.tz), now)
    log.info("warning_cancelled", warning=w.key)
