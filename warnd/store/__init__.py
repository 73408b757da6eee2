"""The store: SQLite (embedded default, WAL) or PostgreSQL, behind async SQLAlchemy sessions.

Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that two processes (the daemon
and a duty officer's ``warnd ack``) queue for the write lock instead of failing half-way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlmodel import SQLModel, select

from warnd.errors import StoreError
from warnd.store import tables
from warnd.store.tables import SCHEMA_VERSION, Meta


def async_url(url: str) -> str:
    """Map the config's plain URL to the async driver SQLAlchemy needs."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise StoreError(f"store.url must be sqlite:///PATH or postgresql://...: {url!r}")


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

    @classmethod
    async def open(cls, url: str, *, create: bool = True) -> Store:
        """Open (and by default create) the store; refuse a schema the code does not know."""
        path = _sqlite_path(url)
        if path is not None and str(path) not in ("", ":memory:"):
            if not create and not path.exists():
                raise StoreError(
                    f"no store at {path}: run `warnd serve` or `warnd db upgrade` first"
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
            await store._prepare(create)
        except Exception:
            await store.close()
            raise
        return store

    async def _prepare(self, create: bool) -> None:
        async with self._write.begin() as conn:
            if create:
                await conn.run_sync(SQLModel.metadata.create_all)
            row = (
                await conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'"))
            ).first()
            if row is None:
                await conn.execute(
                    tables.Meta.__table__.insert().values(  # type: ignore[attr-defined]
                        key="schema_version", value=str(SCHEMA_VERSION)
                    )
                )
            elif int(row[0]) < SCHEMA_VERSION:
                raise StoreError(
                    f"store schema {row[0]} is older than this warnd ({SCHEMA_VERSION}):"
                    " run `warnd db upgrade`"
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema {row[0]} is newer than this warnd ({SCHEMA_VERSION}):"
                    " upgrade warnd"
                )

    async def close(self) -> None:
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

    async def schema_version(self) -> int:
        async with self.read() as s:
            meta = (
                (await s.execute(select(Meta).where(Meta.key == "schema_version")))
                .scalars()
                .first()
            )
            return int(meta.value) if meta else 0


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # an accepted ack survives power loss
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


__all__ = ["Store", "async_url", "tables"]
