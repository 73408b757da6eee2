"""The store: SQLite (embedded default, WAL) or PostgreSQL, behind async SQLAlchemy sessions.

Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that two processes (the daemon
and a duty officer's ``warnd ack``) queue for the write lock instead of failing half-way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)

from warnd.errors import StoreError
from warnd.store import schema, tables


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
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


class Store:
    """Owns the engines; hands out read and write sessions."""

    def __init__(self, url: str, write: AsyncEngine, read: AsyncEngine) -> None:
        self.url = url
        self._write = write
        self._read = read
        self.is_sqlite = write.dialect.name == "sqlite"
        self._lock_conn: AsyncConnection | None = None

    @classmethod
    async def open(cls, url: str, *, create: bool = True, migrate: bool = False) -> Store:
        """Open the store; refuse a schema other than the code's (unless ``migrate``).

        ``create``: an empty (or missing SQLite) database is brought to the current schema.
        ``migrate``: an older schema is upgraded (``warnd db upgrade``); the daemon never does
        this on its own.
        """
        path = _sqlite_path(url)
        if path is not None and str(path) not in ("", ":memory:"):
            if not create and not migrate and not path.exists():
                raise StoreError(
                    f"数据库不存在 (no store at {path}: run `warnd serve` or `warnd db upgrade`"
                    " first)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        aurl = async_url(url)
        if aurl.startswith("sqlite"):
            write = create_async_engine(aurl, connect_args={"timeout": 30})
            read = create_async_engine(aurl, connect_args={"timeout": 30})
            _sqlite_pragmas(write, immediate=True)
            _sqlite_pragmas(read, immediate=False)
        else:
            write = create_async_engine(aurl, pool_pre_ping=True)
            read = write
        store = cls(url, write, read)
        try:
            await store._prepare(create=create, migrate=migrate)
        except Exception:
            await store.close()
            raise
        return store

    async def _prepare(self, *, create: bool, migrate: bool) -> None:
        # The common case — the schema is current — is answered without the write lock, so
        # that read-only commands never queue behind a busy daemon.
        async with self._read.connect() as conn:
            empty = await conn.run_sync(schema.is_empty)
            at = None if empty else await conn.run_sync(schema.current)
        if at == schema.head():
            return
        async with self._write.begin() as conn:
            if not self.is_sqlite:
                # Instances started together on an empty database: one creates the schema,
                # the others wait here and find it done (else: duplicate CREATE TABLE).
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key("schema")})
            empty = await conn.run_sync(schema.is_empty)
            at = None if empty else await conn.run_sync(schema.current)
            head = schema.head()
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
            await conn.run_sync(schema.upgrade)

    async def hold_lock(self, name: str) -> bool:
        """Hold a named lock for as long as this process lives (PostgreSQL advisory lock).

        Several instances on one database use it to let exactly one poll the feeds; when that
        instance dies its connection closes, the lock is freed, and the next poll of another
        instance takes it. SQLite has one writer process anyway: always True.
        """
        if self.is_sqlite:
            return True
        if self._lock_conn is not None:
            try:
                await self._lock_conn.execute(text("SELECT 1"))
                return True
            except Exception:  # the connection died: the lock went with it
                self._lock_conn = None
        conn = await self._write.connect()
        got = (
            await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(name)})
        ).scalar()
        await conn.commit()  # a session-level lock outlives the transaction
        if got:
            self._lock_conn = conn
            return True
        await conn.close()
        return False

    async def revision(self) -> str | None:
        async with self._read.connect() as conn:
            return await conn.run_sync(schema.current)

    async def close(self) -> None:
        if self._lock_conn is not None:
            await self._lock_conn.close()
            self._lock_conn = None
        await self._write.dispose()
        if self._read is not self._write:
            await self._read.dispose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed on success, rolled back on any error."""
        async with (
            AsyncSession(self._write, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self._read, expire_on_commit=False) as session:
            yield session


def _key(name: str) -> int:
    """A PostgreSQL advisory-lock key (bigint) for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # an accepted ack survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # 64 MiB of page cache (default 2 MiB): a province-wide tick touches index pages all
        # over tables of several 100,000 rows; re-reading them costs more than the memory
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


__all__ = ["Store", "async_url", "tables"]
