"""The store: SQLite (embedded default, WAL) or PostgreSQL, behind one small interface.

* ``store.writer`` — the single writer (``warnd.store.writer``): every write transaction of the
  process, group-committed. Operations on its transactions: ``warnd.store.chain`` (the chain's
  rows and timers), ``intake`` (ingest), ``answers`` (acknowledgements), ``outbox`` (sending).
* ``store.backend`` — reads outside a write transaction (``fetch``/``fetch_in``, positional
  ``?`` parameters), on a connection of their own.
* ``store.fetch(sql, params)`` — the duty desk's ``warnd.desk.views.reader.Source`` (``:name``).
* ``store.read()`` — an SQLAlchemy session for cold reads (tests, tools); never on a hot path.

SQLAlchemy and Alembic keep the schema (``tables``, ``schema``): a store is checked against the
code's revision when opened, and created or upgraded only when asked.

``daemon=True`` (``warnd serve``): on SQLite the process takes the store file's lock (one daemon
per store: a restarted daemon may resend at once whatever its dead predecessor held); on
PostgreSQL it heartbeats as an instance (``heartbeat_s``), and messages of silent instances
return to the queue after two heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from warnd.core.errors import StoreError
from warnd.store import schema, tables
from warnd.store.postgres import PostgresBackend
from warnd.store.sqlite import SQLiteBackend
from warnd.store.writer import Writer

log = structlog.get_logger("warnd.store")

Backend = SQLiteBackend | PostgresBackend


def async_url(url: str) -> str:
    """Map the config's plain URL to the async driver SQLAlchemy needs."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise StoreError(
        f"数据库地址不对 (store.url must be sqlite:///PATH or postgresql://...): {url!r}"
    )


def _sqlite_path(url: str) -> Path | None:
    for prefix in ("sqlite:///", "sqlite+aiosqlite:///"):
        if url.startswith(prefix):
            return Path(url[len(prefix) :])
    return None


def _dsn(url: str) -> str:
    return "postgresql://" + async_url(url).split("://", 1)[1]


class Store:
    """The backend's connections, the single writer, and the schema check."""

    def __init__(self, url: str, backend: Backend, *, instance: str) -> None:
        self.url = url
        self.backend = backend
        self.is_sqlite = isinstance(backend, SQLiteBackend)
        self.writer = Writer(backend.transact)
        self.instance = instance
        #: SQLite: messages this process has taken for sending and not yet recorded
        self.held: set[str] = set()
        # ... and those recorded lately, by release number: a read of the queue that began
        # before a release committed still sees the message pending (``fresh``)
        self._released: dict[str, int] = {}
        self._releases = 0
        self._read_engine: AsyncEngine | None = None
        self._lock_fd: int | None = None
        self._lock_conn: Any = None
        self._lock_guard = asyncio.Lock()  # hold_lock: one question at a time
        self._heartbeat: asyncio.Task[None] | None = None
        self.on_reclaim: Any = None  # called after messages of a dead instance were queued
        self.on_work: Any = None  # called when another instance announced due work

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        create: bool = True,
        migrate: bool = False,
        daemon: bool = False,
        durable: bool = True,
        heartbeat_s: float = 10.0,
        schema_head: str | None = None,
    ) -> Store:
        """Open the store; refuse a schema other than the code's (unless ``migrate``).

        ``create``: an empty (or missing SQLite) database is brought to the current schema.
        ``migrate``: an older schema is upgraded (``warnd db upgrade``); the daemon never does
        this on its own. ``durable=False``: a throw-away SQLite store (drills) without fsync.
        ``schema_head``: the revision this code expects (None: ``schema.head()``; a test plays
        an older release with it).
        """
        path = _sqlite_path(url)
        lock_fd = None
        if path is not None:
            if str(path) in ("", ":memory:"):
                raise StoreError("store.url: an in-memory SQLite store is not supported")
            if not create and not migrate and not path.exists():
                raise StoreError(
                    f"数据库不存在 (no store at {path}: run `warnd serve` or `warnd db upgrade`"
                    " first)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            if daemon:
                lock_fd = _lock(path)
        try:
            await _prepare(url, create=create, migrate=migrate, head=schema_head)
            backend: Backend = (
                SQLiteBackend(path, durable=durable)
                if path is not None
                else PostgresBackend(_dsn(url))
            )
            await backend.open()
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        store = cls(url, backend, instance=uuid.uuid4().hex[:12])
        store._lock_fd = lock_fd
        if daemon and isinstance(backend, PostgresBackend):
            await store._start_heartbeat(heartbeat_s)
            await backend.listen(store._announced)
        return store

    # ---- what this process holds (SQLite) -------------------------------------------------

    def release_mark(self) -> int:
        """Taken before reading the queue; ``fresh`` then knows what was released since."""
        return self._releases

    def release(self, ids: list[str]) -> None:
        """Messages whose outcome is committed: no longer held."""
        for i in ids:
            self.held.discard(i)
            self._releases += 1
            self._released[i] = self._releases

    def fresh(self, ids: list[str], mark: int) -> list[bool]:
        """For each id read from the queue after ``mark``: not held, and not released since
        the read began (the read may predate that commit). Forgets older releases."""
        out = [i not in self.held and self._released.get(i, 0) <= mark for i in ids]
        self._released = {i: n for i, n in self._released.items() if n > mark}
        return out

    # ---- reads --------------------------------------------------------------------------

    async def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """``warnd.desk.views.reader.Source``: ``:name`` parameters, rows as the driver gives
        them."""
        from warnd.desk.views.reader import bind

        query, args = bind(sql, params, lambda _n: "?")
        return await self.backend.fetch(query, args)

    async def stream(
        self, sql: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[list[Any]]:
        """Like ``fetch``, in chunks: a long read without all its rows in memory at once."""
        from warnd.desk.views.reader import bind

        query, args = bind(sql, params, lambda _n: "?")
        async for rows in self.backend.stream(query, args):
            yield rows

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """An SQLAlchemy session for cold reads (tests, tools)."""
        if self._read_engine is None:
            self._read_engine = _engine(self.url)
        async with AsyncSession(self._read_engine, expire_on_commit=False) as session:
            yield session

    async def revision(self) -> str | None:
        engine = _engine(self.url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(schema.current)
        finally:
            await engine.dispose()

    # ---- instances ----------------------------------------------------------------------

    async def hold_lock(self, name: str) -> bool:
        """Hold a named lock for as long as this process lives (PostgreSQL advisory lock).

        Several instances on one database use it to let exactly one poll the feeds; when that
        instance dies its connection closes, the lock is freed, and the next poll of another
        instance takes it. SQLite has one daemon per store: always True.
        """
        if not isinstance(self.backend, PostgresBackend):
            return True
        # One question at a time: the feed watch and a feed poll ask concurrently, and two
        # queries at once on the lock's connection fail ("another operation is in progress"),
        # which must not read as a lost lock (an orphaned session would keep holding it).
        async with self._lock_guard:
            if self._lock_conn is not None:
                try:
                    await self._lock_conn.fetchval("SELECT 1")
                    return True
                except Exception:  # the connection died: the lock went with it
                    old, self._lock_conn = self._lock_conn, None
                    old.terminate()  # never leave a session behind that might still hold it
            asyncpg: Any = importlib.import_module("asyncpg")  # untyped
            conn = await asyncpg.connect(self.backend.dsn)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _key(name)):
                self._lock_conn = conn
                return True
            await conn.close()
            return False

    def _announced(self) -> None:
        if self.on_work is not None:
            self.on_work()

    async def _start_heartbeat(self, every_s: float) -> None:
        from warnd.store import outbox
        from warnd.store.postgres import host

        backend = self.backend
        assert isinstance(backend, PostgresBackend)
        silent = 2 * every_s
        pid = os.getpid()
        await outbox.heartbeat(backend.reader, self.instance, host(), pid, silent)

        async def beat() -> None:
            while True:
                await asyncio.sleep(every_s)
                try:
                    n = await outbox.heartbeat(backend.reader, self.instance, host(), pid, silent)
                except Exception as exc:  # the server is away: try again next beat
                    log.warning("heartbeat_failed", error=str(exc)[:200])
                    continue
                if n:
                    log.warning("messages_reclaimed", messages=n, reason="instance silent")
                    if self.on_reclaim is not None:
                        self.on_reclaim()

        self._heartbeat = asyncio.get_running_loop().create_task(beat())

    async def close(self) -> None:
        await self.writer.close()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
            from warnd.store import outbox

            with contextlib.suppress(Exception):
                assert isinstance(self.backend, PostgresBackend)
                await outbox.retire(self.backend.reader, self.instance)
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()
            self._lock_conn = None
        await self.backend.close()
        if self._read_engine is not None:
            await self._read_engine.dispose()
            self._read_engine = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _lock(path: Path) -> int:
    """The store file's daemon lock (``<store>.lock``), held until the process ends."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(
            f"another warnd serve is running on {path} ({lock} is locked): stop it first"
        ) from None
    return fd


def _key(name: str) -> int:
    """A PostgreSQL advisory-lock key (bigint) for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _engine(url: str) -> AsyncEngine:
    aurl = async_url(url)
    if aurl.startswith("sqlite"):
        return create_async_engine(aurl, connect_args={"timeout": 30})
    return create_async_engine(aurl, pool_pre_ping=True)


async def _prepare(url: str, *, create: bool, migrate: bool, head: str | None = None) -> None:
    """Check the schema (and create or upgrade it to ``head`` when asked), through
    SQLAlchemy/Alembic."""
    head = head or schema.head()
    engine = _engine(url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        # The common case — the schema is current — is answered without the write lock, so
        # that read-only commands never queue behind a busy daemon.
        async with engine.connect() as conn:
            empty = await conn.run_sync(schema.is_empty)
            at = None if empty else await conn.run_sync(schema.current)
        if at == head:
            return
        async with engine.begin() as conn:
            if not sqlite:
                # Instances started together on an empty database: one creates the schema,
                # the others wait here and find it done (else: duplicate CREATE TABLE).
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key("schema")})
            empty = await conn.run_sync(schema.is_empty)
            at = None if empty else await conn.run_sync(schema.current)
            if at == head:
                return
            if empty and not (create or migrate):
                raise StoreError("数据库是空的 (the store is empty: run `warnd db upgrade` first)")
            if not empty and at is not None and not schema.is_ancestor(at):
                raise StoreError(
                    f"数据库结构比本程序新 (store schema {at} is newer than this warnd ({head}):"
                    " upgrade warnd)"
                )
            if not empty and not migrate:
                raise StoreError(
                    f"数据库结构需要升级 (store schema {at or 'unversioned'} is older than this"
                    f" warnd ({head}): run `warnd db upgrade --config PATH`, stop every instance"
                    " first)"
                )
            await conn.run_sync(schema.upgrade, head)
    finally:
        await engine.dispose()


__all__ = ["Store", "async_url", "tables"]
