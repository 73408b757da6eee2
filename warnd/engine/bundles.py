"""Bundling carried out (contracts §8): the rules are ``warnd.core.chain.bundle``'s, pure.

Only with ``[ack] bundle`` > 0; with "0s" nothing here runs. In a batch of stepped divisions
(one writer transaction):

- ``gather``: the persons the batch makes attempts to have their other attempts due within
  ``[now, now + bundle]`` on other warnings brought forward (``bundle.pull``): running calls'
  next attempts (``ladder.Early``), divisions of a fired stage where they are A persons that
  wait for another batch to start them (started with this one), and their first attempt of a
  stage that has not fired yet (``ladder.StartOne``; the division is written now, the stage
  starts the rest of it when it fires). Divisions another instance is stepping are left
  alone (``SKIP LOCKED``).
- ``combine``: a person's attempts of the batch on two warnings or more (``bundle.groups``)
  become one message: the first row (the lead) is sent with a text naming every warning, the
  others are kept as ``bundled`` rows (each its own history record); all carry the lead's id
  in ``outbox.bundle``, by which an answer to one answers all (``warnd.engine.acks``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from warnd.core.chain import bundle, ladder
from warnd.core.notice import BundleItem, bundle_text
from warnd.engine.context import Context
from warnd.store import chain
from warnd.store.records import DivisionRow, WarningRec, to_state
from warnd.store.tx import Row, Tx

if TYPE_CHECKING:
    from warnd.engine.records import Rows, Stepped

#: rungs whose texts name the place they call for (as ``records._division`` does)
_BEHALF = ("superior", "duty")


def _person(contact_id: str, drill: bool) -> str:
    """Drill and real attempts never share a message."""
    return contact_id + "\x00drill" if drill else contact_id


async def gather(
    ctx: Context,
    tx: Tx,
    batch: list[Stepped],
    warnings: dict[int, WarningRec],
    now: datetime,
) -> set[int]:
    """Bring forward, into ``batch``, the attempts its persons have due within the span.
    Returns the divisions whose start (their stage fired) this brought into the batch."""
    from warnd.engine.records import Stepped

    span = ctx.policy.ack.bundle
    made: list[bundle.Made] = []
    contacts: set[str] = set()
    for s in batch:
        w = warnings[s.row.warning_id]
        for cmd in s.commands:
            if type(cmd) is ladder.SendAttempt:
                made.append(bundle.Made(_person(cmd.contact_id, w.drill), w.id))
                contacts.add(cmd.contact_id)
    if not made:
        return set()
    until = now + span
    rules, people = ctx.rules, ctx.people
    waiting: list[bundle.Waiting] = [
        bundle.Waiting(_person(contact, drill), wid, due, ("call", did, key))
        for did, key, contact, wid, due, drill in await chain.waiting_calls(
            tx, sorted(contacts), until, rules.attempts
        )
    ]
    stages = await chain.stages_due_by(tx, now, until)
    if stages:
        more = {wid for _i, wid, _l, _d in stages if wid not in warnings}
        warnings.update(await chain.warnings_by_id(tx, more))
        for _sid, wid, level, due in stages:
            w = warnings[wid]
            if w.state != "active" or (w.expires_at is not None and now >= w.expires_at):
                continue
            for d in ctx.directory.overlapping(list(w.area), level):  # type: ignore[arg-type]
                for p in people.for_rung(d.code, ladder.STAGE):
                    if p in contacts:
                        here = ("stage", d, p)
                        waiting.append(bundle.Waiting(_person(p, w.drill), wid, due, here))
    # divisions of fired stages still waiting to start (another batch's): where a person of
    # this batch is an A person, the whole division starts now, with this batch
    posts: dict[str, list[str]] = defaultdict(list)
    for c in contacts:
        contact = ctx.directory.contact(c)
        if contact is not None and contact.rank == "A":
            posts[contact.division_code].append(c)
    in_batch_ids = {s.row.id for s in batch}
    if posts:
        for did, wid, code, due, drill in await chain.queued_starts(tx, sorted(posts), now):
            if did not in in_batch_ids:
                for c in posts[code]:
                    waiting.append(bundle.Waiting(_person(c, drill), wid, due, ("start", did)))
    pulled = bundle.pull(made, waiting, now, span)
    if not pulled:
        return set()
    starts: set[int] = set()
    events: dict[int, list[ladder.Event]] = defaultdict(list)
    ahead: dict[int, dict[str, tuple[Any, list[str]]]] = defaultdict(dict)
    for wt in pulled:
        ref: Any = wt.ref
        if ref[0] == "call":
            events[int(ref[1])].append(ladder.Early(ref[2], until))
        elif ref[0] == "start":
            if ref[1] not in starts:
                starts.add(ref[1])
                events[ref[1]].append(ladder.Start())
        else:
            _k, place, contact = ref
            entry = ahead[wt.warning].setdefault(place.code, (place, []))
            entry[1].append(contact)
    fresh: dict[int, DivisionRow] = {}
    for wid, codes in ahead.items():
        existing = await chain.division_codes(tx, wid)
        new = [place for code, (place, _c) in codes.items() if code not in existing]
        ids = await chain.insert_divisions(
            tx,
            [
                (
                    wid, n.code, n.name, n.level, n.code[:6], 0, ladder.STAGE, None, None, None,
                    None, None, False, None,
                )
                for n in new
            ],
        )  # fmt: skip
        for n, new_id in zip(new, ids, strict=True):
            values = (0, ladder.STAGE, None, None, None, None, None, False)
            fresh[new_id] = DivisionRow(new_id, wid, n.code, n.name, n.level, values)
            existing[n.code] = new_id
        for code, (_d, persons) in codes.items():
            events[existing[code]].extend(ladder.StartOne(c) for c in persons)
    in_batch = {s.row.id: s for s in batch}
    others = [did for did in events if did not in in_batch and did not in fresh]
    loaded = await chain.load_divisions(tx, others, skip=True) if others else {}
    more = {row.warning_id for row, _c in loaded.values() if row.warning_id not in warnings}
    if more:
        warnings.update(await chain.warnings_by_id(tx, more))
    step = ladder.step
    for did, evs in events.items():
        found = in_batch.get(did)
        if found is not None:
            s = found
        else:
            if did in fresh:
                s = Stepped(fresh[did], [], to_state(fresh[did], []), [])
            elif did in loaded:
                row, calls = loaded[did]
                s = Stepped(row, calls, to_state(row, calls), [])
            else:
                starts.discard(did)
                continue  # another instance is stepping it: its attempt keeps its own time
            batch.append(s)
            in_batch[did] = s
        state = s.state
        for ev in evs:
            state, out = step(state, ev, now, rules, people)
            s.commands.extend(out)
        s.state = state
    return starts


def combine(ctx: Context, rows: Rows) -> list[Row]:
    """Group the batch's attempt rows into messages (in place); the ``(bundle, id)`` rows of
    ``outbox.bundle``."""
    parts = rows.parts
    assert parts is not None
    attempts = rows.attempts
    made = [bundle.Made(_person(r[4], bool(r[14])), r[1], r[7]) for r in attempts]
    out: list[Row] = []
    for group in bundle.groups(made):
        lead = group[0]
        _wf, _name, _cmd, code, token, links = parts[lead]
        items = [
            BundleItem(
                parts[i][0],
                parts[i][1],
                parts[i][2].rung,
                parts[i][2].attempt,
                parts[i][1] if parts[i][2].rung in _BEHALF else None,
            )
            for i in group
        ]
        link = f"{links}/a/{token}" if links and token else None
        text = bundle_text(items, reply_code=code, link=link, tz=ctx.tz)
        lead_id = attempts[lead][0]
        for i in group:
            r = attempts[i]
            if i == lead:
                attempts[i] = (*r[:9], text, *r[10:])
            else:  # carried by the lead: never sent itself
                attempts[i] = (*r[:12], "bundled", *r[13:])
            out.append((lead_id, r[0]))
    return out
