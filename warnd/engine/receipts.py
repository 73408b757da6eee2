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

from warnd.engine.context import Context
from warnd.engine.ids import message_id_of
from warnd.store.tx import Row, Tx

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
    for item in items:
        if item.status not in STATUSES:
            raise ValueError(f"unknown receipt status {item.status!r}")

    async def job(tx: Tx) -> list[str | None]:
        matched: list[str | None] = []
        rows: list[Row] = []
        for item in items:
            msg, how = await _match(tx, item)
            outbox_id = msg[0] if msg is not None else None
            matched.append(outbox_id)
            if await _exists(tx, item, outbox_id) or _repeated(rows, item, outbox_id):
                continue
            detail = dict(item.detail)
            if how != "id":
                detail["matched_by"] = how
            rows.append(
                (
                    msg[1] if msg is not None else None,
                    outbox_id,
                    msg[2] if msg is not None else None,
                    item.provider,
                    item.ref,
                    item.status,
                    detail,
                    now,
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
        tx.insert("receipt", _COLS, rows)
        return matched

    return await ctx.store.writer.run(job)


_COLS = (
    "warning_id",
    "outbox_id",
    "contact_id",
    "provider",
    "ref",
    "status",
    "detail",
    "received_at",
)


async def outbox_for_ref(ctx: Context, provider: str, ref: str) -> str | None:
    """The message a provider's own id (CallId, SerialNo) was recorded for when it was sent."""
    rows = await ctx.store.backend.fetch(_BY_REF, (provider, ref))
    return rows[0][0] if rows else None


_BY_REF = (
    "SELECT outbox_id FROM receipt WHERE provider = ? AND ref = ? AND outbox_id IS NOT NULL LIMIT 1"
)
_MSG = "SELECT id, warning_id, contact_id FROM outbox"


async def _match(tx: Tx, item: ReceiptIn) -> tuple[Row | None, str]:
    if item.outbox_id:
        rows = await tx.rows(_MSG + " WHERE id = ?", message_id_of(item.outbox_id))
        if rows:
            return rows[0], "id"
    if item.ref:
        found = await tx.rows(_BY_REF, item.provider, item.ref)
        if found:
            rows = await tx.rows(_MSG + " WHERE id = ?", found[0][0])
            if rows:
                return rows[0], "ref"
    if item.phone:
        # The last resort scans the outbox (no index by number: a fan-out would write it for
        # every attempt); providers echo warnd's id or their own, so this is rare.
        sql = _MSG + " WHERE \"to\" = ? AND state IN ('sent', 'sending')"
        args: list[Any] = [item.phone]
        if item.via:
            sql += " AND channel = ?"
            args.append(item.via)
        rows = await tx.rows(sql + " ORDER BY at DESC, id DESC LIMIT 1", *args)
        if rows:
            return rows[0], "phone"
    return None, "none"


async def _exists(tx: Tx, item: ReceiptIn, outbox_id: str | None) -> bool:
    """A receipt pushed again (providers retry on slow answers) is kept once."""
    if outbox_id is None and item.ref is None:
        return False  # nothing identifies it: keep every copy rather than merge strangers
    sql = "SELECT id FROM receipt WHERE provider = ? AND status = ?"
    args: list[Any] = [item.provider, item.status]
    if outbox_id:
        sql += " AND outbox_id = ?"
        args.append(outbox_id)
    else:
        sql += " AND outbox_id IS NULL"
    if item.ref:
        sql += " AND ref = ?"
        args.append(item.ref)
    else:
        sql += " AND ref IS NULL"
    return bool(await tx.rows(sql + " LIMIT 1", *args))


def _repeated(rows: list[Row], item: ReceiptIn, outbox_id: str | None) -> bool:
    """The same receipt twice in one batch (not yet in the store)."""
    if outbox_id is None and item.ref is None:
        return False
    return any(
        r[3] == item.provider and r[5] == item.status and r[1] == outbox_id and r[4] == item.ref
        for r in rows
    )
