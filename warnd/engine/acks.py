"""Acknowledgements: an explicit answer closes a call and reaches its division (contracts §6).

Every path (IVR key, SMS reply, link button, officer record, drill responder) ends in an
``AckRequest`` applied by ``apply``: answers that arrive while the writer is busy are applied
together in its next transaction (group commit) — their divisions loaded with one query, each
answer stepped through the pure ``ladder.step`` in the order it came, every table written with
one statement — and each caller's result is resolved only after that commit (a hook answers
200 once its answer is durable). Each answer is stored once under its dedupe key, so a
retried hook is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from warnd.core.chain import ladder
from warnd.edges import metrics
from warnd.engine.context import Context
from warnd.engine.ids import message_id_of
from warnd.engine.people import not_woken
from warnd.store import answers, chain
from warnd.store.records import to_state
from warnd.store.tx import Row, Tx

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


@dataclass(frozen=True, slots=True)
class AckRequest:
    """One answer: for an attempt (``message_id``) or directly for a call (``call_id``)."""

    source: str  # ivr|sms|link|officer|simulated
    at: datetime
    message_id: str | None = None
    call_id: int | None = None
    dedupe_key: str | None = None
    by: str | None = None
    note: str | None = None
    #: an officer named the division: the answer resolves its not-woken entry (an officer's
    #: answer on a duty office's call always does)
    resolve: bool = False
    only_open: bool = False  # a drill responder answers only while the call is open


UNKNOWN = AckResult(False, "未找到该呼叫 (unknown attempt)")
CLOSED = AckResult(False, "呼叫已结束 (call no longer open)")


async def apply(ctx: Context, tx: Tx, requests: Sequence[AckRequest]) -> list[AckResult]:
    """Apply answers in order, in bulk; the results, in the same order. An answer to a bundled
    message answers every call it carried (contracts §8)."""
    if not ctx.policy.ack.bundle or not any(r.message_id for r in requests):
        return await _apply(ctx, tx, requests)
    expanded, lead = await _with_mates(tx, requests)
    results = await _apply(ctx, tx, expanded)
    out: list[AckResult] = []
    for i, first in enumerate(lead):
        end = lead[i + 1] if i + 1 < len(lead) else len(expanded)
        mine = results[first:end]
        out.append(next((x for x in mine if x.ok and not x.duplicate), mine[0]))
    return out


async def _with_mates(tx: Tx, requests: Sequence[AckRequest]) -> tuple[list[AckRequest], list[int]]:
    """Each answer followed by one for every other attempt of its message; where each starts."""
    mids = [message_id_of(r.message_id) for r in requests if r.message_id]
    mates = await answers.bundle_mates(tx, mids)
    expanded: list[AckRequest] = []
    lead: list[int] = []
    for r in requests:
        lead.append(len(expanded))
        expanded.append(r)
        if not r.message_id:
            continue
        for m in mates.get(message_id_of(r.message_id), ()):
            key = f"{r.dedupe_key}+{m}" if r.dedupe_key else None
            expanded.append(replace(r, message_id=m, dedupe_key=key))
    return expanded, lead


async def _apply(ctx: Context, tx: Tx, requests: Sequence[AckRequest]) -> list[AckResult]:
    mids = [message_id_of(r.message_id) if r.message_id else None for r in requests]
    by_message = await answers.calls_of_attempts(tx, [m for m in mids if m])
    direct = [r.call_id for r in requests if r.message_id is None and r.call_id is not None]
    by_call = await answers.calls(tx, direct) if direct else {}
    refs = [
        by_message.get(m) if m else by_call.get(r.call_id) if r.call_id is not None else None
        for r, m in zip(requests, mids, strict=True)
    ]
    keys = [_dedupe(r, m) for r, m in zip(requests, mids, strict=True)]
    stored = await answers.seen(tx, [k for k, ref in zip(keys, refs, strict=True) if ref])
    warnings = await chain.warnings_by_id(tx, {ref.warning_id for ref in refs if ref})
    loaded = await chain.load_divisions(tx, {ref.division_id for ref in refs if ref})
    states = {did: to_state(row, calls) for did, (row, calls) in loaded.items()}
    rules, people, step = ctx.rules, ctx.people, ladder.step
    results: list[AckResult] = []
    rows: list[Row] = []
    resolved: list[tuple[datetime, str | None, str | None, int]] = []
    said = log.bind()
    for r, mid, ref, key in zip(requests, mids, refs, keys, strict=True):
        if ref is None:
            results.append(UNKNOWN)
            continue
        w = warnings[ref.warning_id]
        if key in stored:
            results.append(AckResult(True, "已确认（重复）", w.key, ref.contact_id, duplicate=True))
            continue
        state = states[ref.division_id]
        call = state.call(ref.key)
        assert call is not None
        if r.only_open and not call.active:
            results.append(CLOSED)
            continue
        stored.add(key)
        late = not call.active
        counted = False
        if w.state in ("active", "cancelled"):
            state, out = step(state, ladder.Acked(ref.key, r.source), r.at, rules, people)
            states[ref.division_id] = state
            counted = any(type(c) is ladder.Record and c.type == "ack" for c in out)
        rows.append(
            (
                w.id, ref.id, ref.division_id, mid, ref.contact_id, r.source, r.at, r.by, r.note,
                key, late, counted, tx.seq(),
            )
        )  # fmt: skip
        if r.source == "officer" and (r.resolve or not_woken(ref.rung)):
            resolved.append((r.at, r.by, r.note, ref.division_id))
        if not late:
            _time_to_ack(r.source).observe((r.at - call.start_at).total_seconds())
        said.info(
            "ack_recorded",
            warning=w.key,
            contact=ref.contact_id,
            source=r.source,
            call=ref.id,
            late=late,
        )
        results.append(AckResult(True, "已确认收到，谢谢", w.key, ref.contact_id))
    _save(tx, loaded, states)
    answers.insert_acks(tx, rows)
    answers.resolve(tx, resolved)
    return results


_observers: dict[str, Any] = {}


def _time_to_ack(source: str) -> Any:
    """The histogram child of a source (``labels`` costs more than the observation)."""
    child = _observers.get(source)
    if child is None:
        child = _observers[source] = metrics.TIME_TO_ACK.labels(source)
    return child


def _dedupe(r: AckRequest, message_id: str | None) -> str:
    if r.dedupe_key:
        return r.dedupe_key
    return f"{r.source}:{message_id if message_id else r.call_id}"


def _save(tx: Tx, loaded: dict[int, Any], states: dict[int, ladder.DivisionState]) -> None:
    """Divisions and calls an answer changed (answers start no call and send nothing)."""
    changed = []
    updates: list[Row] = []
    for did, (row, calls) in loaded.items():
        state = states[did]
        changed.append((row, state))
        if len(state.calls) != len(calls):
            raise AssertionError("an acknowledgement started a call")
        for old, new in zip(calls, state.calls, strict=True):
            change = chain.call_changes(old, new, old.last_message)
            if change is not None:
                updates.append(change)
    chain.save_divisions(tx, changed)
    chain.save_calls(tx, updates, [])


def _handler(ctx: Context) -> Any:
    """The group-commit handler of this context's answers (one per context)."""
    h = ctx.handlers.get("acks")
    if h is None:

        async def h(tx: Tx, items: list[AckRequest]) -> list[AckResult]:
            return await apply(ctx, tx, items)

        ctx.handlers["acks"] = h
    return h


async def submit(ctx: Context, request: AckRequest) -> AckResult:
    """One answer, durable when this returns."""
    result: AckResult = await ctx.store.writer.batch(_handler(ctx), request)
    return result


async def submit_many(ctx: Context, requests: Sequence[AckRequest]) -> list[AckResult]:
    """Answers arriving together (a drill's responders at one instant), applied in order."""
    return await ctx.store.writer.batch_many(_handler(ctx), requests)


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
    request = AckRequest(
        source, ctx.now(), message_id=outbox_id, dedupe_key=dedupe_key, by=by, note=note
    )
    return await submit(ctx, request)


#: A confirmation link works for this long after its call's latest attempt was queued: people
#: read the SMS late (a phone silenced at night) and a late answer is still worth recording,
#: but a link forwarded or left in a chat must not acknowledge for ever (docs/hardening.md).
TOKEN_TTL = timedelta(hours=24)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what ``secrets.token_urlsafe(24)`` makes


@dataclass(frozen=True, slots=True)
class _Link:
    message_id: str
    text: str
    expired: bool


async def _link(ctx: Context, token: str) -> _Link | None:
    """The call a confirmation token belongs to (its latest attempt), and whether it expired."""
    if not _TOKEN.fullmatch(token):
        return None  # not one of ours: no database lookup for arbitrary path junk
    found = await answers.by_token(ctx.store.backend, token)
    if found is None:
        return None
    _cid, mid, text, at = found
    return _Link(mid, text, expired=ctx.now() > at + TOKEN_TTL)


async def ack_token(ctx: Context, token: str) -> AckResult:
    """The button of a confirmation link: acknowledges its own call, only."""
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
    """An SMS reply: a short code picks the call; a bare ``1`` the number's latest open one."""
    body = text.strip()
    persons = [c.contact_id for c in ctx.directory.contacts_by_phone(phone)]
    candidates = await answers.reply_candidates(ctx.store.backend, persons, phone)
    if not candidates:
        return AckResult(False, "该号码没有待确认的呼叫 (no open call for this number)")
    codes = set(_CODE.findall(body))
    chosen: str | None = None
    if codes:
        chosen = next((mid for _c, code, _s, mid in candidates if code in codes), None)
    elif body in ("1", "１", "收到", "确认"):
        chosen = next((mid for _c, _code, st, mid in candidates if st == "active"), None)
        if chosen is None:
            chosen = candidates[0][3]
    if chosen is None:
        return AckResult(False, "回复内容无法识别，请回复1 (reply not understood)")
    return await ack_message(ctx, chosen, source="sms", dedupe_key=dedupe_key or f"sms:{chosen}")


async def ack_ivr(ctx: Context, outbox_id: str, digits: str) -> AckResult:
    """A key press on a voice call: only ``1`` acknowledges (a picked-up call does not)."""
    if digits.strip() != "1":
        return AckResult(False, "按键不是1，不算确认 (only 1 acknowledges)")
    # dedupe key "ivr:<message id>": a fallback route's id (``<id>-<n>``) is the same attempt
    result: AckResult = await ctx.store.writer.batch(
        _handler(ctx), AckRequest("ivr", ctx.now(), message_id=outbox_id)
    )
    return result


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

    async def job(tx: Tx) -> AckResult:
        w = await chain.find_warning(tx, warning)
        if w is None:
            return AckResult(False, f"未找到预警 {warning} (unknown or ambiguous warning)")
        found = await answers.officer_calls(tx, w.id, contact_id, division)
        if found is None:
            return AckResult(False, f"预警 {w.key} 不涉及区划 {division}")
        if not found:
            return AckResult(False, "没有找到对应的呼叫 (no call for that person/place)")
        call_id = next((cid for cid, st in found if st == "active"), found[0][0])
        place = await answers.officer_place(tx, call_id)
        resolves = place.open_entry and bool(division or not_woken(place.rung))
        if place.state == "acked" and not resolves:
            # answered already, nothing left to resolve: kept once (the first answer shown)
            return AckResult(
                True,
                "已应答过，未重复登记 (already acknowledged)",
                w.key,
                place.contact_id,
                duplicate=True,
                by=place.first_by,
                at=place.first_at,
                source=place.first_source,
                division=place.code,
                division_name=place.name,
                level=place.level,
            )
        request = AckRequest(
            "officer",
            now,
            call_id=call_id,
            dedupe_key=f"officer:{call_id}:{now.isoformat()}",
            by=by,
            note=note,
            resolve=bool(division),
        )
        result = (await apply(ctx, tx, [request]))[0]
        return replace(
            result,
            reason="已登记" + ("，未叫醒条目已处置" if resolves else ""),
            by=by,
            resolved=resolves,
            at=now,
            source="officer",
            division=place.code,
            division_name=place.name,
            level=place.level,
        )

    return await ctx.store.writer.run(job)
