"""The outbox seen from the sender: due messages taken as ``Attempt`` records, outcomes kept.

An ``Attempt`` is the one record of an outbound message from the moment it is taken for sending
(``claim``) through the dispatcher (which sets its outcome: ``sent``, ``failed``) to the store
(``record``). Outcomes are group-committed by the single writer as they come; the caller learns
an outcome is durable when ``record`` returns. How messages are taken (SQLite: remembered by the
process; PostgreSQL: claimed rows shared by instances) is the store's business
(``warnd.store.outbox``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from warnd.engine.context import Context
from warnd.store import outbox as store_outbox
from warnd.store.tx import Row, Tx

log = structlog.get_logger("warnd.outbox")

RETRY_AFTER = store_outbox.RETRY_AFTER
NO_LONGER_OPEN = "call no longer open"


@dataclass(slots=True)
class Attempt:
    """One outbound message — a call attempt, or an update/lift notice — and its outcome."""

    id: str  # the message id: the gateway's idempotency key (contracts §5)
    to: str
    purpose: str  # call|update|lift
    text: str
    warning: str  # the warning's key
    contact: str
    drill: bool
    attempt: int | None
    rung: str | None
    reply_code: str | None
    token: str | None
    call_id: int | None
    tries: int  # outcomes recorded before this one
    #: the outcome: None (not yet), "sent", "failed" (for good), "retry" (later), "cancelled"
    outcome: str | None = None
    channel: str | None = None
    kind: str | None = None
    error: str | None = None

    def sent(self, channel: str, kind: str | None = None) -> Attempt:
        self.outcome, self.channel, self.kind, self.error = "sent", channel, kind, None
        return self

    def failed(self, error: str, *, permanent: bool) -> Attempt:
        """Permanent: the attempt failed (the ladder goes on by its timers); else retried."""
        self.outcome, self.error = ("failed" if permanent else "retry"), error
        return self

    @property
    def ok(self) -> bool:
        return self.outcome == "sent"

    @property
    def route(self) -> str | None:
        """``<channel>/<kind>`` as stored in ``outbox.channel``."""
        if self.channel is None:
            return None
        return f"{self.channel}/{self.kind}" if self.kind else self.channel


def _attempt(r: Row) -> Attempt:
    return Attempt(
        r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], r[9], r[10], r[11], r[12]
    )


async def claim(ctx: Context, now: datetime, limit: int) -> list[Attempt]:
    """Take due messages for sending (not again until their outcome is recorded or the process
    is gone). Stale call attempts are recorded ``cancelled`` on the way, not returned."""
    store = ctx.store
    rows = await store_outbox.take(store, now, limit, ctx.instance)
    fresh: list[Attempt] = []
    stale: list[Attempt] = []
    for r in rows:
        (stale if store_outbox.stale(r) else fresh).append(_attempt(r))
    if stale:
        # Answered, cancelled, or overtaken by the next attempt: sending is pointless.
        for a in stale:
            a.outcome, a.error = "cancelled", NO_LONGER_OPEN
        await record(ctx, stale)
    if ctx.policy.ack.bundle and len(fresh) > 1:
        fresh = await _bundle_notices(ctx, fresh)
    return fresh


_NOTICES = ("update", "lift")


async def _bundle_notices(ctx: Context, taken: list[Attempt]) -> list[Attempt]:
    """Update and lift notices due together to one person on several warnings: one message
    (contracts §8). The lead's row takes the joined text (a retry sends the same); the others
    are kept ``bundled`` under its id. Calls are never touched here."""
    from warnd.core.chain import bundle
    from warnd.core.notice import notices_text

    notices = [a for a in taken if a.purpose in _NOTICES]
    if len(notices) < 2:
        return taken
    made = [bundle.Made(a.contact + ("\x00drill" if a.drill else ""), a.warning) for a in notices]
    leads: list[tuple[str, str, str]] = []
    riders: list[tuple[str, str]] = []
    gone: set[str] = set()
    for group in bundle.groups(made):
        lead = notices[group[0]]
        lead.text = notices_text([notices[i].text for i in group])
        leads.append((lead.text, lead.id, lead.id))
        for i in group[1:]:
            riders.append((lead.id, notices[i].id))
            gone.add(notices[i].id)
    if not leads:
        return taken

    async def job(tx: Tx) -> None:
        tx.many("UPDATE outbox SET text = ?, bundle = ? WHERE id = ?", leads)
        tx.many(
            "UPDATE outbox SET state = 'bundled', bundle = ?, claimed_by = NULL"
            f" WHERE id = ? AND {store_outbox.LIVE}",
            riders,
        )

    try:
        await ctx.store.writer.run(job)
    finally:
        ctx.store.release(sorted(gone))
    return [a for a in taken if a.id not in gone]


def _handler(ctx: Context) -> Any:
    h = ctx.handlers.get("outcomes")
    if h is None:

        async def h(tx: Tx, items: list[Attempt]) -> list[None]:
            _write(tx, ctx.now(), items)
            return [None] * len(items)

        ctx.handlers["outcomes"] = h
    return h


def _write(tx: Tx, now: datetime, items: Sequence[Attempt]) -> None:
    sent, failed, retry, cancelled = [], [], [], []
    for a in items:
        if a.outcome == "sent":
            sent.append((a.id, a.route or "-"))
        elif a.outcome == "failed":
            failed.append((a.id, (a.error or "")[:500]))
        elif a.outcome == "retry":
            retry.append((a.id, (a.error or "")[:500]))
        elif a.outcome == "cancelled":
            cancelled.append((a.id, (a.error or "")[:500]))
        else:
            raise ValueError(f"attempt {a.id} has no outcome to record")
    store_outbox.record(tx, now, sent, failed, retry, cancelled)


async def record_one(ctx: Context, attempt: Attempt) -> None:
    """One outcome, group-committed with whatever else is being recorded; durable on return."""
    try:
        await ctx.store.writer.batch(_handler(ctx), attempt)
    finally:
        ctx.store.release([attempt.id])
    _logged(attempt)


async def record(ctx: Context, attempts: Sequence[Attempt]) -> None:
    """Several outcomes at once (a drill's, a test's)."""
    try:
        await ctx.store.writer.batch_many(_handler(ctx), attempts)
    finally:
        ctx.store.release([a.id for a in attempts])
    for a in attempts:
        _logged(a)


def _logged(a: Attempt) -> None:
    if a.outcome in ("failed", "retry"):
        log.warning(
            "send_failed",
            message=a.id,
            permanent=a.outcome == "failed",
            error=(a.error or "")[:200],
        )
