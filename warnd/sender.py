"""The daemon's sender: due messages out through the dispatcher, outcomes into the store.

A pipeline, not batches: messages are taken from the store a claim at a time (8 × the channels'
concurrency, at most 500) and each is sent as soon as a slot is free; its outcome goes to the
single writer as it completes and is group-committed with whatever else is being written.

**In flight is bounded by the concurrency.** A slot is held from the moment a message is handed
to the dispatcher until its outcome is committed: so at any instant at most ``concurrency``
messages have left (or may have left) without a durable record, and a SIGKILL re-sends at most
those, under their own ids. On SQLite a restarted daemon takes everything still pending at once
(one daemon per store file: nothing else can hold it); on PostgreSQL the messages of a dead
instance return to the queue within two of its heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from warnd import metrics
from warnd.dispatch import Dispatcher
from warnd.engine import Engine
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
    """Sends until nothing is due; ``poke()`` asks it to look again (new messages queued)."""

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
        self._slots = asyncio.Semaphore(self.concurrency)
        self._observers = list(observers)
        self._spawn = spawn
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._inflight: set[asyncio.Task[None]] = set()

    def poke(self) -> asyncio.Task[None] | None:
        """Start sending, or make the running sender take another look before it stops."""
        if self._task is not None and not self._task.done():
            self._again = True
            return None
        self._again = False
        coro = self._run()
        self._task = self._spawn(coro) if self._spawn else asyncio.ensure_future(coro)
        return self._task

    async def _run(self) -> None:
        running = gc.isenabled()
        gc.disable()  # hundreds of requests' acyclic garbage: reference counting frees it
        rounds = 0
        try:
            while True:
                self._again = False
                try:
                    batch = await self.engine.claim(self.claim)
                except Exception:  # the store is busy or down: the messages stay queued
                    log.exception("sender_failed")
                    break
                if not batch:
                    if self._inflight:
                        await asyncio.wait(set(self._inflight))
                        continue  # what failed transiently is due later; new work may be due
                    if self._again:
                        continue
                    break
                tasks = []
                for msg in batch:
                    await self._slots.acquire()
                    task = asyncio.ensure_future(self._one(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                    tasks.append(task)
                if self._observers:
                    self._observe_after(tasks, batch)
                rounds += 1
                if rounds % 8 == 0 and running:
                    gc.collect(0)  # the youngest generation only: cheap, keeps cycles in check
        finally:
            if running:
                gc.enable()

    async def _one(self, msg: Attempt) -> None:
        engine = self.engine
        started = time.monotonic()
        try:
            await self.dispatcher.send(msg, engine.ctx.directory)
            metrics.SENT.labels(msg.channel or "-", msg.purpose, _RESULT[msg.outcome]).inc()
            if msg.outcome == "sent":
                log.info(
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
            await engine.record_one(msg)  # the slot is free once the outcome is durable
        except Exception:
            log.exception("send_record_failed", message=msg.id)
        finally:
            self._slots.release()

    def _observe_after(self, tasks: list[asyncio.Task[None]], batch: list[Attempt]) -> None:
        async def later() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)
            for group in self._observers:
                with contextlib.suppress(Exception):
                    await group.observe(batch, self.engine.ctx.directory)

        if self._spawn:
            self._spawn(later())
        else:
            task = asyncio.ensure_future(later())
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def idle(self) -> None:
        """Wait until the sender has stopped (nothing due, nothing in flight)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})


_RESULT = {"sent": "sent", "failed": "failed", "retry": "retry", None: "failed"}
