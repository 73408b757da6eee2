"""Carrying out what the ladder decided: new calls, attempt rows, history events, saved states.

One pass over a batch of stepped divisions (``carry_out``): new calls get their ids, reply codes
(unique among the person's open calls) and link tokens; each ``SendAttempt`` becomes an outbox
row (the message and its own record: no ``notify`` event beside it); each ``Record`` that has no
row of its own (``escalate``, ``unreached``) an event row; every call names its latest attempt.
Rows take ``tx.seq()`` in the order the ladder produced them, so the history reads back in
that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from warnd.core.chain import ladder
from warnd.core.notice import WarningFacts, call_text
from warnd.engine.context import Context
from warnd.engine.ids import new_link_token, new_message_id, new_reply_code
from warnd.engine.people import on_behalf
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


#: (division id, call key) → (call id, number, reply code, link token) of calls made in a batch
Made = dict[tuple[int, str], tuple[int, str, str | None, str | None]]


@dataclass(slots=True)
class Rows:
    """What a batch writes (tuples in the store's layouts)."""

    attempts: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)
    call_updates: list[Row] = field(default_factory=list)
    call_inserts: list[Row] = field(default_factory=list)
    #: bundling on (contracts §8): per attempt row, what a bundled message says of it
    parts: list[Any] | None = None


async def carry_out(
    ctx: Context,
    tx: Tx,
    batch: list[Stepped],
    warnings: dict[int, WarningRec],
    now: datetime,
    started: frozenset[int] = frozenset(),
) -> int:
    """Write a stepped batch: saved states, new calls, attempts, events. Returns attempts.
    ``started``: divisions whose stage's start this batch did."""
    made = await _new_calls(ctx, tx, batch)
    bundling = bool(ctx.policy.ack.bundle)
    rows = Rows(parts=[] if bundling else None)
    links = ctx.public_url.rstrip("/") if ctx.public_url else None
    wfacts: dict[int, WarningFacts] = {}
    said = log.bind()  # one bound logger for the batch, not one per line
    for s in batch:
        w = warnings[s.row.warning_id]
        wf = wfacts.get(w.id)
        if wf is None:
            wf = wfacts[w.id] = facts(w)
        _division(ctx, tx, s, w, wf, made, links, now, rows, said)
    chain.save_divisions(tx, [(s.row, s.state) for s in batch], started)
    chain.save_calls(tx, rows.call_updates, rows.call_inserts)
    if bundling:
        from warnd.engine.bundles import combine  # (bundles imports this module)

        bundled = combine(ctx, rows)
    chain.insert_attempts(tx, rows.attempts)
    if bundling:
        chain.mark_bundled(tx, bundled)
    chain.insert_events(tx, rows.events)
    return len(rows.attempts)


async def _new_calls(ctx: Context, tx: Tx, batch: list[Stepped]) -> Made:
    """Ids, numbers, reply codes (unique among each person's open calls) and link tokens of
    the calls the ladder started in this batch."""
    fresh: list[tuple[Stepped, ladder.CallState]] = []
    for s in batch:
        known = {c.values[0] for c in s.calls}
        fresh.extend((s, cs) for cs in s.state.calls if cs.key not in known)
    new_ids = await tx.new_ids("call", len(fresh))
    taken = await chain.open_codes(tx, sorted({cs.contact_id for _s, cs in fresh}))
    links = bool(ctx.public_url)
    directory = ctx.directory
    made: Made = {}
    phones: dict[int, dict[str, str]] = {}
    for (s, cs), cid in zip(fresh, new_ids, strict=True):
        # a person called again on this division's behalf keeps the number first called
        numbers = phones.get(s.row.id)
        if numbers is None:
            numbers = phones[s.row.id] = {c.values[1]: c.phone for c in s.calls}
        number = numbers.get(cs.contact_id)
        if number is None:
            contact = directory.contact(cs.contact_id)
            number = contact.phone if contact is not None else ""
        mine = taken.setdefault(cs.contact_id, set())
        code = new_reply_code(mine)
        mine.add(code)
        made[(s.row.id, cs.key)] = (cid, number, code, new_link_token() if links else None)
    return made


def _division(
    ctx: Context,
    tx: Tx,
    s: Stepped,
    w: WarningRec,
    wf: WarningFacts,
    made: Made,
    links: str | None,
    now: datetime,
    rows: Rows,
    said: Any,
) -> None:
    """One division's commands as rows, in the order the ladder gave them."""
    row = s.row
    by_key = {c.values[0]: c for c in s.calls}
    last: dict[str, str] = {}
    seq = tx.seq
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
                tz=ctx.tz,
                on_behalf_of=row.name if on_behalf(cmd.rung) else None,
            )
            rows.attempts.append(
                (
                    mid, w.id, cid, None, cmd.contact_id, phone, "call", cmd.attempt, cmd.rung,
                    text, now, now, "pending", 0, w.drill, seq(),
                )
            )  # fmt: skip
            last[cmd.call_key] = mid
            if rows.parts is not None:
                rows.parts.append((wf, row.name, cmd, code, token, links))
        elif type(cmd) is ladder.Record and cmd.type not in _OWN_ROWS:
            rows.events.append(
                (w.id, now, cmd.type, cmd.contact_id, row.code, row.level, dict(cmd.data), seq())
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
                rows.call_updates.append(change)
        else:
            cid, phone, code, token = made[(row.id, cs.key)]
            rows.call_inserts.append((cid, w.id, row.id, phone, code, token, last.get(cs.key), *cs))
