"""The daemon's sender: due messages out through the dispatcher, outcomes into the store.

A pipeline, not batches: messages are taken from the store a claim at a time (8 × the channels'
concurrency, at most 500) into a queue that ``concurrency`` workers drain; each outcome goes to
the single writer as it completes and is group-committed with whatever else is being written.

**In flight is bounded by the concurrency.** A worker holds its message from the moment it
hands it to the dispatcher until its outcome is committed: so at any instant at most
``concurrency`` messages have left (or may have left) without a durable record, and a SIGKILL
re-sends at most those, under their own ids. On SQLite a restarted daemon takes everything
still pending at once (one daemon per store file: nothing else can hold it); on PostgreSQL the
messages of a dead instance return to the queue within two of its heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from warnd.edges import metrics
from warnd.edges.dispatch import Dispatcher
from warnd.engine import Engine
from warnd.engine.gcpause import gc_paused
from warnd.engine.outbox import Attempt

log = structlog.get_logger("warnd.daemon")

CLAIM_MAX = 500


def claim_size(concurrency: int) -> int:
    """Messages taken per claim, for channels with ``concurrency`` slots in all.

    A few rounds of every slot keep the channels busy; a bounded claim lets instances that
    share a database split a county-sized wave.
    """
    return max(1, min(CLAIM_MAX, 8 * concurrency))


class Sender:
    """Sends until nothing is due; ``poke()`` asks it to look again (new messages queued).

    ``concurrency`` workers each take a message, send it and wait until its outcome is
    committed before taking the next: the bound on what a crash can resend. A claim refills
    the queue while they work (no task or semaphore per message: a province sends 100,000).
    """

    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        *,
        concurrency: int,
        observers: Sequence[Any] = (),
        spawn: Callable[[Any], asyncio.Task[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.concurrency = max(1, concurrency)
        self.claim = claim_size(self.concurrency)
        self._observers = list(observers)
        self._spawn = spawn
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._queue: deque[Attempt] = deque()
        self._more = asyncio.Event()  # the queue was refilled, or nothing more will come
        self._low = asyncio.Event()  # the queue ran low: time for the next claim
        self._done = False
        self._busy = 0
        self._held: dict[str, datetime] = {}  # handed to the dispatcher, no outcome yet: since

    @property
    def holding(self) -> int:
        """Messages handed to the dispatcher and without an outcome yet."""
        return len(self._held)

    def held(self, limit: timedelta) -> tuple[int, datetime | None]:
        """Messages without an outcome for longer than ``limit``, and the oldest hand-over."""
        now = self.engine.ctx.now()
        old = [t for t in self._held.values() if now - t > limit]
        return len(old), min(old, default=None)

    def poke(self) -> asyncio.Task[None] | None:
        """Start sending, or make the running sender take another look before it stops."""
        if self._task is not None and not self._task.done():
            self._again = True  # looked at when the queue runs low
            return None
        self._again = False
        coro = self._run()
        self._task = self._spawn(coro) if self._spawn else asyncio.ensure_future(coro)
        return self._task

    async def _run(self) -> None:
        with gc_paused():  # hundreds of requests' acyclic garbage: reference counting frees it
            await self._send()

    async def _send(self) -> None:
        self._done = False
        workers = [asyncio.ensure_future(self._worker()) for _ in range(self.concurrency)]
        rounds = 0
        try:
            while True:
                self._again = False
                try:
                    batch = await self.engine.claim(self.claim)
                except Exception:  # the store is busy or down: the messages stay queued
                    log.exception("sender_failed")
                    break
                if batch:
                    self._queue.extend(batch)
                    self._more.set()
                    if self._observers:
                        self._observe_after(batch)
                    rounds += 1
                    if rounds % 8 == 0:
                        gc.collect(0)  # the youngest generation only: cheap
                    while len(self._queue) >= self.concurrency:
                        self._low.clear()  # refill when the queue runs low
                        await self._low.wait()
                    continue
                if self._queue or self._busy:
                    # what failed transiently is due later; new messages may be queued
                    self._low.clear()
                    await self._low.wait()
                    continue
                if not self._again:
                    break
        finally:
            self._done = True
            self._more.set()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        queue, engine, dispatcher = self._queue, self.engine, self.dispatcher
        said = log.bind()  # bound once: the module's lazy proxy binds anew on every line
        while True:
            if not queue:
                if self._done:
                    return
                self._low.set()
                self._more.clear()
                await self._more.wait()
                continue
            msg = queue.popleft()
            if len(queue) < self.concurrency:
                self._low.set()
            self._busy += 1
            started = time.monotonic()
            self._held[msg.id] = engine.ctx.now()
            try:
                await dispatcher.send(msg, engine.ctx.directory)
                _count(msg)
                if msg.outcome == "sent":
                    said.info(
                        "message_sent",
                        message=msg.id,
                        warning=msg.warning,
                        contact=msg.contact,
                        purpose=msg.purpose,
                        attempt=msg.attempt,
                        channel=msg.channel,
                        kind=msg.kind,
                        ms=round((time.monotonic() - started) * 1000),
                    )
                await engine.record_one(msg)  # the next message once this outcome is durable
            except Exception:
                log.exception("send_record_failed", message=msg.id)
            finally:
                self._held.pop(msg.id, None)
                self._busy -= 1
                if not queue and not self._busy:
                    self._low.set()

    def _observe_after(self, batch: list[Attempt]) -> None:
        """Duty-group robots summarise a claim once every message of it has an outcome."""

        async def later() -> None:
            while any(m.outcome is None for m in batch) and not self._done:
                await asyncio.sleep(0.05)
            for group in self._observers:
                with contextlib.suppress(Exception):
                    await group.observe(batch, self.engine.ctx.directory)

        if self._spawn:
            self._spawn(later())

    async def idle(self) -> None:
        """Wait until the sender has stopped (nothing due, nothing in flight)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})


_children: dict[tuple[str, str, str], Any] = {}


def _count(msg: Attempt) -> None:
    """``warnd_messages_total`` (the labelled child cached: ``labels`` costs more than ``inc``)."""
    key = (msg.channel or "-", msg.purpose, _RESULT[msg.outcome])
    child = _children.get(key)
    if child is None:
        child = _children[key] = metrics.SENT.labels(*key)
    child.inc()


_RESULT = {"sent": "sent", "failed": "failed", "retry": "retry", None: "failed"}
