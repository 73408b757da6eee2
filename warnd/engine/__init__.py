"""The engine: one manager per concern, stepped by an explicit ``tick()``.

Production calls ``tick()`` whenever APScheduler wakes it (at the next due row, or after new
input); tests and drills call it after moving a ``ManualClock``. The database rows are the
truth: the engine keeps nothing between ticks that a restart would miss. Every change goes
through the store's single writer (``warnd.store.writer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from warnd.edges.feeds import FeedItem, IngestResult
from warnd.engine import acks, calls, ingest, outbox
from warnd.engine.context import Context
from warnd.engine.outbox import Attempt
from warnd.store import chain


@dataclass(frozen=True, slots=True)
class TickReport:
    at: datetime
    stages_fired: int
    calls_advanced: int
    divisions_started: int = 0

    @property
    def progressed(self) -> bool:
        return bool(self.stages_fired or self.calls_advanced or self.divisions_started)


class Engine:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ingest(self, item: FeedItem) -> IngestResult:
        return await ingest.ingest(self.ctx, item)

    async def tick(self) -> TickReport:
        now = self.ctx.now()
        fired = await calls.fire_due_stages(self.ctx, now)
        started = await calls.start_due_divisions(self.ctx, now)
        advanced = await calls.advance_due_calls(self.ctx, now)
        return TickReport(now, fired, advanced, started)

    async def next_due(self) -> datetime | None:
        """When the engine (or the sender) next has work: the earliest due row."""
        return await chain.next_due(self.ctx.store.backend)

    # acknowledgements
    async def ack_ivr(self, message_id: str, digits: str) -> acks.AckResult:
        return await acks.ack_ivr(self.ctx, message_id, digits)

    async def ack_reply(self, phone: str, text: str) -> acks.AckResult:
        return await acks.ack_reply(self.ctx, phone, text)

    async def ack_token(self, token: str) -> acks.AckResult:
        return await acks.ack_token(self.ctx, token)

    async def describe_token(self, token: str) -> str | None:
        return await acks.describe_token(self.ctx, token)

    async def ack_message(self, message_id: str, source: str) -> acks.AckResult:
        return await acks.ack_message(self.ctx, message_id, source=source)

    async def ack_messages(
        self, message_ids: Sequence[str], source: str, *, only_open: bool = False
    ) -> list[acks.AckResult]:
        """Answers arriving together, applied in order in one transaction (a drill's)."""
        now = self.ctx.now()
        return await acks.submit_many(
            self.ctx,
            [acks.AckRequest(source, now, message_id=m, only_open=only_open) for m in message_ids],
        )

    async def ack_by_officer(
        self,
        *,
        warning: str,
        contact_id: str | None,
        division: str | None,
        by: str,
        note: str | None,
    ) -> acks.AckResult:
        return await acks.ack_by_officer(
            self.ctx, warning=warning, contact_id=contact_id, division=division, by=by, note=note
        )

    # sending
    async def claim(self, limit: int = 500) -> list[Attempt]:
        return await outbox.claim(self.ctx, self.ctx.now(), limit)

    async def record(self, attempts: Sequence[Attempt]) -> None:
        """Outcomes of claimed attempts (each with ``sent``/``failed`` set)."""
        await outbox.record(self.ctx, attempts)

    async def record_one(self, attempt: Attempt) -> None:
        await outbox.record_one(self.ctx, attempt)


__all__ = ["Attempt", "Context", "Engine", "TickReport"]
