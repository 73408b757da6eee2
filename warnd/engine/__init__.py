"""The engine: one manager per concern, stepped by an explicit ``tick()``.

Production calls ``tick()`` whenever APScheduler wakes it (at the next due row, or after new
input); tests and drills call it after moving a ``ManualClock``. The database rows are the
truth: the engine keeps nothing between ticks that a restart would miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import col

from warnd.engine import acks, calls, ingest, outbox
from warnd.engine.context import Context
from warnd.feeds import FeedItem, IngestResult
from warnd.store.tables import Call, Outbox, Stage, WarningRow


@dataclass(frozen=True, slots=True)
class TickReport:
    at: datetime
    stages_fired: int
    calls_advanced: int


class Engine:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def ingest(self, item: FeedItem) -> IngestResult:
        return await ingest.ingest(self.ctx, item)

    async def tick(self) -> TickReport:
        now = self.ctx.now()
        fired = await calls.fire_due_stages(self.ctx, now)
        advanced = await calls.advance_due_calls(self.ctx, now)
        return TickReport(now, fired, advanced)

    async def next_due(self) -> datetime | None:
        """When the engine (or the sender) next has work: the earliest due row."""
        async with self.ctx.store.read() as s:
            candidates = [
                (
                    await s.execute(
                        select(func.min(col(Stage.due_at)))
                        .join(WarningRow, col(WarningRow.id) == col(Stage.warning_id))
                        .where(col(Stage.state) == "pending", col(WarningRow.state) == "active")
                    )
                ).scalar(),
                (
                    await s.execute(
                        select(func.min(col(Call.next_due_at))).where(col(Call.state) == "active")
                    )
                ).scalar(),
                (
                    await s.execute(
                        select(func.min(col(Outbox.due_at))).where(col(Outbox.state) == "pending")
                    )
                ).scalar(),
                (
                    await s.execute(
                        select(func.min(col(Outbox.lease_until))).where(
                            col(Outbox.state) == "sending"
                        )
                    )
                ).scalar(),
            ]
        dues = [_aware(c) for c in candidates if c is not None]
        return min(dues) if dues else None

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
    async def claim(self, limit: int = 500) -> list[outbox.Claimed]:
        return await outbox.claim(self.ctx, self.ctx.now(), limit)

    async def renew(self, message_ids: list[str]) -> int:
        return await outbox.renew(self.ctx, message_ids, self.ctx.now())

    async def mark_sent(self, message_id: str, channel: str) -> None:
        await outbox.mark_sent(self.ctx, message_id, channel, self.ctx.now())

    async def mark(self, outcomes: list[outbox.Outcome]) -> None:
        await outbox.mark(self.ctx, outcomes, self.ctx.now())

    async def mark_failed(self, message_id: str, error: str, *, permanent: bool) -> None:
        await outbox.mark_failed(
            self.ctx, message_id, error, permanent=permanent, now=self.ctx.now()
        )


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


__all__ = ["Context", "Engine", "TickReport"]
