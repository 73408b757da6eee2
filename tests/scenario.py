"""A store filled by a simulated scenario: the real engine on a ManualClock over a real store
(``warnd.testing.EngineRig``).

The same mechanics as ``warnd.desk.drill.Simulation`` (every due row worked, every queued message
"sent", listed persons answer ``ack_after`` after the first attempt of each of their calls),
except that the store is the test's own (SQLite file or PostgreSQL) and kept afterwards, the
run can stop at any virtual time (a chain caught half-way: redials, escalations, not-woken
entries still open), and chosen persons' messages fail at the gateway (channel statistics).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from factory import county_rows, write_contacts

from warnd.config.policy import Policy
from warnd.edges.feeds import FeedItem
from warnd.store.answers import call_open
from warnd.testing import EngineRig

T0 = datetime(2025, 6, 14, 0, 0, tzinfo=UTC)
CHANNEL = "gateway"


class Scenario(EngineRig):
    """Drive one store through a scenario; ``store_url`` stays usable by the commands after."""

    def __init__(
        self,
        tmp: Path,
        store_url: str | None = None,
        *,
        rows: Sequence[Sequence[str]] | None = None,
        policy: Policy | None = None,
        start: datetime = T0,
        responders: dict[str, timedelta | None] | None = None,
        failing: set[str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.contacts = write_contacts(
            tmp / "contacts", rows if rows is not None else county_rows(townships=2, villages=2)
        )
        url = store_url or f"sqlite:///{tmp / 'warnd.db'}"
        super().__init__(self.contacts, url, policy=policy, start=start)
        self.responders = dict(responders or {})
        self.failing = set(failing or ())
        self._acks: list[tuple[datetime, int, str]] = []
        self._seq = 0

    def config(self, **extra: str) -> Path:
        """A config file naming this store and contacts (only the tables of contracts §2)."""
        lines = [f'[store]\nurl = "{self.url}"\n', f'[contacts]\npath = "{self.contacts}"\n']
        lines += [f"{k} = {v}\n" for k, v in extra.items()]
        path = self.tmp / "warnd.toml"
        path.write_text("".join(lines), encoding="utf-8")
        return path

    async def arrive(self, data: bytes) -> None:
        """A CAP message arrives now."""
        assert self.engine is not None
        await self.engine.ingest(FeedItem(data, "scenario"))
        await self._settle()

    async def run_until(self, until: datetime | None = None) -> None:
        """Work every due row up to ``until`` (None: until nothing is left to do)."""
        assert self.engine is not None
        while True:
            await self._settle()
            due = [t for t in (self._acks[0][0] if self._acks else None,) if t is not None]
            nxt = await self.engine.next_due()
            if nxt is not None:
                due.append(nxt)
            if not due:
                break
            target = min(due)
            if target <= self.clock.now() or (until is not None and target > until):
                break
            self.clock.set(target)
        if until is not None and until > self.clock.now():
            self.clock.set(until)

    async def _settle(self) -> None:
        """At the current instant: answers due, timers due, messages due, until quiet."""
        assert self.engine is not None
        now = self.clock.now()
        while True:
            acted = await self._due_acks(now)
            report = await self.engine.tick()
            sent = await self._send(now)
            if not (acted or report.stages_fired or report.calls_advanced or sent):
                return

    async def _send(self, now: datetime) -> bool:
        assert self.engine is not None
        claimed = await self.engine.claim(limit=100_000)
        rules = self.engine.ctx.rules
        await self.engine.record(
            [
                m.failed("HTTP 400 invalid number", permanent=True)
                if m.contact in self.failing
                else m.sent(CHANNEL)
                for m in claimed
            ]
        )
        for m in claimed:
            if m.contact in self.failing:
                continue
            if m.purpose == "call" and m.attempt == 1 and m.contact in self.responders:
                after = self.responders[m.contact]
                if after is not None and after < rules.window * rules.attempts:
                    self._seq += 1
                    heapq.heappush(self._acks, (now + after, self._seq, m.id))
        return bool(claimed)

    async def _due_acks(self, now: datetime) -> bool:
        assert self.engine is not None
        done = False
        while self._acks and self._acks[0][0] <= now:
            _at, _seq, message_id = heapq.heappop(self._acks)
            if await call_open(self.engine.ctx.store.backend, [message_id]):
                await self.engine.ack_message(message_id, "ivr")
                done = True
        return done
