"""One write transaction, whatever the backend: the primitives the store's operations use.

The engine never sees SQL: it calls the named operations of ``warnd.store.chain``, ``intake``,
``answers`` and ``outbox`` on a ``Tx`` handed to it by the single writer
(``warnd.store.writer``). Those operations are written once, in plain SQL with ``?``
parameters and ``{ids}`` for one list of ids; each backend (``warnd.store.sqlite``,
``warnd.store.postgres``) runs them its own way and binds values its own way (SQLite keeps
timestamps as UTC text and JSON as text; PostgreSQL takes them natively through asyncpg).
Writes are buffered and issued in bulk (one ``executemany``; ``COPY`` or ``unnest``) when the
transaction next reads or commits.

``seq`` orders the history's three sources (outbox, ack, event rows) at one instant, in the
order the chain made them: SQLite hands out the store's own numbers (``SQLiteTx.seq``);
PostgreSQL numbers rows locally and maps them onto blocks of its sequence when they are
written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Row = tuple[Any, ...]

#: tables whose rows carry ``seq`` as their last column
HISTORY = frozenset(("outbox", "event", "ack"))


@dataclass(slots=True)
class Write:
    """A buffered bulk statement: insert ``rows`` of ``cols`` into ``table``, or update them by
    ``key`` (the last value of each row), or a raw statement executed for each row."""

    kind: str  # insert | update | many
    table: str
    cols: tuple[str, ...]
    rows: list[Row]
    sql: str = ""
    extra: str = ""  # update: more of the SET clause, not from the rows ("tries = tries + 1")
    guard: str = ""  # update: a condition besides the id


class Tx:
    """Backend-neutral part of a write transaction (subclassed per backend)."""

    #: rows per IN list on backends that expand them into parameters
    CHUNK = 500
    #: the backend locks rows (``SELECT … FOR UPDATE``): instances share one store
    row_locks = False

    def __init__(self) -> None:
        self._writes: list[Write] = []
        self._seq_next = 0  # local numbers handed out
        self._seq_mapped = 0  # local numbers already written (mapped to store values)

    # ---- reading ------------------------------------------------------------------------

    async def rows(self, sql: str, *args: Any) -> list[Row]:
        """Rows of ``sql`` (``?`` parameters), as the driver returns them."""
        await self.flush()
        return await self._fetch(sql, args)

    async def rows_in(
        self, sql: str, ids: Sequence[Any], *args: Any, type_: str = "bigint"
    ) -> list[Row]:
        """Rows of ``sql`` whose ``{ids}`` stands for ``IN`` the given ids (after ``args``)."""
        if not ids:
            return []
        await self.flush()
        return await self._fetch_in(sql, list(ids), args, type_)

    async def execute(self, sql: str, *args: Any) -> int:
        """One statement now (after the buffered writes); the number of rows it changed."""
        await self.flush()
        return await self._execute(sql, args)

    async def execute_in(
        self, sql: str, ids: Sequence[Any], *args: Any, type_: str = "bigint"
    ) -> int:
        if not ids:
            return 0
        await self.flush()
        return await self._execute_in(sql, list(ids), args, type_)

    # ---- writing (buffered) -------------------------------------------------------------

    def insert(self, table: str, cols: Sequence[str], rows: list[Row]) -> None:
        if rows:
            self._writes.append(Write("insert", table, tuple(cols), rows))

    def update(
        self, table: str, cols: Sequence[str], rows: list[Row], *, extra: str = "", guard: str = ""
    ) -> None:
        """Rows are ``(*values of cols, id)``; ``extra`` adds to the SET clause (constants, the
        row's own columns), ``guard`` to the WHERE clause (unqualified column names)."""
        if rows:
            self._writes.append(Write("update", table, tuple(cols), rows, "", extra, guard))

    def many(self, sql: str, rows: list[Row]) -> None:
        """``sql`` once per row (bound values: see ``ts``); for statements of their own shape."""
        if rows:
            self._writes.append(Write("many", "", (), rows, sql))

    def announce(self) -> None:
        """Tell the other instances sharing the store, once this commits, that work is due
        (PostgreSQL: ``NOTIFY``); nothing on a store with one daemon."""

    def seq(self) -> int:
        """The next number of the history's order (see the module doc); local here."""
        n = self._seq_next
        self._seq_next = n + 1
        return n

    async def flush(self) -> None:
        if self._writes:
            await self._write(*self._take())

    async def commit(self) -> None:
        await self._commit(*self._take())

    def _take(self) -> tuple[list[Write], int, int]:
        """The buffered writes, and the local sequence numbers they hold (first, count)."""
        writes, self._writes = self._writes, []
        first, n = self._seq_mapped, self._seq_next - self._seq_mapped
        self._seq_mapped = self._seq_next
        return writes, first, n

    @staticmethod
    def placed(writes: list[Write], place: Callable[[int], int], first: int) -> list[Write]:
        """``writes`` with the local sequence numbers of history rows made the store's."""
        return [_placed(w, place, first) if w.table in HISTORY else w for w in writes]

    # ---- per backend --------------------------------------------------------------------

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[Row]:
        raise NotImplementedError

    async def _fetch_in(
        self, sql: str, ids: list[Any], args: Sequence[Any], type_: str
    ) -> list[Row]:
        raise NotImplementedError

    async def _execute(self, sql: str, args: Sequence[Any]) -> int:
        raise NotImplementedError

    async def _execute_in(self, sql: str, ids: list[Any], args: Sequence[Any], type_: str) -> int:
        raise NotImplementedError

    async def _write(self, writes: list[Write], first: int, n: int) -> None:
        """Issue ``writes``; rows of history tables hold local sequence numbers
        ``first``..``first + n - 1`` in their last column, to be mapped (``placed``)."""
        raise NotImplementedError

    async def _commit(self, writes: list[Write], first: int, n: int) -> None:
        """``_write`` then commit."""
        raise NotImplementedError

    async def rollback(self) -> None:
        raise NotImplementedError

    async def new_ids(self, table: str, n: int) -> list[int]:
        """``n`` fresh primary keys for ``table`` (rows that reference each other are written
        in one batch: ids are known before the rows are)."""
        raise NotImplementedError

    # values as the backend stores them
    def ts(self, value: Any) -> Any:
        """A stored timestamp → aware UTC datetime."""
        raise NotImplementedError

    def bts(self, value: Any) -> Any:
        """An aware datetime → what the backend binds for a timestamp column."""
        raise NotImplementedError

    @staticmethod
    def flag(value: Any) -> bool:
        return bool(value)

    def js(self, value: Any) -> Any:
        """A stored JSON value → Python."""
        raise NotImplementedError


def _placed(w: Write, place: Callable[[int], int], first: int) -> Write:
    """``w`` with the local sequence numbers of its rows (their last column) made global."""
    rows = [(*r[:-1], None if r[-1] is None else place(r[-1] - first)) for r in w.rows]
    return Write(w.kind, w.table, w.cols, rows, w.sql, w.extra, w.guard)
