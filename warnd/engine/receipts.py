"""Delivery and call receipts: what a provider reported about one message, kept for the record.

A receipt never acknowledges (domain.md: a delivery report or a picked-up call without the key
press is recorded but does not count); only ``acks`` does that. Providers push receipts in
batches and push again when an answer was slow, so ``record`` takes a batch in one transaction
and skips a receipt it already holds. Each receipt is matched to warnd's message by, in order:
the message id the provider echoed (OutId), the provider's own id seen earlier (``ref``: the
CallId / SerialNo recorded as ``submitted`` when the message was sent), or, as a last resort,
the latest message sent to the same phone number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from warnd.engine.context import Context, message_id_of
from warnd.store.tables import Outbox, Receipt

log = structlog.get_logger("warnd.receipts")

#: statuses a receipt may carry (docs/channels.md explains each)
STATUSES = frozenset(
    {
        "submitted",  # the provider accepted the request (ref = its CallId / BizId / SerialNo)
        "delivered",  # SMS delivery report: on the handset
        "undelivered",  # SMS delivery report: failed
        "answered",  # the call was picked up (no key press reported)
        "no_key",  # picked up, heard the message, pressed nothing (or not 1)
        "keypress",  # a key press was reported (the ack itself is recorded by acks)
        "no_answer",  # rang, busy, switched off, unreachable
        "failed",  # invalid number, provider error
        "reply",  # an SMS reply arrived (the ack itself is recorded by acks)
    }
)


@dataclass(frozen=True, slots=True)
class ReceiptIn:
    """One receipt as a vendor handler parsed it."""

    provider: str
    status: str
    outbox_id: str | None = None
    ref: str | None = None
    phone: str | None = None  # E.164; only used to find the message when nothing else does
    via: str | None = None  # "<channel>/<kind>": narrows the phone match to that route
    detail: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


async def record(ctx: Context, items: Sequence[ReceiptIn]) -> list[str | None]:
    """Store a batch of receipts; returns the message id each one was matched to (or None)."""
    now = ctx.now()
    matched: list[str | None] = []
    async with ctx.store.write() as session:
        for item in items:
            if item.status not in STATUSES:
                raise ValueError(f"unknown receipt status {item.status!r}")
            msg, how = await _match(session, item)
            outbox_id = msg.id if msg is not None else None
            matched.append(outbox_id)
            if await _exists(session, item, outbox_id):
                continue
            detail = dict(item.detail)
            if how != "id":
                detail["matched_by"] = how
            session.add(
                Receipt(
                    warning_id=msg.warning_id if msg is not None else None,
                    outbox_id=outbox_id,
                    contact_id=msg.contact_id if msg is not None else None,
                    provider=item.provider,
                    ref=item.ref,
                    status=item.status,
                    detail=detail,
                    received_at=now,
                )
            )
            log.info(
                "receipt",
                provider=item.provider,
                status=item.status,
                message=outbox_id,
                ref=item.ref,
                matched_by=how,
            )
    return matched


async def outbox_for_ref(ctx: Context, provider: str, ref: str) -> str | None:
    """The message a provider's own id (CallId, SerialNo) was recorded for when it was sent."""
    async with ctx.store.read() as session:
        return await _by_ref(session, provider, ref)


async def _by_ref(session: AsyncSession, provider: str, ref: str) -> str | None:
    row = (
        await session.execute(
            select(col(Receipt.outbox_id))
            .where(
                col(Receipt.provider) == provider,
                col(Receipt.ref) == ref,
                col(Receipt.outbox_id).is_not(None),
            )
            .limit(1)
        )
    ).first()
    return row[0] if row else None


async def _match(session: AsyncSession, item: ReceiptIn) -> tuple[Outbox | None, str]:
    if item.outbox_id:
        msg = await session.get(Outbox, message_id_of(item.outbox_id))
        if msg is not None:
            return msg, "id"
    if item.ref:
        found = await _by_ref(session, item.provider, item.ref)
        if found is not None:
            return await session.get(Outbox, found), "ref"
    if item.phone:
        q = select(Outbox).where(
            col(Outbox.to) == item.phone, col(Outbox.state).in_(("sent", "sending"))
        )
        if item.via:
            q = q.where(col(Outbox.channel) == item.via)
        q = q.order_by(col(Outbox.due_at).desc(), col(Outbox.id).desc()).limit(1)
        latest = (await session.execute(q)).scalars().first()
        if latest is not None:
            return latest, "phone"
    return None, "none"


async def _exists(session: AsyncSession, item: ReceiptIn, outbox_id: str | None) -> bool:
    """A receipt pushed again (providers retry on slow answers) is kept once."""
    q = select(col(Receipt.id)).where(
        col(Receipt.provider) == item.provider, col(Receipt.status) == item.status
    )
    q = q.where(
        col(Receipt.outbox_id) == outbox_id if outbox_id else col(Receipt.outbox_id).is_(None)
    )
    q = q.where(col(Receipt.ref) == item.ref if item.ref else col(Receipt.ref).is_(None))
    if outbox_id is None and item.ref is None:
        return False  # nothing identifies it: keep every copy rather than merge strangers
    return (await session.execute(q.limit(1))).first() is not None
