"""Store operations of acknowledgements: finding the call an answer is for, recording it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from warnd.store.records import ACK_INSERT
from warnd.store.tx import Row, Tx


class CallRef(NamedTuple):
    """What an answer needs to know of its call before the division is loaded."""

    id: int
    warning_id: int
    division_id: int
    key: str
    contact_id: str
    rung: str


async def calls_of_attempts(tx: Tx, message_ids: Sequence[str]) -> dict[str, CallRef]:
    """The call of each call attempt among ``message_ids`` (notices have none)."""
    rows = await tx.rows_in(
        "SELECT o.id, c.id, c.warning_id, c.division_id, c.key, c.contact_id, c.rung"
        ' FROM outbox o JOIN "call" c ON c.id = o.call_id WHERE o.id IN {ids}',
        sorted(set(message_ids)),
        type_="text",
    )
    return {r[0]: CallRef(*r[1:]) for r in rows}


async def bundle_mates(tx: Tx, message_ids: Sequence[str]) -> dict[str, list[str]]:
    """The other attempts sent in the same message as each of ``message_ids`` (contracts §8),
    in the order they were made."""
    rows = await tx.rows_in(
        "SELECT a.id, b.id FROM outbox a JOIN outbox b ON b.bundle = a.bundle AND b.id <> a.id"
        " WHERE a.bundle IS NOT NULL AND a.id IN {ids} ORDER BY b.seq",
        sorted(set(message_ids)),
        type_="text",
    )
    out: dict[str, list[str]] = {}
    for a, b in rows:
        out.setdefault(a, []).append(b)
    return out


async def calls(tx: Tx, call_ids: Sequence[int]) -> dict[int, CallRef]:
    rows = await tx.rows_in(
        'SELECT id, warning_id, division_id, key, contact_id, rung FROM "call" WHERE id IN {ids}',
        sorted(set(call_ids)),
    )
    return {r[0]: CallRef(*r) for r in rows}


async def seen(tx: Tx, dedupe_keys: Sequence[str]) -> set[str]:
    """The dedupe keys already stored (a retried hook is harmless)."""
    rows = await tx.rows_in(
        "SELECT dedupe_key FROM ack WHERE dedupe_key IN {ids}",
        sorted(set(dedupe_keys)),
        type_="text",
    )
    return {r[0] for r in rows}


def insert_acks(tx: Tx, rows: list[Row]) -> None:
    """Rows in ``ACK_INSERT`` order (``seq`` from ``tx.seq()``)."""
    tx.insert("ack", ACK_INSERT, rows)


def resolve(tx: Tx, rows: list[tuple[datetime, str | None, str | None, int]]) -> None:
    """(at, by, note, division id): the division's not-woken entry, if open, is resolved."""
    tx.many(
        "UPDATE division SET resolved_at = ?, resolved_by = ?, resolved_note = ?"
        " WHERE id = ? AND unreached_at IS NOT NULL AND resolved_at IS NULL",
        [(tx.bts(at), by, note, did) for at, by, note, did in rows],
    )


async def officer_calls(
    tx: Tx, warning_id: int, contact_id: str | None, division: str | None
) -> list[tuple[int, str]] | None:
    """(call id, state) of a warning's calls for a person and/or a division, newest first;
    None when the division is not one of the warning's."""
    sql = 'SELECT c.id, c.state FROM "call" c WHERE c.warning_id = ?'
    args: list[Any] = [warning_id]
    if contact_id:
        sql += " AND c.contact_id = ?"
        args.append(contact_id)
    if division:
        found = await tx.rows(
            "SELECT id FROM division WHERE warning_id = ? AND code = ?", warning_id, division
        )
        if not found:
            return None
        sql += " AND c.division_id = ?"
        args.append(int(found[0][0]))
    rows = await tx.rows(sql + " ORDER BY c.start_at DESC, c.id DESC", *args)
    return [(int(i), st) for i, st in rows]


class OfficerPlace(NamedTuple):
    """What an officer's record says of its call's place, and of the call's first answer."""

    code: str
    name: str
    level: str
    open_entry: bool  # on the not-woken list and not resolved yet
    rung: str
    state: str
    contact_id: str
    first_at: datetime | None  # the call's first recorded answer (at, source, by)
    first_source: str | None
    first_by: str | None


async def officer_place(tx: Tx, call_id: int) -> OfficerPlace:
    (r,) = await tx.rows(
        "SELECT d.code, d.name, d.level, d.unreached_at, d.resolved_at, c.rung, c.state,"
        ' c.contact_id, c.acked_at, c.ack_source FROM "call" c'
        " JOIN division d ON d.id = c.division_id WHERE c.id = ?",
        call_id,
    )
    first = await tx.rows(
        'SELECT received_at, source, "by" FROM ack WHERE call_id = ? ORDER BY id LIMIT 1',
        call_id,
    )
    at, source, by = first[0] if first else (r[8], r[9], None)
    open_entry = r[3] is not None and r[4] is None
    return OfficerPlace(
        r[0], r[1], r[2], open_entry, r[5], r[6], r[7], tx.ts(at), source, by
    )  # fmt: skip


# ---- reads outside the writer (the hooks' lookups) ----------------------------------------


async def reply_candidates(
    read: Any, contact_ids: Sequence[str], number: str, limit: int = 200
) -> list[tuple[int, str | None, str, str]]:
    """(call id, reply code, call state, latest message id) of the calls made to ``number``
    that have reached the gateway, latest attempt first. ``contact_ids``: the persons the
    directory knows for the number (the lookup walks ``(warning_id, contact_id)``); none: every
    open call of an active warning is scanned for the number (a person whose number changed)."""
    head = (
        "SELECT c.id, c.reply_code, c.state, c.last_message, o.at, o.state, c.attempts_made"
        ' FROM "call" c JOIN outbox o ON o.id = c.last_message WHERE c.phone = ?'
    )
    if contact_ids:
        rows = await read.fetch_in(
            head + ' AND c.warning_id IN (SELECT id FROM "warning") AND c.contact_id IN {ids}',
            list(contact_ids),
            (number,),
            "text",
        )
    else:
        rows = await read.fetch(
            head + " AND c.state = 'active'"
            " AND c.warning_id IN (SELECT id FROM \"warning\" WHERE state = 'active')",
            (number,),
        )
    out = []
    for cid, code, state, last, at, ostate, made in rows:
        if ostate in ("sent", "sending") or int(made or 0) > 1:
            out.append((read.ts(at), int(cid), code, state, last))
    out.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [(cid, code, state, last) for _at, cid, code, state, last in out[:limit]]


async def by_token(read: Any, token: str) -> tuple[int, str, str, datetime] | None:
    """(call id, latest message id, its text, when it was made) of a confirmation token."""
    rows = await read.fetch(
        'SELECT c.id, o.id, o.text, o.at FROM "call" c JOIN outbox o ON o.id = c.last_message'
        " WHERE c.token = ?",
        (token,),
    )
    if not rows:
        return None
    cid, mid, text, at = rows[0]
    return int(cid), mid, text, read.ts(at)


async def call_open(read: Any, message_ids: Sequence[str]) -> set[str]:
    """The message ids among ``message_ids`` whose call is still open."""
    rows = await read.fetch_in(
        'SELECT o.id FROM outbox o JOIN "call" c ON c.id = o.call_id'
        " WHERE c.state = 'active' AND o.id IN {ids}",
        sorted(set(message_ids)),
        (),
        "text",
    )
    return {r[0] for r in rows}
