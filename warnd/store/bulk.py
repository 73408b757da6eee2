"""How the store's bulk statements are issued, per backend (``bulk_for``).

The engine moves ~100,000 rows per table per tick in a province-wide fan-out, so the chain's
rows (``warnd.store.chainrows``) and the outbox are loaded and written in bulk, never through
the ORM's object-at-a-time unit of work:

* ``CoreBulk``, for any database (PostgreSQL): SQLAlchemy Core statements — one SELECT per
  chunk of ids, executemany UPDATEs, INSERT … RETURNING for new ids.
* ``SQLiteBulk``: the same statements as driver-level ``executemany`` over plain tuples.
  SQLAlchemy's per-row work (a parameter dict per row, bind processing, the ``UTCDateTime``
  TypeDecorator) costs more than SQLite itself on these paths. Values still go through the very
  bind and result processors SQLAlchemy would apply on the dialect (memoised per statement for
  timestamps: a batch repeats a handful of instants), so what is stored and what is read back
  is identical to the Core path (tests/test_chainrows.py compares the two). New ids are
  taken from ``max(id)``: every write transaction begins with ``BEGIN IMMEDIATE``, so nobody
  else can insert meanwhile, and ``max(id) + 1`` is what SQLite would pick itself; no
  RETURNING round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, Table, bindparam, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from warnd.store.tables import UTCDateTime

CHUNK = 500  # IN (...) lists stay well below every backend's parameter limit
ROWS = 5000  # rows per executemany on the portable path


class CoreBulk:
    """Bulk statements through SQLAlchemy Core: correct on every backend."""

    async def select_in(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        where: str,
        ids: Sequence[int],
    ) -> list[tuple[Any, ...]]:
        """``cols`` of the rows whose ``where`` column is in ``ids``, in id order per chunk."""
        out: list[tuple[Any, ...]] = []
        columns = [table.c[c] for c in cols]
        for i in range(0, len(ids), CHUNK):
            part = ids[i : i + CHUNK]
            q = select(*columns).where(table.c[where].in_(part)).order_by(table.c.id)
            out.extend(tuple(r) for r in await session.execute(q))
        return out

    async def insert(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        for i in range(0, len(rows), ROWS):
            part = [dict(zip(cols, r, strict=True)) for r in rows[i : i + ROWS]]
            await session.execute(insert(table), part)

    async def insert_returning_ids(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        rows: Sequence[Sequence[Any]],
        key: Sequence[str],
    ) -> list[int]:
        """Insert; the new ids in row order. ``key`` (columns) must be unique among ``rows``.

        RETURNING is matched by key, not by order: asking the driver to keep parameter order
        makes bulk inserts several times slower.
        """
        if not rows:
            return []
        pos = [cols.index(k) for k in key]
        found: dict[tuple[Any, ...], int] = {}
        returning = [table.c.id, *(table.c[k] for k in key)]
        for i in range(0, len(rows), ROWS):
            part = [dict(zip(cols, r, strict=True)) for r in rows[i : i + ROWS]]
            for r in await session.execute(insert(table).returning(*returning), part):
                found[tuple(r[1:])] = r[0]
        return [found[tuple(r[p] for p in pos)] for r in rows]

    async def update_by_id(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Rows are ``(*values of cols, id)``."""
        if not rows:
            return
        stmt = (
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values({c: bindparam(c) for c in cols})
        )
        names = (*cols, "_id")
        for i in range(0, len(rows), ROWS):
            part = [dict(zip(names, r, strict=True)) for r in rows[i : i + ROWS]]
            await session.execute(stmt, part)


Processor = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _memoised(proc: Processor) -> Processor:
    """``proc`` for one statement's rows; None stays None (as every processor here keeps it)."""
    seen: dict[Any, Any] = {}

    def process(value: Any) -> Any:
        if value is None:
            return None
        try:
            return seen[value]
        except KeyError:
            out = seen[value] = proc(value)
            return out

    return process


_PLAIN = (str, int, bool, type(None))


def _memoised_json(proc: Processor) -> Processor:
    """``proc`` for one statement's JSON values; flat dicts of plain values are memoised.

    The key keeps every type (``True`` and ``1`` are equal in Python, not in JSON).
    """
    seen: dict[tuple[Any, ...], Any] = {}

    def process(value: Any) -> Any:
        if type(value) is not dict:
            return proc(value)
        key = []
        for k, v in value.items():
            if type(k) is not str or type(v) not in _PLAIN:
                return proc(value)
            key.append((k, type(v), v))
        t = tuple(key)
        out = seen.get(t)
        if out is None:
            out = seen[t] = proc(value)
        return out

    return process


class SQLiteBulk(CoreBulk):
    """The same statements as driver-level executemany over tuples (see the module docstring)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._quote = dialect.identifier_preparer.quote
        self._binds: dict[tuple[str, str], Processor | None] = {}
        self._results: dict[tuple[str, str], Processor | None] = {}
        self._defaults: dict[tuple[str, tuple[str, ...]], bool] = {}

    def _processor(self, table: Table, col: str, *, bind: bool) -> Processor | None:
        cache = self._binds if bind else self._results
        k = (table.name, col)
        if k not in cache:
            t = table.c[col].type
            impl = t.dialect_impl(self.dialect)
            cache[k] = (
                impl.bind_processor(self.dialect)
                if bind
                else impl.result_processor(self.dialect, None)
            )
        return cache[k]

    def _procs(
        self, table: Table, cols: Sequence[str], *, bind: bool
    ) -> list[tuple[int, Processor]]:
        """(position, processor) for each column that has one, fresh memos for timestamps."""
        out = []
        for i, c in enumerate(cols):
            proc = self._processor(table, c, bind=bind)
            if proc is not None:
                kind = table.c[c].type
                if isinstance(kind, UTCDateTime):
                    proc = _memoised(proc)
                elif isinstance(kind, JSON) and bind:
                    proc = _memoised_json(proc)
                out.append((i, proc))
        return out

    def _bound(
        self, table: Table, cols: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[Any, ...]]:
        procs = self._procs(table, cols, bind=True)
        if not rows or not procs:
            return [tuple(r) for r in rows]
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True))  # column-wise: C loops
        for i, proc in procs:
            columns[i] = [proc(v) for v in columns[i]]
        return list(zip(*columns, strict=True))

    async def _executemany(
        self, session: AsyncSession, sql: str, rows: list[tuple[Any, ...]]
    ) -> None:
        if rows:
            conn = await session.connection()
            await conn.exec_driver_sql(sql, rows)

    # For statements of other modules (the outbox) that take the same fast path.

    def quote(self, name: str) -> str:
        return self._quote(name)

    def bind(self, table: Table, col: str, value: Any) -> Any:
        """``value`` as the driver receives it for ``table.col``."""
        proc = self._processor(table, col, bind=True)
        return value if proc is None else proc(value)

    async def execute(
        self, session: AsyncSession, sql: str, params: Sequence[Any] | list[tuple[Any, ...]]
    ) -> Any:
        """A driver-level statement: one tuple of parameters, or a list of them (executemany)."""
        if isinstance(params, list) and not params:
            return None
        conn = await session.connection()
        return await conn.exec_driver_sql(
            sql, params if isinstance(params, list) else tuple(params)
        )

    def reader(self, table: Table, col: str) -> Processor:
        """What Core does to a stored ``table.col`` value when reading it."""
        proc = self._processor(table, col, bind=False)
        return proc if proc is not None else _same

    def results(
        self, table: Table, cols: Sequence[str | None], rows: Iterable[Sequence[Any]]
    ) -> list[tuple[Any, ...]]:
        """Rows of a driver-level SELECT, processed as Core would for ``table.col`` columns
        (None: a column of another table that needs no processing)."""
        procs = []
        for i, c in enumerate(cols):
            proc = None if c is None else self._processor(table, c, bind=False)
            if proc is not None:
                procs.append((i, proc))
        if not procs:
            return [tuple(r) for r in rows]
        out = []
        for r in rows:
            v = list(r)
            for i, proc in procs:
                v[i] = proc(v[i])
            out.append(tuple(v))
        return out

    async def select_in(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        where: str,
        ids: Sequence[int],
    ) -> list[tuple[Any, ...]]:
        q = self._quote
        head = f"SELECT {', '.join(q(c) for c in cols)} FROM {q(table.name)} WHERE {q(where)} IN "
        procs = self._procs(table, cols, bind=False)
        conn = await session.connection()
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), CHUNK):
            part = tuple(ids[i : i + CHUNK])
            sql = f"{head}({', '.join('?' * len(part))}) ORDER BY {q('id')}"
            rows = (await conn.exec_driver_sql(sql, part)).all()
            if not procs:
                out.extend(tuple(r) for r in rows)
                continue
            for r in rows:
                v = list(r)
                for j, proc in procs:
                    v[j] = proc(v[j])
                out.append(tuple(v))
        return out

    def _insert_sql(self, table: Table, cols: Sequence[str]) -> str:
        q = self._quote
        return (
            f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in cols)})"
            f" VALUES ({', '.join('?' * len(cols))})"
        )

    def _defaulted(self, table: Table, cols: Sequence[str]) -> bool:
        """Whether a column left out of ``cols`` has a default that Core would fill in."""
        k = (table.name, tuple(cols))
        if k not in self._defaults:
            self._defaults[k] = any(
                c.name not in cols and (c.default is not None or c.server_default is not None)
                for c in table.c
            )
        return self._defaults[k]

    async def insert(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        if self._defaulted(table, cols):  # rare: leave the defaults to Core
            await super().insert(session, table, cols, rows)
            return
        await self._executemany(
            session, self._insert_sql(table, cols), self._bound(table, cols, rows)
        )

    async def insert_returning_ids(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        rows: Sequence[Sequence[Any]],
        key: Sequence[str],
    ) -> list[int]:
        if not rows:
            return []
        conn = await session.connection()
        q = self._quote
        top = (await conn.exec_driver_sql(f"SELECT max({q('id')}) FROM {q(table.name)}")).scalar()
        first = int(top or 0) + 1
        ids = list(range(first, first + len(rows)))
        await self.insert(
            session,
            table,
            ("id", *cols),
            [(i, *r) for i, r in zip(ids, rows, strict=True)],
        )
        return ids

    async def update_by_id(
        self,
        session: AsyncSession,
        table: Table,
        cols: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        q = self._quote
        sql = (
            f"UPDATE {q(table.name)} SET {', '.join(f'{q(c)} = ?' for c in cols)}"
            f" WHERE {q('id')} = ?"
        )
        await self._executemany(session, sql, self._bound(table, (*cols, "id"), rows))


_CORE = CoreBulk()
_BY_DIALECT: dict[str, Callable[[Dialect], CoreBulk]] = {"sqlite": SQLiteBulk}
_made: dict[int, CoreBulk] = {}


def bulk_for(session: AsyncSession) -> CoreBulk:
    """The bulk statements for this session's backend (the portable Core ones by default)."""
    dialect = session.get_bind().dialect
    make = _BY_DIALECT.get(dialect.name)
    if make is None:
        return _CORE
    bulk = _made.get(id(dialect))
    if bulk is None or getattr(bulk, "dialect", None) is not dialect:
        bulk = _made[id(dialect)] = make(dialect)
    return bulk
