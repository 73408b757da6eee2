"""The SQLite backend: the stdlib ``sqlite3`` module, one connection per thread.

* The writer connection lives on a thread of its own: every write transaction of the process
  runs there (``BEGIN IMMEDIATE`` … ``COMMIT``), driven from the event loop by the single writer
  (``warnd.store.writer``). ``sqlite3`` releases the GIL inside each ``sqlite3_step``, so
  SQLite's own work runs beside the event loop's Python (HTTP, the ladder, rows).
* A read-only connection (``query_only``) on a second thread serves reads outside a write
  transaction: the sender's queue, the duty desk's views, lookups of the hooks.

Timestamps are stored as UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``, what SQLAlchemy's SQLite
dialect writes for ``UTCDateTime``), JSON as text, booleans as 0/1; both directions are
memoised per value (a fan-out repeats a handful of instants). The store is WAL with
``synchronous=FULL`` (an accepted acknowledgement survives power loss), or, for a throw-away
drill store, ``synchronous=OFF``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from warnd.store import columns
from warnd.store.tx import Row, Tx, Write

T = TypeVar("T")

_FMT = "%Y-%m-%d %H:%M:%S.%f"
_bound: dict[datetime, str] = {}
_parsed: dict[str, datetime] = {}


def bind_ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    out = _bound.get(value)
    if out is None:
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the store")
        if len(_bound) > 200_000:
            _bound.clear()
        out = _bound[value] = value.astimezone(UTC).strftime(_FMT)
    return out


def read_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    out = _parsed.get(value)
    if out is None:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if len(_parsed) > 200_000:
            _parsed.clear()
        t = datetime.fromisoformat(value)
        out = _parsed[value] = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return out


_PLAIN = (str, int, bool, type(None))
_json_bound: dict[tuple[Any, ...], str] = {}


def bind_json(value: Any) -> str:
    """JSON text; flat dicts of plain values are memoised (a batch repeats ``{"rung": …}``).
    The key keeps every type (``True`` and ``1`` are equal in Python, not in JSON)."""
    if type(value) is dict and len(value) <= 4:
        key: list[Any] = []
        for k, v in value.items():
            if type(v) not in _PLAIN:
                return json.dumps(value)
            key += (k, type(v), v)
        t = tuple(key)
        out = _json_bound.get(t)
        if out is None:
            if len(_json_bound) > 10_000:
                _json_bound.clear()
            out = _json_bound[t] = json.dumps(value)
        return out
    return json.dumps(value)


def _binders(table: str, cols: Sequence[str]) -> list[tuple[int, Callable[[Any], Any]]]:
    kinds = columns.kinds(table)
    out: list[tuple[int, Callable[[Any], Any]]] = []
    for i, c in enumerate(cols):
        k = kinds[c]
        if k == "ts":
            out.append((i, bind_ts))
        elif k == "json":
            out.append((i, bind_json))
    return out


def bound_rows(table: str, cols: Sequence[str], rows: list[Row]) -> list[Row]:
    """``rows`` with timestamps and JSON as SQLite stores them (column-wise: C loops)."""
    procs = _binders(table, cols)
    if not procs:
        return rows
    cols_: list[Sequence[Any]] = list(zip(*rows, strict=True))
    for i, proc in procs:
        cols_[i] = [proc(v) for v in cols_[i]]
    return list(zip(*cols_, strict=True))


def _q(name: str) -> str:
    return f'"{name}"'


class _Statements:
    """SQL text of the bulk statements, made once per shape."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, tuple[str, ...], str, str], str] = {}

    def get(self, w: Write) -> str:
        k = (w.kind, w.table, w.cols, w.extra, w.guard)
        sql = self._cache.get(k)
        if sql is None:
            table, cols = w.table, w.cols
            if w.kind == "insert":
                sql = (
                    f"INSERT INTO {_q(table)} ({', '.join(_q(c) for c in cols)})"
                    f" VALUES ({', '.join('?' * len(cols))})"
                )
            else:
                sets = ", ".join([*(f"{_q(c)} = ?" for c in cols), *([w.extra] if w.extra else [])])
                guard = f" AND {w.guard}" if w.guard else ""
                sql = f"UPDATE {_q(table)} SET {sets} WHERE id = ?{guard}"
            self._cache[k] = sql
        return sql


_STATEMENTS = _Statements()


def connect(path: Path, *, durable: bool, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # 64 MiB of page cache for the writer (default 2 MiB): a province-wide tick touches index
    # pages all over tables of several 100,000 rows; re-reading them costs more than memory. A
    # throw-away store (a drill) keeps 8 MiB: its file stays in the OS's cache anyway, and a
    # province drill must fit its memory target (docs/performance.md).
    size = (16384 if readonly else 65536) if durable else (4096 if readonly else 8192)
    conn.execute(f"PRAGMA cache_size=-{size}")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


class Thread:
    """One connection on one thread; ``run(fn)`` calls ``fn(conn)`` there."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None

    async def open(self, path: Path, *, durable: bool, readonly: bool) -> None:
        def make() -> None:
            self.conn = connect(path, durable=durable, readonly=readonly)

        await asyncio.get_running_loop().run_in_executor(self._pool, make)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        assert conn is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, conn)

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        self._pool.shutdown(wait=True)


def drive(aw: Awaitable[T]) -> T:
    """Run a coroutine that never waits (a store job on SQLite) to its end, here and now."""
    coro = aw if isinstance(aw, Coroutine) else aw.__await__()
    try:
        coro.send(None)
    except StopIteration as done:
        value: T = done.value
        return value
    if isinstance(coro, Coroutine):
        coro.close()
    raise RuntimeError("a store job waited for something outside its transaction")


def _expand(sql: str, n: int) -> str:
    return sql.replace("{ids}", "(" + ", ".join("?" * n) + ")")


class SQLiteTx(Tx):
    """A write transaction, run entirely on the writer thread (``SQLiteBackend.transact``).

    Its operations are coroutines that never wait: the job that uses them (engine code written
    once for both backends) is driven to completion on the writer thread, so a transaction costs
    one hand-over between the event loop and that thread, however many statements it runs.
    ``BEGIN IMMEDIATE`` comes with the first statement; ``seq`` comes from the counter read
    then, new ids from ``max(id)`` read when first needed (the write lock is held from the
    first statement: nobody else can take the same).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn
        self._begun = False
        self._next_id: dict[str, int] = {}
        self._seq_base = 0
        self._seq_used = 0

    def _begin(self) -> sqlite3.Connection:
        conn = self._conn
        if self._begun:
            return conn
        conn.execute("BEGIN IMMEDIATE")
        self._begun = True
        row = conn.execute("SELECT value FROM counter WHERE name = 'history'").fetchone()
        self._seq_base = int(row[0]) if row else 1
        return conn

    def seq(self) -> int:
        """The store's own next ``seq`` at once: the counter was read when the transaction
        began, and nobody else writes meanwhile (no mapping when the rows are written)."""
        if not self._begun:
            self._begin()
        n = self._seq_base + self._seq_used
        self._seq_used += 1
        return n

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[Row]:
        return self._begin().execute(sql, tuple(args)).fetchall()

    async def _fetch_in(
        self, sql: str, ids: list[Any], args: Sequence[Any], type_: str
    ) -> list[Row]:
        conn = self._begin()
        out: list[Row] = []
        for i in range(0, len(ids), self.CHUNK):
            part = ids[i : i + self.CHUNK]
            out += conn.execute(_expand(sql, len(part)), (*args, *part)).fetchall()
        return out

    async def _execute(self, sql: str, args: Sequence[Any]) -> int:
        return self._begin().execute(sql, tuple(args)).rowcount

    async def _execute_in(self, sql: str, ids: list[Any], args: Sequence[Any], type_: str) -> int:
        conn = self._begin()
        n = 0
        for i in range(0, len(ids), self.CHUNK):
            part = ids[i : i + self.CHUNK]
            n += conn.execute(_expand(sql, len(part)), (*args, *part)).rowcount
        return n

    async def _write(self, writes: list[Write], first: int, n: int) -> None:
        self._write_now(writes, first, n)

    def _write_now(self, writes: list[Write], first: int, n: int) -> None:
        conn = self._begin()
        if n:  # the counter was read by _begin: the store's numbers follow the last commit's
            base = self._seq_base + self._seq_used - first
            self._seq_used += n
            writes = self.placed(writes, lambda i: base + i, 0)
        for w in writes:
            if w.kind == "many":
                conn.executemany(w.sql, w.rows)
                continue
            cols = w.cols if w.kind == "insert" else (*w.cols, "id")
            conn.executemany(_STATEMENTS.get(w), bound_rows(w.table, cols, w.rows))

    async def new_ids(self, table: str, n: int) -> list[int]:
        if table not in self._next_id:
            (value,) = self._begin().execute(f'SELECT max(id) FROM "{table}"').fetchone()
            self._next_id[table] = int(value or 0) + 1
        first = self._next_id[table]
        self._next_id[table] = first + n
        return list(range(first, first + n))

    async def _commit(self, writes: list[Write], first: int, n: int) -> None:
        if not self._begun and not writes:
            return  # nothing was read or written: no transaction to end
        self._write_now(writes, first, n)
        if self._seq_used:
            self._conn.execute(
                "UPDATE counter SET value = ? WHERE name = 'history'",
                (self._seq_base + self._seq_used,),
            )
        self._conn.execute("COMMIT")
        self._begun = False

    async def rollback(self) -> None:
        self._writes = []
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._begun = False

    def ts(self, value: Any) -> Any:
        return read_ts(value)

    def bts(self, value: Any) -> Any:
        return bind_ts(value)

    def js(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    @staticmethod
    def json_field(column: str, key: str) -> str:
        """SQL for the text of ``column``'s top-level ``key``."""
        return f"json_extract({column}, '$.{key}')"


#: WAL pages past which the writer checkpoints by itself (the checkpointer fell behind)
WRITER_CHECKPOINT = 50_000
#: how often the checkpointer copies committed WAL frames into the database file (seconds)
CHECKPOINT_EVERY = 0.25


class SQLiteBackend:
    """The connections of a SQLite store: the writer's, a read-only one, and the checkpointer's.

    Checkpoints (copying the WAL's committed pages into the database file) run on a thread of
    their own (``PASSIVE``: they never block the writer), not in the writer's commit: at province
    scale a commit of 1,000 answers dirties ~4,000 pages all over the file, and copying them
    back in the committing transaction doubled its cost.
    """

    name = "sqlite"

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self.writer = Thread("warnd-sqlite-w")
        self.reader = Thread("warnd-sqlite-r")
        self.checkpointer = Thread("warnd-sqlite-c")
        self._checkpoints: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.writer.open(self.path, durable=self.durable, readonly=False)
        await self.writer.run(lambda c: c.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT}"))
        await self.reader.open(self.path, durable=self.durable, readonly=True)
        await self.checkpointer.open(self.path, durable=self.durable, readonly=False)
        self._checkpoints = asyncio.get_running_loop().create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        def passive(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            try:
                await self.checkpointer.run(passive)
            except sqlite3.Error:  # busy or locked now: the next round copies it
                continue

    async def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        await self.writer.close()
        await self.reader.close()
        await self.checkpointer.close()

    async def transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """``fn(tx)`` in one transaction, committed, run wholly on the writer thread."""

        def run(conn: sqlite3.Connection) -> T:
            tx = SQLiteTx(conn)
            try:
                result: T = drive(fn(tx))
                drive(tx.commit())
            except BaseException:
                drive(tx.rollback())
                raise
            return result

        return await self.writer.run(run)

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """A read outside any write transaction (the read-only connection)."""

        def go(conn: sqlite3.Connection) -> list[Row]:
            return conn.execute(sql, tuple(args)).fetchall()

        return await self.reader.run(go)

    async def stream(
        self, sql: str, args: Sequence[Any] = (), size: int = 20_000
    ) -> AsyncIterator[list[Row]]:
        """The rows of a long read, ``size`` at a time (one cursor on the read connection)."""
        cursor: list[sqlite3.Cursor] = []

        def first(conn: sqlite3.Connection) -> list[Row]:
            cursor.append(conn.execute(sql, tuple(args)))
            return cursor[0].fetchmany(size)

        rows = await self.reader.run(first)
        while rows:
            yield rows
            if len(rows) < size:
                return
            rows = await self.reader.run(lambda _conn: cursor[0].fetchmany(size))

    async def fetch_in(
        self, sql: str, ids: Sequence[Any], args: Sequence[Any] = (), type_: str = "bigint"
    ) -> list[Row]:
        ids = list(ids)
        if not ids:
            return []

        def go(conn: sqlite3.Connection) -> list[Row]:
            out: list[Row] = []
            for i in range(0, len(ids), Tx.CHUNK):
                part = ids[i : i + Tx.CHUNK]
                out += conn.execute(_expand(sql, len(part)), (*args, *part)).fetchall()
            return out

        return await self.reader.run(go)

    def ts(self, value: Any) -> Any:
        return read_ts(value)

    def bts(self, value: Any) -> Any:
        return bind_ts(value)

    def js(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    @staticmethod
    def json_field(column: str, key: str) -> str:
        """SQL for the text of ``column``'s top-level ``key``."""
        return f"json_extract({column}, '$.{key}')"
