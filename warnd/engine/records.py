"""Carrying out what the ladder decided: new calls, attempt rows, history events, saved states.

One pass over a batch of stepped divisions (``carry_out``): new calls get their ids, reply codes
(unique among the person's open calls) and link tokens; each ``SendAttempt`` becomes an outbox
row (the message and its own record: no ``notify`` event beside it); each ``Record`` that has no
row of its own (``escalate``, ``unreached``) an event row; every call names its latest attempt.
Rows take ``tx.seq()`` in the order the ladder produced them, so the history reads back in
that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from warnd.chain import ladder
from warnd.engine.context import Context
from warnd.engine.ids import new_link_token, new_message_id, new_reply_code
from warnd.notice import WarningFacts, call_text
from warnd.store import chain
from warnd.store.records import CallRow, DivisionRow, WarningRec
from warnd.store.tx import Row, Tx

log = structlog.get_logger("warnd.engine")

#: Records that are rows of their own: the attempt (``notify``) and the answer (``ack``)
_OWN_ROWS = frozenset(("notify", "ack"))
_LOGGED = frozenset(("escalate", "unreached"))


@dataclass(slots=True)
class Stepped:
    """A division after its events: its rows as loaded, its new state, the ladder's commands."""

    row: DivisionRow
    calls: list[CallRow]
    state: ladder.DivisionState
    commands: list[ladder.Command]


def facts(w: WarningRec) -> WarningFacts:
    return WarningFacts(
        key=w.key,
        headline=w.headline or w.event or w.key,
        severity=w.severity,
        reference_at=w.reference_at,
        reference_kind=w.reference_kind or "onset",
        drill=w.drill,
    )


def attempt_row(
    tx: Tx,
    w: WarningRec,
    *,
    message_id: str,
    contact_id: str,
    to: str,
    purpose: str,
    text: str,
    now: datetime,
    call_id: int | None = None,
    attempt: int | None = None,
    rung: str | None = None,
    cause: int | None = None,
) -> Row:
    """An outbox row in ``OUTBOX_INSERT`` order; ``cause``: the CAP message of a notice."""
    return (
        message_id, w.id, call_id, cause, contact_id, to, purpose, attempt, rung, text, now, now,
        "pending", 0, w.drill, tx.seq(),
    )  # fmt: skip


def event_row(
    tx: Tx,
    w: WarningRec,
    at: datetime,
    type_: str,
    *,
    contact_id: str | None = None,
    division: str | None = None,
    level: str | None = None,
    data: dict[str, Any] | None = None,
) -> Row:
    """An event row in ``EVENT_INSERT`` order."""
    return (w.id, at, type_, contact_id, division, level, data or {}, tx.seq())


async def carry_out(
    ctx: Context,
    tx: Tx,
    batch: list[Stepped],
    warnings: dict[int, WarningRec],
    now: datetime,
) -> int:
    """Write a stepped batch: saved states, new calls, attempts, events. Returns attempts."""
    fresh: list[tuple[Stepped, ladder.CallState]] = []
    for s in batch:
        known = {c.values[0] for c in s.calls}
        fresh.extend((s, cs) for cs in s.state.calls if cs.key not in known)
    new_ids = await tx.new_ids("call", len(fresh))
    taken = await chain.open_codes(tx, sorted({cs.contact_id for _s, cs in fresh}))
    links = ctx.public_url.rstrip("/") if ctx.public_url else None
    directory = ctx.directory
    # (division id, call key) → (call id, phone, reply code, token) of calls made in this batch
    made: dict[tuple[int, str], tuple[int, str, str | None, str | None]] = {}
    phones: dict[int, dict[str, str]] = {}
    for (s, cs), cid in zip(fresh, new_ids, strict=True):
        numbers = phones.get(s.row.id)
        if numbers is None:
            numbers = phones[s.row.id] = {c.values[1]: c.phone for c in s.calls}
        stored = numbers.get(cs.contact_id)
        if stored is None:
            contact = directory.contact(cs.contact_id)
            stored = contact.phone if contact is not None else ""
        mine = taken.setdefault(cs.contact_id, set())
        fresh_code = new_reply_code(mine)
        mine.add(fresh_code)
        made[(s.row.id, cs.key)] = (cid, stored, fresh_code, new_link_token() if links else None)

    attempts: list[Row] = []
    events: list[Row] = []
    call_updates: list[Row] = []
    call_inserts: list[Row] = []
    tz = ctx.tz
    wfacts: dict[int, WarningFacts] = {}
    said = log.bind()  # one bound logger for the batch, not one per line
    seq = tx.seq
    for s in batch:
        row = s.row
        w = warnings[row.warning_id]
        wf = wfacts.get(w.id)
        if wf is None:
            wf = wfacts[w.id] = facts(w)
        by_key = {c.values[0]: c for c in s.calls}
        last: dict[str, str] = {}
        for cmd in s.commands:
            if type(cmd) is ladder.SendAttempt:
                old = by_key.get(cmd.call_key)
                if old is not None:
                    cid, phone, code, token = old.id, old.phone, old.reply_code, old.token
                else:
                    cid, phone, code, token = made[(row.id, cmd.call_key)]
                mid = new_message_id()
                text = call_text(
                    wf,
                    division_name=row.name,
                    rung=cmd.rung,
                    attempt=cmd.attempt,
                    reply_code=code,
                    link=f"{links}/a/{token}" if links and token else None,
                    tz=tz,
                    on_behalf_of=row.name if cmd.rung in ("superior", "duty") else None,
                )
                attempts.append(
                    (
                        mid, w.id, cid, None, cmd.contact_id, phone, "call", cmd.attempt,
                        cmd.rung, text, now, now, "pending", 0, w.drill, seq(),
                    )
                )  # fmt: skip
                last[cmd.call_key] = mid
            elif type(cmd) is ladder.Record and cmd.type not in _OWN_ROWS:
                data = dict(cmd.data)
                events.append(
                    (w.id, now, cmd.type, cmd.contact_id, row.code, row.level, data, seq())
                )
                if cmd.type in _LOGGED:
                    said.info(
                        cmd.type,
                        warning=w.key,
                        division=row.code,
                        contact=cmd.contact_id,
                        **{str(k): v for k, v in cmd.data},
                    )
        for cs in s.state.calls:
            old = by_key.get(cs.key)
            if old is not None:
                change = chain.call_changes(old, cs, last.get(cs.key, old.last_message))
                if change is not None:
                    call_updates.append(change)
            else:
                cid, phone, code, token = made[(row.id, cs.key)]
                call_inserts.append((cid, w.id, row.id, phone, code, token, last.get(cs.key), *cs))
    chain.save_divisions(tx, [(s.row, s.state) for s in batch])
    chain.save_calls(tx, call_updates, call_inserts)
    chain.insert_attempts(tx, attempts)
    chain.insert_events(tx, events)
    return len(attempts)
