"""The single writer: every write transaction of the process goes through one queue.

Producers — hook handlers, the sender's outcomes, the engine's ticks, ingest — hand their work
over and await a future; the writer runs it in a transaction and resolves the future only after
the commit (an acknowledgement's HTTP 200 waits for it: durable before 200).

Two kinds of work:

* **Batched items** (``await writer.batch(handler, item)``): items of the same handler that queue
  while a transaction runs go into the next transaction together, handled by one call
  ``handler(tx, items) -> results`` (group commit: acknowledgements are loaded, stepped and
  written in bulk, outcomes of sends written with one statement). If that transaction fails, its
  items are tried again one transaction each, so one bad item fails alone.
* **Jobs** (``await writer.run(fn)``): ``fn(tx)`` in a transaction of its own: an engine batch,
  a feed message. The engine keeps its jobs bounded, so that batched items — answers — wait for
  at most one job.

The loop alternates: all queued batched items in one transaction, then one job, and again.
Batched items that find the writer idle wait up to ``LINGER`` (2 ms) for company, unless
``ENOUGH`` have queued: one transaction per few milliseconds or per batch, whichever comes
first — each commit is an fsync, and a trickle of single answers or outcomes would otherwise
cost one each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog

from warnd.store.tx import Tx

log = structlog.get_logger("warnd.store")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")

Handler = Callable[[Tx, list[Any]], Awaitable[Sequence[Any]]]

LINGER = 0.002  # seconds an item waits for company when the writer is idle
ENOUGH = 256  # items that start a transaction without waiting


class _Queue(Generic[I]):
    __slots__ = ("futures", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.futures: list[asyncio.Future[Any]] = []


Transact = Callable[[Callable[[Tx], Awaitable[Any]]], Awaitable[Any]]


class Writer:
    """See the module docstring. ``transact(fn)`` runs ``fn(tx)`` in one committed transaction
    (the backend's: on SQLite wholly on its writer thread)."""

    def __init__(self, transact: Transact) -> None:
        self._transact = transact
        self._batches: dict[Handler, _Queue[Any]] = {}
        self._jobs: deque[tuple[Callable[[Tx], Awaitable[Any]], asyncio.Future[Any]]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.transactions = 0  # committed, for the benchmarks
        #: told the outcome of every transaction (None: committed), e.g. /healthz's write watch
        self.observer: Callable[[BaseException | None], None] | None = None

    # ---- producers ----------------------------------------------------------------------

    async def run(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """``fn(tx)`` in a transaction of its own; its result once committed."""
        fut: asyncio.Future[T] = self._loop().create_future()
        self._jobs.append((fn, fut))
        self._kick()
        return await fut

    async def batch(self, handler: Handler, item: Any) -> Any:
        """``item`` in the next group commit of ``handler``; its result once committed."""
        fut: asyncio.Future[Any] = self._loop().create_future()
        q = self._batches.get(handler)
        if q is None:
            q = self._batches[handler] = _Queue()
        q.items.append(item)
        q.futures.append(fut)
        self._kick()
        return await fut

    async def batch_many(self, handler: Handler, items: Sequence[Any]) -> list[Any]:
        """Several items of one handler at once (the drill's answers at one instant)."""
        if not items:
            return []
        loop = self._loop()
        q = self._batches.get(handler)
        if q is None:
            q = self._batches[handler] = _Queue()
        futs = [loop.create_future() for _ in items]
        q.items.extend(items)
        q.futures.extend(futs)
        self._kick()
        return list(await asyncio.gather(*futs))

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise RuntimeError("the store is closed")
        return asyncio.get_running_loop()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._main())
        assert self._wake is not None
        self._wake.set()

    # ---- the loop -----------------------------------------------------------------------

    async def _main(self) -> None:
        assert self._wake is not None
        idle = True
        while True:
            if not self._jobs and not any(q.items for q in self._batches.values()):
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                idle = True
                continue
            queued = sum(len(q.items) for q in self._batches.values())
            if queued:
                if idle and not self._jobs and queued < ENOUGH and not self._closed:
                    await asyncio.sleep(LINGER)  # a few more may join this commit
                await self._run_batches()
            idle = False
            if self._jobs:
                fn, fut = self._jobs.popleft()
                await self._run_job(fn, fut)

    async def _run_job(self, fn: Callable[[Tx], Awaitable[Any]], fut: asyncio.Future[Any]) -> None:
        try:
            result = await self._transact(fn)
        except BaseException as exc:
            self._observe(exc)
            if not fut.done():
                fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.transactions += 1
        self._observe(None)
        if not fut.done():
            fut.set_result(result)

    async def _run_batches(self) -> None:
        taken = [(h, q) for h, q in self._batches.items() if q.items]
        for h, _q in taken:
            self._batches[h] = _Queue()

        async def all_of(tx: Tx) -> list[tuple[list[asyncio.Future[Any]], Sequence[Any]]]:
            return [(q.futures, await handler(tx, q.items)) for handler, q in taken]

        try:
            results = await self._transact(all_of)
        except Exception as exc:
            self._observe(exc)
            if sum(len(q.items) for _h, q in taken) == 1:
                for _h, q in taken:
                    for f in q.futures:
                        if not f.done():
                            f.set_exception(exc)
                return
            log.warning("group_commit_failed", error=str(exc)[:200], retry="one by one")
            for handler, q in taken:  # one transaction each: the bad item fails alone
                for item, f in zip(q.items, q.futures, strict=True):
                    await self._run_job(_single(handler, item), f)
            return
        self.transactions += 1
        self._observe(None)
        for futures, out in results:
            for f, r in zip(futures, out, strict=True):
                if not f.done():
                    f.set_result(r)

    def _observe(self, error: BaseException | None) -> None:
        if self.observer is not None:
            self.observer(error)

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closed = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _single(handler: Handler, item: Any) -> Callable[[Tx], Awaitable[Any]]:
    async def one(tx: Tx) -> Any:
        return (await handler(tx, [item]))[0]

    return one
