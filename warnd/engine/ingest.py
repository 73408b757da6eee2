"""Taking a CAP message in: a new warning, an Update that re-times it, a Cancel that lifts it.

One message is one job of the single writer (one transaction): the duplicate check, the
warning, the message row, and what the Update or Cancel changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog

from warnd.core import cap
from warnd.core.cap import Alert, dedup
from warnd.core.chain import ladder
from warnd.core.chain.plan import plan, reference_time, severity_rank, stage_due
from warnd.core.division import overlaps
from warnd.core.errors import CapError
from warnd.core.notice import lift_text, update_text
from warnd.edges.feeds import FeedItem, IngestResult, Outcome
from warnd.engine.calls import Job, run_jobs
from warnd.engine.context import Context
from warnd.engine.ids import new_message_id
from warnd.engine.records import attempt_row, event_row, facts
from warnd.store import chain, intake
from warnd.store.records import WarningRec
from warnd.store.tx import Tx

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

    async def job(tx: Tx) -> IngestResult:
        return await _ingest(ctx, tx, alert, raw, origin, now)

    return await ctx.store.writer.run(job)


async def _ingest(
    ctx: Context, tx: Tx, alert: Alert, raw: bytes, origin: str, now: datetime
) -> IngestResult:
    sent_utc = alert.sent.astimezone(UTC)
    if await intake.message_seen(tx, alert.sender, alert.identifier, sent_utc):
        log.info("message_duplicate", key=alert.key, origin=origin)
        return IngestResult(Outcome.DUPLICATE, "already ingested (重复消息)", alert.key)
    # The same warning from another source (warnd.core.cap.dedup, docs/feeds.md): one chain.
    first = await _earlier_copy(tx, alert, now)
    target: WarningRec | None
    note: str | None
    if first is not None:
        target, note = first[0], f"copy of {first[1]} from another source (另一来源的副本)"
        if alert.msg_type == "Cancel" or not dedup.uncovered(target.area, alert.geocodes):
            await _record_message(tx, target.id, alert, sent_utc, origin, now, note, raw)
            log.info("message_copy", key=alert.key, warning=target.key, first=first[1])
            return IngestResult(Outcome.DUPLICATE, note, alert.key)
        alert = dedup.with_area(alert, tuple(target.area))  # it names divisions the chain lacks
    else:
        target, note = await _find_referenced(tx, alert)
    w = target if target is not None else await _new_warning(tx, alert, now, note)
    message_id = await _record_message(tx, w.id, alert, sent_utc, origin, now, note, raw)
    if target is None:
        await _start_warning(ctx, tx, w, alert, now)
    elif alert.msg_type == "Cancel":
        await _cancel(ctx, tx, w, message_id, now)
    else:
        await _update(ctx, tx, w, alert, message_id, now)
    chain.save_warning(tx, w)
    log.info(
        "message_accepted",
        key=alert.key,
        warning=w.key,
        msg_type=alert.msg_type,
        state=w.state,
        origin=origin,
    )
    return IngestResult(Outcome.ACCEPTED, w.reason if w.state == "skipped" else None, alert.key)


async def _record_message(
    tx: Tx,
    warning_id: int,
    alert: Alert,
    sent_utc: datetime,
    origin: str,
    now: datetime,
    note: str | None,
    raw: bytes,
) -> int:
    return await intake.insert_message(
        tx,
        warning_id=warning_id,
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


async def _earlier_copy(tx: Tx, alert: Alert, now: datetime) -> tuple[WarningRec, str] | None:
    """Another sender's copy of this message already taken in, and its ``sender,identifier``:
    the messages of recently updated warnings within the dedup window of this one's issue time.
    """
    key = dedup.key_of(alert)
    if key is None:
        return None
    sent, window = alert.sent.astimezone(UTC), dedup.DEFAULT_WINDOW
    rows = await intake.copies_near(
        tx,
        sender=alert.sender,
        msg_type=alert.msg_type,
        drill=alert.is_drill,
        since=min(now, sent) - timedelta(days=2),
        sent_from=sent - window,
        sent_to=sent + window,
    )
    best: tuple[timedelta, WarningRec, str] | None = None
    for sender, ident, at, severity, w in rows:
        if at is None:
            continue
        other = dedup.key_from(w.headline, w.event, severity, alert.msg_type, w.drill, at)
        if other is not None and dedup.same_warning(key, other, window):
            gap = abs(other.issued - sent)
            if best is None or gap < best[0]:
                best = (gap, w, f"{sender},{ident}")
    return (best[1], best[2]) if best is not None else None


async def _find_referenced(tx: Tx, alert: Alert) -> tuple[WarningRec | None, str | None]:
    """The warning an Update/Cancel belongs to, by (sender, identifier) of its references."""
    if alert.msg_type not in ("Update", "Cancel") or not alert.references:
        return None, None
    found = await intake.referenced_warning(
        tx, [(ref.sender, ref.identifier) for ref in alert.references]
    )
    if found is not None:
        return found, None
    refs = " ".join(f"{r.sender},{r.identifier},{r.sent}" for r in alert.references)
    return None, f"references an unknown message (引用了未知消息): {refs}"


def _apply_facts(w: WarningRec, alert: Alert, now: datetime) -> None:
    w.severity = alert.severity
    w.event = alert.primary_info.event if alert.primary_info else None
    w.headline = alert.headline
    w.reference_at, w.reference_kind = reference_time(alert)  # the one T rule (warnd.core.deadline)
    w.expires_at = alert.expires
    if alert.geocodes:
        w.area = list(alert.geocodes)
    w.updated_at = now


async def _new_warning(tx: Tx, alert: Alert, now: datetime, note: str | None) -> WarningRec:
    w = WarningRec(
        id=0,
        key=alert.identifier,
        sender=alert.sender,
        identifier=alert.identifier,
        drill=alert.is_drill,
        state="active",
        reason=None,
        reason_code=None,
        severity=None,
        event=None,
        headline=None,
        reference_at=None,
        reference_kind=None,
        expires_at=None,
        area=[],
        arrived_at=now,
        updated_at=now,
        note=note,
    )
    _apply_facts(w, alert, now)
    await chain.insert_warning(tx, w)
    return w


async def _start_warning(ctx: Context, tx: Tx, w: WarningRec, alert: Alert, now: datetime) -> None:
    if alert.msg_type == "Cancel":
        w.state, w.reason_code = "skipped", "cancel"
        w.reason = "Cancel of an unknown warning: nothing to lift (无可解除的预警)"
    else:
        _plan_stages(ctx, tx, w, alert, now)
    if w.state == "skipped":
        skip = event_row(tx, w, now, "skip", data={"reason": w.reason, "code": w.reason_code})
        chain.insert_events(tx, [skip])


def _plan_stages(ctx: Context, tx: Tx, w: WarningRec, alert: Alert, now: datetime) -> None:
    p = plan(alert, ctx.directory, ctx.policy, now)
    if not p.dispatch:
        w.state, w.reason_code, w.reason = "skipped", p.decision.code, p.decision.reason
        return
    w.state, w.reason_code, w.reason = "active", None, None
    chain.insert_stages(
        tx,
        [
            (w.id, idx, st.level, int(st.lead.total_seconds()), st.due)
            for idx, st in enumerate(p.stages)
        ],
    )


async def _notify_all(
    tx: Tx,
    w: WarningRec,
    purpose: str,
    text: str,
    message_id: int,
    now: datetime,
) -> None:
    """An update or lift notice to everyone notified so far (each its own history record)."""
    people = await intake.notified(tx, w.id)
    chain.insert_attempts(
        tx,
        [
            attempt_row(
                tx,
                w,
                message_id=new_message_id(),
                contact_id=cid,
                to=phone,
                purpose=purpose,
                text=text,
                now=now,
                cause=message_id,
            )
            for cid, phone in people
        ],
    )


async def _update(
    ctx: Context, tx: Tx, w: WarningRec, alert: Alert, message_id: int, now: datetime
) -> None:
    """Re-time and re-target unfired stages; tell the notified; re-call on a severity rise."""
    if w.state == "cancelled":
        w.note = ((w.note or "") + " update after cancel ignored (解除后的更新已忽略)").strip()
        return
    rose = severity_rank(alert.severity) > severity_rank(w.severity)
    _apply_facts(w, alert, now)
    if w.state == "skipped":
        _plan_stages(ctx, tx, w, alert, now)  # it may qualify now
        return
    assert w.reference_at is not None
    pending = await chain.pending_stages(tx, w.id)
    chain.retime_stages(
        tx,
        [
            (stage_due(w.reference_at, timedelta(seconds=st.lead_s), now)[0], st.id)
            for st in pending
        ],
    )
    await _notify_all(tx, w, "update", update_text(facts(w), tz=ctx.tz), message_id, now)
    if rose:
        chain.save_warning(tx, w)  # the new calls' texts read the new facts
        jobs = [
            Job(did, [ladder.Start()])
            for did, code, stopped in await intake.divisions_of(tx, w.id)
            if not stopped and any(overlaps(a, code) for a in w.area)
        ]
        await run_jobs(ctx, tx, jobs, now)
    log.info("warning_updated", warning=w.key, severity=w.severity, rose=rose)


async def _cancel(ctx: Context, tx: Tx, w: WarningRec, message_id: int, now: datetime) -> None:
    """Lift the warning: stop every stage, attempt and escalation; tell everyone notified."""
    if w.state == "cancelled":
        return
    was_active = w.state == "active"
    w.state, w.updated_at = "cancelled", now
    await chain.cancel_stages(tx, w.id)
    if not was_active:
        return
    chain.save_warning(tx, w)
    divisions = await intake.divisions_of(tx, w.id)
    chain.mark_started(tx, [did for did, _c, _s in divisions], None)
    await run_jobs(ctx, tx, [Job(did, [ladder.Stop()]) for did, _c, _s in divisions], now)
    await intake.cancel_queued_calls(tx, w.id)
    await _notify_all(tx, w, "lift", lift_text(facts(w), tz=ctx.tz), message_id, now)
    log.info("warning_cancelled", warning=w.key)
