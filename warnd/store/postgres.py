"""The PostgreSQL backend: asyncpg directly, bulk statements as arrays.

* Inserts are ``COPY`` (``copy_records_to_table``, binary); updates one
  ``UPDATE … FROM unnest($1::t[], …)`` per batch; ``IN`` lists one array parameter
  (``= ANY($n::t[])``). No ORM, no per-row round trip.
* The writer has a connection of its own; reads outside a write transaction (the duty desk's
  views, hooks' lookups) use a second one.
* ``seq`` comes from the sequence ``history_seq`` (blocks of 1024 per ``nextval``) and new ids
  from each table's own sequence, so instances never wait on one row.
* Instances heartbeat in ``instance``; the messages an instance claimed go back to the queue
  when it has been silent for two heartbeats (``reclaim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import structlog

from warnd.store import columns
from warnd.store.tx import Row, Tx, Write

T = TypeVar("T")
log = structlog.get_logger("warnd.store")

_BLOCK = 1024  # INCREMENT BY of history_seq (migration 0003)
_PARAM = re.compile(r"'(?:[^']|'')*'|\?")


@cache
def numbered(sql: str, start: int = 1) -> str:
    """``?`` parameters as ``$1``, ``$2``…; quoted literals left alone."""
    n = start - 1

    def sub(m: re.Match[str]) -> str:
        nonlocal n
        if m.group(0) != "?":
            return m.group(0)
        n += 1
        return f"${n}"

    return _PARAM.sub(sub, sql)


@cache
def with_array(sql: str, nargs: int, type_: str) -> str:
    """``x IN {ids}`` as ``x = ANY($k::type[])`` after ``nargs`` ``?`` parameters."""
    text = numbered(sql.replace("IN {ids}", "= ANY(@ids@)"))
    return text.replace("@ids@", f"${nargs + 1}::{type_}[]")


def _utc(value: Any) -> Any:
    if value is None or getattr(value, "tzinfo", None) is UTC:
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value


@cache
def _update_sql(table: str, cols: tuple[str, ...], extra: str = "", guard: str = "") -> str:
    kinds = columns.kinds(table)
    names = (*cols, "id")
    arrays = ", ".join(f"${i}::{columns.pg_type(kinds[c])}[]" for i, c in enumerate(names, start=1))
    sets = ", ".join([*(f'"{c}" = v."{c}"' for c in cols), *([extra] if extra else [])])
    vcols = ", ".join(f'"{c}"' for c in names)
    where = f"t.id = v.id AND {guard}" if guard else "t.id = v.id"
    return f'UPDATE "{table}" AS t SET {sets} FROM unnest({arrays}) AS v({vcols}) WHERE {where}'


def _json_cols(table: str, cols: Sequence[str]) -> list[int]:
    kinds = columns.kinds(table)
    return [i for i, c in enumerate(cols) if kinds[c] == "json"]


def _encoded(table: str, cols: Sequence[str], rows: list[Row]) -> list[Row]:
    """JSON values as text (asyncpg's codec for ``json``)."""
    idx = _json_cols(table, cols)
    if not idx:
        return rows
    out = []
    for r in rows:
        v = list(r)
        for i in idx:
            if v[i] is not None and not isinstance(v[i], str):
                v[i] = json.dumps(v[i])
        out.append(tuple(v))
    return out


class PostgresTx(Tx):
    """A write transaction on the writer's connection (begun on first use)."""

    row_locks = True

    def __init__(self, conn: Any) -> None:
        super().__init__()
        self._conn = conn
        self._tr: Any = None
        self.inserted: dict[str, int] = {}  # rows per table, for the planner's statistics
        self._announce = False

    def announce(self) -> None:
        self._announce = True

    async def _begin(self) -> None:
        if self._tr is None:
            self._tr = self._conn.transaction()
            await self._tr.start()

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[Row]:
        await self._begin()
        return [tuple(r) for r in await self._conn.fetch(numbered(sql), *args)]

    async def _fetch_in(
        self, sql: str, ids: list[Any], args: Sequence[Any], type_: str
    ) -> list[Row]:
        await self._begin()
        rows = await self._conn.fetch(with_array(sql, len(args), type_), *args, ids)
        return [tuple(r) for r in rows]

    async def _execute(self, sql: str, args: Sequence[Any]) -> int:
        await self._begin()
        return _count(await self._conn.execute(numbered(sql), *args))

    async def _execute_in(self, sql: str, ids: list[Any], args: Sequence[Any], type_: str) -> int:
        await self._begin()
        return _count(await self._conn.execute(with_array(sql, len(args), type_), *args, ids))

    async def _write(self, writes: list[Write], first: int, n: int) -> None:
        await self._begin()
        if n:
            place = await self._reserve(n)
            writes = self.placed(writes, place, first)
        for w in writes:
            if w.kind == "many":
                await self._conn.executemany(numbered(w.sql), w.rows)
            elif w.kind == "insert":
                self.inserted[w.table] = self.inserted.get(w.table, 0) + len(w.rows)
                await self._conn.copy_records_to_table(
                    w.table, records=_encoded(w.table, w.cols, w.rows), columns=list(w.cols)
                )
            else:
                names = (*w.cols, "id")
                rows = _encoded(w.table, names, w.rows)
                arrays = [list(c) for c in zip(*rows, strict=True)]
                sql = _update_sql(w.table, w.cols, w.extra, w.guard)
                await self._conn.execute(sql, *arrays)

    async def _reserve(self, n: int) -> Callable[[int], int]:
        blocks = -(-n // _BLOCK)
        rows = await self._conn.fetch(
            "SELECT nextval('history_seq') FROM generate_series(1, $1)", blocks
        )
        bases = sorted(int(r[0]) for r in rows)
        return lambda i: bases[i // _BLOCK] + i % _BLOCK

    async def new_ids(self, table: str, n: int) -> list[int]:
        if n <= 0:
            return []
        await self._begin()
        rows = await self._conn.fetch(
            f"SELECT nextval(pg_get_serial_sequence('\"{table}\"', 'id'))"
            " FROM generate_series(1, $1)",
            n,
        )
        return [int(r[0]) for r in rows]

    async def _commit(self, writes: list[Write], first: int, n: int) -> None:
        if writes:
            await self._write(writes, first, n)
        if self._announce and self._tr is not None:
            await self._conn.execute(f"NOTIFY {WAKE}")  # delivered when this commits
        if self._tr is not None:
            tr, self._tr = self._tr, None
            await tr.commit()

    async def rollback(self) -> None:
        self._writes = []
        if self._tr is not None:
            tr, self._tr = self._tr, None
            await tr.rollback()

    def ts(self, value: Any) -> Any:
        return _utc(value)

    def bts(self, value: Any) -> Any:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime reached the store")
        return value

    def js(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value


def _count(status: str) -> int:
    """Rows changed, from a command tag like ``UPDATE 3``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


#: the channel on which instances tell each other that work is due (a stage's divisions)
WAKE = "warnd_wake"

#: rows inserted into a table since its last ANALYZE that call for a new one, at least
ANALYZE_AFTER = 5_000


def analyse_due(grown: int, known: int) -> bool:
    """Whether a table that grew by ``grown`` rows since its last ANALYZE, after ``known`` rows
    this store inserted before it, needs one now: after ``ANALYZE_AFTER`` rows, or half of what
    it had when it grew past that. The planner's statistics stay within 1.5 × of the table's
    size while a province fan-out and its escalation (200,000 rows) cost ~9 analyses, not 40
    (each 0.3–0.9 s of the server's time; docs/performance.md)."""
    return grown >= max(ANALYZE_AFTER, known // 2)


class PostgresBackend:
    """The connections of a PostgreSQL store: the writer's, and a small pool for reads.

    A fan-out grows the hot tables by 100,000 rows in a minute, far faster than autovacuum
    refreshes the planner's statistics: planned for the empty tables they were, lookups by
    index (a person's open calls, due calls) became scans of every row, once per batch. So
    when a table has grown enough (``analyse_due``), it is analysed (in the background,
    on a reader connection; ``ANALYZE`` blocks no reads and no writes).
    """

    name = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.writer: Any = None
        self.reader: Any = None
        self._grown: dict[str, int] = {}
        self._known: dict[str, int] = {}  # rows inserted up to each table's last ANALYZE
        self._analyses: dict[str, asyncio.Task[None]] = {}
        self._listener: Any = None

    async def open(self) -> None:
        asyncpg: Any = importlib.import_module("asyncpg")  # untyped; imported on use only

        self.writer = await asyncpg.connect(
            self.dsn, server_settings={"application_name": "warnd-writer"}
        )
        self.reader = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=4, server_settings={"application_name": "warnd-reader"}
        )

    async def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever another instance announces due work (its own connection:
        it must stay idle to receive notifications)."""
        asyncpg: Any = importlib.import_module("asyncpg")
        self._listener = await asyncpg.connect(
            self.dsn, server_settings={"application_name": "warnd-listener"}
        )
        await self._listener.add_listener(WAKE, lambda *_args: callback())

    async def close(self) -> None:
        if getattr(self, "_listener", None) is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        for task in list(self._analyses.values()):
            task.cancel()
        await asyncio.gather(*self._analyses.values(), return_exceptions=True)
        if self.writer is not None:
            await self.writer.close()
        if self.reader is not None:
            await self.reader.close()
        self.writer = self.reader = None

    async def transact(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """``fn(tx)`` in one transaction on the writer's connection, committed."""
        tx = PostgresTx(self.writer)
        try:
            result = await fn(tx)
            await tx.commit()
        except BaseException:
            await tx.rollback()
            raise
        for table, n in tx.inserted.items():
            self._grown[table] = grown = self._grown.get(table, 0) + n
            known = self._known.get(table, 0)
            if analyse_due(grown, known) and table not in self._analyses:
                self._grown[table] = 0
                self._known[table] = known + grown
                task = asyncio.get_running_loop().create_task(self._analyze(table))
                self._analyses[table] = task
                task.add_done_callback(self._analysed)
        return result

    def _analysed(self, task: asyncio.Task[None]) -> None:
        for table, t in list(self._analyses.items()):
            if t is task:
                del self._analyses[table]

    async def _analyze(self, table: str) -> None:
        try:
            async with self.reader.acquire() as conn:
                await conn.execute(f'ANALYZE "{table}"')
        except Exception as exc:  # statistics are an optimisation: never an error
            log.warning("analyze_failed", table=table, error=str(exc)[:200])

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in await self.reader.fetch(numbered(sql), *args)]

    async def fetch_in(
        self, sql: str, ids: Sequence[Any], args: Sequence[Any] = (), type_: str = "bigint"
    ) -> list[Row]:
        if not ids:
            return []
        rows = await self.reader.fetch(with_array(sql, len(args), type_), *args, list(ids))
        return [tuple(r) for r in rows]

    async def stream(
        self, sql: str, args: Sequence[Any] = (), size: int = 20_000
    ) -> AsyncIterator[list[Row]]:
        """The rows of a long read, ``size`` at a time (a server-side cursor)."""
        async with self.reader.acquire() as conn, conn.transaction():
            cursor = await conn.cursor(numbered(sql), *args)
            while rows := await cursor.fetch(size):
                yield [tuple(r) for r in rows]

    def ts(self, value: Any) -> Any:
        return _utc(value)

    def bts(self, value: Any) -> Any:
        return value

    def js(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value

    @staticmethod
    def json_field(column: str, key: str) -> str:
        """SQL for the text of ``column``'s top-level ``key``."""
        return f"({column} ->> '{key}')"


def host() -> str:
    return socket.gethostname()
