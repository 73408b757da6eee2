"""What ``/healthz`` answers: named checks, each either fine (None) or one line naming the cause.

Any failing check makes ``/healthz`` answer 503 with ``problems: {check: cause}``
(docs/deployment.md). The checks of a running daemon:

- ``store``: the latest write transaction failed (disk full, database gone or read-only), until
  a write succeeds again — a real one, or a probe made at most every ``PROBE_EVERY_S`` while
  the failure stands, so that recovery shows when nothing else writes;
- ``sender``: messages handed to a channel that have had no outcome for twice the dispatcher's
  deadline (every send ends within its deadline, retries included: a send held longer is a
  hung gateway client or a bug, and the next ones wait behind it);
- ``feed:<name>``: not read successfully for three of its intervals (real time: drills may
  run the daemon's clock faster than the feeds are polled).

Seams for the store's and the sender's own code: ``WriteWatch.ok()``/``failed()`` take the
outcome of every transaction of the store's single writer (``watch_writes`` makes it the
writer's observer), and ``Health.add(name, check)`` takes any further check.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError

from warnd.edges.feeds import one_line
from warnd.store import Store

log = structlog.get_logger("warnd.health")

Check = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT_S = 3.0
PROBE_EVERY_S = 10.0
STALE_INTERVALS = 3


class Health:
    """Named checks, run concurrently, each bounded in time (a hung store must not hang us)."""

    def __init__(self, *, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def problems(self) -> dict[str, str]:
        names = list(self._checks)
        causes = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        return {n: c for n, c in zip(names, causes, strict=True) if c is not None}

    async def _run(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await check()
        except TimeoutError:
            return f"无响应 no answer within {self.timeout_s:g} s"
        except Exception as exc:  # a check that fails is a finding, never a 500
            return f"检查失败 check failed: {one_line(f'{type(exc).__name__}: {exc}')}"


# ---- the store can write -------------------------------------------------------------------


def storage_failure(exc: BaseException) -> bool:
    """A failure of the store itself (disk, connection, permissions), not of the data."""
    if isinstance(exc, IntegrityError | sqlite3.IntegrityError):  # the data's fault
        return False
    if isinstance(exc, DBAPIError | OSError | sqlite3.DatabaseError):
        return True
    try:
        asyncpg: Any = importlib.import_module("asyncpg")  # untyped; the PostgreSQL extra
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return False
    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError)


class WriteWatch:
    """Whether the store takes writes: the outcome of the latest write transaction.

    On a full disk small updates that fit in pages the store already has still commit while
    every new row fails; so after a failure a good transaction is confirmed by the probe (a
    write that needs new space) at the next check before the failure is cleared, and
    ``/healthz`` does not flap to 200 while ingest cannot write.
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[None]] | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        probe_every_s: float = PROBE_EVERY_S,
    ) -> None:
        self._probe = probe
        self._now = now
        self._probe_every = probe_every_s
        self._error: str | None = None
        self._probed_at = -probe_every_s
        self._confirm = False  # a transaction went through since the failure: probe now

    def ok(self) -> None:
        if self._error is not None and self._probe is not None:
            self._confirm = True
            return
        self._clear()

    def _clear(self) -> None:
        if self._error is not None:
            log.info("store_writable_again")
        self._error = None
        self._confirm = False

    def failed(self, error: BaseException | str) -> None:
        text_ = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if self._error is None:
            log.error("store_cannot_write", error=one_line(text_)[:500])
        self._error = one_line(text_)[:300]
        self._confirm = False

    async def check(self) -> str | None:
        due = self._confirm or self._now() - self._probed_at >= self._probe_every
        if self._error is not None and self._probe is not None and due:
            self._probed_at = self._now()
            self._confirm = False
            try:
                await self._probe()
            except Exception:  # still failing: the real write's error says more
                pass
            else:
                self._clear()
        if self._error is None:
            return None
        return f"无法写入 cannot write: {self._error}"


def watch_writes(store: Store, watch: WriteWatch) -> None:
    """Report the outcome of every transaction of ``store``'s single writer to ``watch``."""

    def observe(error: BaseException | None) -> None:
        if error is None:
            watch.ok()
        elif storage_failure(error):
            watch.failed(error)

    store.writer.observer = observe


async def probe_store(store: Store) -> None:
    """A small real write: 64 KiB next to an SQLite file (synced, then removed), or a
    PostgreSQL transaction that takes a transaction id (its commit is written)."""
    path = store.url.removeprefix("sqlite:///") if store.is_sqlite else None
    if path is not None:
        probe = f"{path}.probe"

        def write() -> None:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * 65536)
                os.fsync(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(probe)

        await asyncio.to_thread(write)
        return

    async def take_xid(tx: Any) -> None:
        await tx.rows("SELECT txid_current()")

    await store.writer.run(take_xid)


# ---- the sender is not stuck ---------------------------------------------------------------


def sender_stuck(held: int, oldest: datetime | None, limit: timedelta) -> str | None:
    """The ``sender`` check's finding: ``held`` messages without an outcome for over ``limit``."""
    if not held:
        return None
    return (
        f"发送停滞 sender stuck: {held} messages without an outcome for over"
        f" {limit.total_seconds():g} s (oldest handed over {oldest.isoformat() if oldest else '?'})"
    )


# ---- the feeds are read ----------------------------------------------------------------------


class FeedWatch:
    """When each feed was last read successfully (monotonic seconds, injected).

    Not ``warnd.edges.feeds.watch.Watch`` (the feed alarms), on purpose: this one answers "is this
    process reading its feeds" on the monotonic clock (a drill's or a stepped wall clock must
    not make /healthz fail), counts only successful reads, every feed, at 3 poll intervals,
    and a feed another instance polls is nobody's problem here; the alarms' watch answers "has
    the source itself gone quiet" on the injected wall clock, counts any answer, per feed
    ``stale_after`` (dispatching feeds only), and its state is shared through the store."""

    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._since: dict[str, float] = {}  # last good read, or since when it is watched
        self._interval: dict[str, float] = {}
        self._error: dict[str, str | None] = {}

    def expect(self, name: str, interval_s: float) -> None:
        """Watch ``name`` from now on (the scheduler polls it every ``interval_s``)."""
        self._interval[name] = interval_s
        self._since.setdefault(name, self._now())

    def polled(self, name: str, interval_s: float, error: str | None) -> None:
        self._interval[name] = interval_s
        if error is None:
            self._since[name] = self._now()
        else:
            self._since.setdefault(name, self._now())
        self._error[name] = error

    def elsewhere(self, name: str) -> None:
        """Another instance polls this feed (it holds the feeds' lock): not ours to report."""
        self._since[name] = self._now()
        self._error[name] = None

    def names(self) -> list[str]:
        return list(self._interval)

    def cause(self, name: str) -> str | None:
        interval = self._interval.get(name)
        if interval is None:
            return None
        quiet = self._now() - self._since[name]
        if quiet < STALE_INTERVALS * interval:
            return None
        error = self._error.get(name)
        return (
            f"未读取 not read for {quiet:.0f} s ({STALE_INTERVALS} intervals of {interval:g} s)"
            + (f": {error}" if error else "")
        )
