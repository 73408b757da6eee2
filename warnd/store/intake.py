"""Store operations of ingest: messages, the warnings they belong to, who was notified."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from warnd.store.chain import _WARNING_SQL, _warning
from warnd.store.records import WarningRec
from warnd.store.tx import Tx

_MESSAGE_COLS = (
    "id", "warning_id", "sender", "identifier", "sent_utc", "sent_text", "msg_type", "status",
    "severity", "origin", "received_at", "note", "raw",
)  # fmt: skip


async def message_seen(tx: Tx, sender: str, identifier: str, sent_utc: datetime) -> bool:
    """Whether this (sender, identifier, sent) was already ingested (contracts §3)."""
    rows = await tx.rows(
        "SELECT id FROM message WHERE sender = ? AND identifier = ? AND sent_utc = ?",
        sender,
        identifier,
        tx.bts(sent_utc),
    )
    return bool(rows)


async def referenced_warning(tx: Tx, refs: Sequence[tuple[str, str]]) -> WarningRec | None:
    """The warning of the first reference (sender, identifier) that names a known message."""
    for sender, identifier in refs:
        rows = await tx.rows(
            _WARNING_SQL + " WHERE id = (SELECT warning_id FROM message"
            " WHERE sender = ? AND identifier = ? AND warning_id IS NOT NULL ORDER BY id LIMIT 1)",
            sender,
            identifier,
        )
        if rows:
            return _warning(tx, rows[0])
    return None


async def copies_near(
    tx: Tx,
    *,
    sender: str,
    msg_type: str,
    drill: bool,
    since: datetime,
    sent_from: datetime,
    sent_to: datetime,
) -> list[tuple[str, str, datetime, str | None, WarningRec]]:
    """Messages of other senders issued between ``sent_from`` and ``sent_to``, of warnings
    updated since ``since``: (sender, identifier, sent, severity, their warning). The warning
    table is small; the message table holds every raw document, so it is reached by
    ``message.warning_id`` (cross-source dedup, warnd.core.cap.dedup)."""
    rows = await tx.rows(
        "SELECT m.sender, m.identifier, m.sent_utc, m.severity, m.warning_id FROM message m"
        ' WHERE m.warning_id IN (SELECT id FROM "warning" WHERE updated_at >= ? AND drill = ?)'
        " AND m.msg_type = ? AND m.sender <> ? AND m.sent_utc >= ? AND m.sent_utc <= ?",
        tx.bts(since),
        drill,
        msg_type,
        sender,
        tx.bts(sent_from),
        tx.bts(sent_to),
    )
    if not rows:
        return []
    ids = sorted({int(r[4]) for r in rows})
    found = {
        w.id: w
        for w in (
            _warning(tx, r) for r in await tx.rows_in(_WARNING_SQL + " WHERE id IN {ids}", ids)
        )
    }
    return [(r[0], r[1], tx.ts(r[2]), r[3], found[int(r[4])]) for r in rows]


async def insert_message(
    tx: Tx,
    *,
    warning_id: int,
    sender: str,
    identifier: str,
    sent_utc: datetime,
    sent_text: str,
    msg_type: str,
    status: str,
    severity: str | None,
    origin: str,
    received_at: datetime,
    note: str | None,
    raw: bytes,
) -> int:
    (mid,) = await tx.new_ids("message", 1)
    tx.insert(
        "message",
        _MESSAGE_COLS,
        [
            (
                mid, warning_id, sender, identifier, sent_utc, sent_text, msg_type, status,
                severity, origin, received_at, note, raw,
            )
        ],
    )  # fmt: skip
    return mid


async def divisions_of(tx: Tx, warning_id: int) -> list[tuple[int, str, bool]]:
    """(id, code, stopped) of a warning's divisions, in id order."""
    rows = await tx.rows(
        "SELECT id, code, stopped FROM division WHERE warning_id = ? ORDER BY id", warning_id
    )
    return [(int(i), code, tx.flag(stopped)) for i, code, stopped in rows]


async def notified(tx: Tx, warning_id: int) -> list[tuple[str, str]]:
    """(contact_id, number) of everyone a call of this warning went (or is going) to, in order
    of their first attempt (one carried by another warning's message, ``bundled``, went too).
    A scan of the outbox: an Update or a Cancel is rare, and an index
    by warning would be written for every attempt of a fan-out."""
    rows = await tx.rows(
        "SELECT contact_id, \"to\" FROM outbox WHERE warning_id = ? AND purpose = 'call'"
        " AND state IN ('sent', 'sending', 'pending', 'bundled') ORDER BY at, seq, id",
        warning_id,
    )
    seen: dict[str, str] = {}
    for cid, phone in rows:
        seen.setdefault(cid, phone)
    return list(seen.items())


async def cancel_queued_calls(tx: Tx, warning_id: int) -> int:
    """Call attempts of a lifted warning not sent yet: they never will be (but a bundled
    message goes out: it carries other warnings' calls, contracts §8)."""
    return await tx.execute(
        "UPDATE outbox SET state = 'cancelled' WHERE state = 'pending' AND purpose = 'call'"
        " AND warning_id = ? AND bundle IS NULL",
        warning_id,
    )
