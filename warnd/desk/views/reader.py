"""A read-only connection to the store for the duty desk's commands, without SQLAlchemy.

``warnd status`` and ``warnd unreached`` must answer within a second; importing SQLAlchemy,
SQLModel and pydantic alone took half of it. The views only need rows for plain SQL, so they
read through a ``Source``: anything with ``await fetch(sql, params) -> rows``.

- ``open_reader(url)``: SQLite through the stdlib ``sqlite3``, opened read-only
  (``file:PATH?mode=ro``; a WAL store is read as the daemon writes it), or PostgreSQL through
  ``asyncpg`` directly, in read-only transactions. The schema is checked against
  ``warnd.core.revision.HEAD`` with one query of ``alembic_version``; any other answer (empty,
  older, newer) is handed to ``Store.open``, which refuses it with the usual one-line error.
- an open ``warnd.store.Store`` is a ``Source`` itself (``Store.fetch``: its read connection),
  for the report, tests and benchmarks that already hold one.

The SQL is the same for both backends: parameters are written ``:name``; a list or tuple value
expands to a parenthesised list for ``IN :name`` (an empty one to ``(NULL)``, which matches
nothing — use it with ``IN`` only). Rows come back as the driver gives them: SQLite timestamps
as the stored UTC text, booleans as 0/1; PostgreSQL timestamps as aware datetimes. The views
convert them (``warnd.desk.views.Timestamps``, ``bool``).
"""

from __future__ import annotations

import importlib
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import quote

from warnd.core.errors import StoreError
from warnd.core.revision import HEAD

if TYPE_CHECKING:
    from warnd.store import Store

Row = Sequence[Any]
Params = Mapping[str, Any]

#: a quoted SQL literal (left alone) or a ``:name`` parameter (not ``::type`` casts)
_TOKEN = re.compile(r"'(?:[^']|'')*'|(?<![:\w]):([A-Za-z_]\w*)")


@runtime_checkable
class Source(Protocol):
    """Where the views read rows from."""

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]: ...


def bind(sql: str, params: Params | None, slot: Callable[[int], str]) -> tuple[str, list[Any]]:
    """``sql`` with each ``:name`` replaced by ``slot(n)`` (n from 1) and the values in order.

    A list or tuple value becomes ``(slot, slot, ...)``, one slot per element, for ``IN``.
    """
    given = params or {}
    args: list[Any] = []

    def one(value: Any) -> str:
        args.append(value)
        return slot(len(args))

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is None:
            return m.group(0)
        if name not in given:
            raise KeyError(f"no value for SQL parameter :{name}")
        value = given[name]
        if isinstance(value, list | tuple):
            return "(" + ", ".join(one(v) for v in value) + ")" if value else "(NULL)"
        return one(value)

    return _TOKEN.sub(replace, sql), args


class SQLiteReader:
    """A read-only ``sqlite3`` connection; queries run directly (a command, not a server).

    Duty officers who are not the daemon's user read the store through group permissions
    (docs/deployment.md): the database and, while the daemon runs, its ``-wal`` and ``-shm``
    files are group-readable, and SQLite reads a WAL database read-only through them. When the
    daemon is down and closed the store cleanly there is no ``-wal`` and no ``-shm``, and a
    reader that may not create files in the state folder cannot open it in WAL mode; then
    everything is in the main file and nothing writes it, so it is read as an immutable
    snapshot — until a ``-wal`` appears again (the daemon is back), when the next query
    reopens normally.
    """

    is_sqlite = True

    def __init__(self, path: Path) -> None:
        self._path = path
        self.snapshot = False  # read as an immutable file (daemon down, folder not writable)
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(self._path))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            self.snapshot = False
            return conn
        except sqlite3.OperationalError:
            conn.close()
            if self._wal().exists():
                raise  # the daemon's files are there: a real error, not the case above
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
        self.snapshot = True
        return conn

    def _wal(self) -> Path:
        return self._path.with_name(self._path.name + "-wal")

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        if self.snapshot and self._wal().exists():  # the daemon is back: read what it writes
            self._conn.close()
            self._conn = self._open()
        text, args = bind(sql, params, lambda _n: "?")
        return self._conn.execute(text, args).fetchall()

    async def close(self) -> None:
        self._conn.close()


class PostgresReader:
    """One ``asyncpg`` connection whose transactions are read-only."""

    is_sqlite = False

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> PostgresReader:
        asyncpg: Any = importlib.import_module("asyncpg")  # untyped; imported on use only
        conn = await asyncpg.connect(
            dsn,
            server_settings={
                "default_transaction_read_only": "on",
                "application_name": "warnd-status",
            },
        )
        return cls(conn)

    async def fetch(self, sql: str, params: Params | None = None) -> list[Row]:
        text, args = bind(sql, params, lambda n: f"${n}")
        rows: list[Row] = await self._conn.fetch(text, *args)
        return rows

    async def close(self) -> None:
        await self._conn.close()


Reader = SQLiteReader | PostgresReader


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store URL; None for any other URL."""
    for prefix in ("sqlite:///", "sqlite+aiosqlite:///"):
        if url.startswith(prefix):
            return Path(url[len(prefix) :])
    return None


def postgres_dsn(url: str) -> str | None:
    """The libpq-style DSN of a PostgreSQL store URL; None for any other URL."""
    for prefix in ("postgresql://", "postgres://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return None


async def open_reader(url: str) -> Reader:
    """A read-only connection to the store at ``url``, whose schema is this code's.

    Never creates anything: a missing SQLite file or an outdated schema is a ``StoreError``
    (the same one-line errors as ``Store.open(url, create=False)``); an unreachable server
    raises the driver's error.
    """
    reader: Reader
    path = sqlite_path(url)
    dsn = postgres_dsn(url)
    if path is not None:
        if str(path) in ("", ":memory:") or not path.exists():
            raise StoreError(
                f"数据库不存在 (no store at {path}: run `warnd serve` or `warnd db upgrade` first)"
            )
        reader = SQLiteReader(path)
        has_version = (
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        )
    elif dsn is not None:
        reader = await PostgresReader.connect(dsn)
        has_version = (
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname = current_schema() AND tablename = 'alembic_version'"
        )
    else:
        raise StoreError(
            f"数据库地址不对 (store.url must be sqlite:///PATH or postgresql://...): {url!r}"
        )
    try:
        at = None
        if (await reader.fetch(has_version))[0][0]:
            rows = await reader.fetch("SELECT version_num FROM alembic_version")
            at = str(rows[0][0]) if rows else None
        if at != HEAD:
            await _refuse(url)
    except BaseException:
        await reader.close()
        raise
    return reader


async def _refuse(url: str) -> None:
    """Let the store explain a schema other than HEAD (empty, older, newer: Alembic knows)."""
    from warnd.store import Store

    store = await Store.open(url, create=False)  # raises StoreError unless it is current now
    await store.close()


def source(where: Source | Store) -> Source:
    """A ``Source`` for either a reader or an open ``Store`` (which reads on its own
    read-only connection: ``Store.fetch``)."""
    return where
