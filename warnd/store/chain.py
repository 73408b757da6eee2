"""Store operations of the chain's timers and rows: divisions and calls loaded and saved in
bulk, attempts and history events written, due stages, divisions and calls found.

Every function takes the ``Tx`` the single writer handed to the engine. Locks are the backend's
business: on PostgreSQL the divisions a batch steps are locked (in id order: no deadlock), and
due work is taken with ``SKIP LOCKED`` so that instances share it; SQLite has one writer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from warnd.core.chain.ladder import CallState, DivisionState
from warnd.store.records import (
    CALL_FIXED,
    CALL_INSERT,
    CALL_LOAD,
    CALL_UPDATE,
    DIV_FIELDS,
    DIVISION_INSERT,
    DIVISION_LOAD,
    EVENT_INSERT,
    OUTBOX_INSERT,
    WARNING_COLS,
    CallRow,
    DivisionRow,
    StageRec,
    WarningRec,
)
from warnd.store.tx import Row, Tx


def _cols(names: Iterable[str], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{n}"' for n in names)


_DIV_SQL = f"SELECT {_cols(DIVISION_LOAD)} FROM division WHERE id IN {{ids}} ORDER BY id"
_CALL_SQL = f'SELECT {_cols(CALL_LOAD)} FROM "call" WHERE division_id IN {{ids}} ORDER BY id'
_WARNING_SQL = f'SELECT {_cols(WARNING_COLS)} FROM "warning"'


def lock_clause(tx: Tx, *, skip: bool = False, of: str | None = None) -> str:
    """`` FOR UPDATE`` (``OF of``, ``SKIP LOCKED``) where the backend has row locks."""
    if not tx.row_locks:
        return ""
    return " FOR UPDATE" + (f" OF {of}" if of else "") + (" SKIP LOCKED" if skip else "")


async def load_divisions(
    tx: Tx, division_ids: Iterable[int], *, skip: bool = False
) -> dict[int, tuple[DivisionRow, list[CallRow]]]:
    """Division rows and their calls (in creation order), by division id, locked for this
    transaction where the backend locks rows (``skip``: those locked elsewhere are left out)."""
    ids = sorted(set(division_ids))
    ts, flag = tx.ts, tx.flag
    divs = await tx.rows_in(_DIV_SQL + lock_clause(tx, skip=skip), ids)
    if skip:
        ids = [int(d[0]) for d in divs]
    calls: dict[int, list[CallRow]] = defaultdict(list)
    for c in await tx.rows_in(_CALL_SQL, ids):
        calls[c[1]].append(
            CallRow(
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                CallState(
                    c[6], c[7], c[8], c[9], ts(c[10]), c[11], ts(c[12]), c[13], ts(c[14]),
                    ts(c[15]), c[16],
                ),
            )
        )  # fmt: skip
    out: dict[int, tuple[DivisionRow, list[CallRow]]] = {}
    for d in divs:
        values = (d[5], d[6], ts(d[7]), ts(d[8]), d[9], d[10], ts(d[11]), flag(d[12]))
        out[d[0]] = (DivisionRow(d[0], d[1], d[2], d[3], d[4], values), calls[d[0]])
    return out


def save_divisions(
    tx: Tx,
    changes: Sequence[tuple[DivisionRow, DivisionState]],
    started: frozenset[int] = frozenset(),
) -> None:
    """Write the ladder fields of divisions whose state changed; those ``started`` (their
    stage's start done) also leave the queue of divisions to start, in the same row update."""
    rows, done = [], []
    for row, state in changes:
        values = tuple(state[2:10])  # DIV_FIELDS
        if row.id in started:
            done.append((*values, None, row.id))
        elif values != row.values:
            rows.append((*values, row.id))
    tx.update("division", DIV_FIELDS, rows)
    tx.update("division", (*DIV_FIELDS, "start_due"), done)


def save_calls(tx: Tx, updates: list[Row], inserts: list[Row]) -> None:
    """``updates``: ``(*CALL_UPDATE values, id)``; ``inserts``: rows in ``CALL_INSERT`` order."""
    tx.update("call", CALL_UPDATE, updates)
    tx.insert("call", CALL_INSERT, inserts)


def call_changes(old: CallRow, new: CallState, last_message: str | None) -> Row | None:
    """The update row of a call whose state or latest attempt changed, else None."""
    if new == old.values and last_message == old.last_message:
        return None
    fixed = len(CALL_FIXED)
    if new[:fixed] != old.values[:fixed]:
        raise ValueError(f"call {old.id} would change its identity: {new[:fixed]}")
    return (*new[fixed:], last_message, old.id)


def insert_attempts(tx: Tx, rows: list[Row]) -> None:
    """Rows in ``OUTBOX_INSERT`` order (``seq`` from ``tx.seq()``)."""
    tx.insert("outbox", OUTBOX_INSERT, rows)


def mark_bundled(tx: Tx, rows: list[Row]) -> None:
    """``(bundle, id)``: attempt rows sent as one message (contracts §8). A statement per row,
    not ``tx.update``: the rows of a history table's bulk writes end with their ``seq``."""
    tx.many("UPDATE outbox SET bundle = ? WHERE id = ?", rows)


async def waiting_calls(
    tx: Tx, contact_ids: Sequence[str], until: datetime, attempts: int
) -> list[tuple[int, str, str, int, datetime, bool]]:
    """(division id, key, person, warning id, next due, drill) of these persons' running calls
    whose next attempt is due by ``until`` (bundling, contracts §8)."""
    if not contact_ids:
        return []
    rows = await tx.rows_in(
        "SELECT c.division_id, c.key, c.contact_id, c.warning_id, c.next_due_at, w.drill"
        ' FROM "call" c JOIN "warning" w ON w.id = c.warning_id'
        " WHERE c.state = 'active' AND c.next_due_at <= ? AND c.attempts_made < ?"
        " AND c.contact_id IN {ids} ORDER BY c.next_due_at, c.id",
        list(contact_ids),
        tx.bts(until),
        attempts,
        type_="text",
    )
    return [(int(r[0]), r[1], r[2], int(r[3]), tx.ts(r[4]), tx.flag(r[5])) for r in rows]


async def stages_due_by(
    tx: Tx, now: datetime, until: datetime
) -> list[tuple[int, int, str, datetime]]:
    """(stage id, warning id, level, due) of the active warnings' stages not fired yet and due
    after ``now`` (those due by now are fired first, in the same tick), by ``until``
    (bundling, contracts §8)."""
    rows = await tx.rows(
        'SELECT s.id, s.warning_id, s.level, s.due_at FROM stage s JOIN "warning" w'
        " ON w.id = s.warning_id WHERE s.state = 'pending' AND w.state = 'active'"
        " AND s.due_at > ? AND s.due_at <= ? ORDER BY s.due_at, s.id",
        tx.bts(now),
        tx.bts(until),
    )
    return [(int(r[0]), int(r[1]), r[2], tx.ts(r[3])) for r in rows]


async def queued_starts(
    tx: Tx, codes: Sequence[str], now: datetime
) -> list[tuple[int, int, str, datetime, bool]]:
    """(division id, warning id, code, start due, drill) of the divisions of these codes whose
    stage has fired and that wait to be started (bundling, contracts §8)."""
    if not codes:
        return []
    rows = await tx.rows_in(
        'SELECT d.id, d.warning_id, d.code, d.start_due, w.drill FROM division d JOIN "warning" w'
        " ON w.id = d.warning_id WHERE d.start_due IS NOT NULL AND d.start_due <= ?"
        " AND d.code IN {ids} ORDER BY d.start_due, d.id",
        list(codes),
        tx.bts(now),
        type_="text",
    )
    return [(int(r[0]), int(r[1]), r[2], tx.ts(r[3]), tx.flag(r[4])) for r in rows]


def insert_events(tx: Tx, rows: list[Row]) -> None:
    """Rows in ``EVENT_INSERT`` order (``seq`` from ``tx.seq()``)."""
    tx.insert("event", EVENT_INSERT, rows)


async def insert_divisions(tx: Tx, rows: list[Row]) -> list[int]:
    """Division rows in ``DIVISION_INSERT`` order without their id; returns the new ids."""
    ids = await tx.new_ids("division", len(rows))
    tx.insert("division", DIVISION_INSERT, [(i, *r) for i, r in zip(ids, rows, strict=True)])
    return ids


async def division_codes(tx: Tx, warning_id: int) -> dict[str, int]:
    return {
        code: int(i)
        for code, i in await tx.rows(
            "SELECT code, id FROM division WHERE warning_id = ?", warning_id
        )
    }


def mark_started(tx: Tx, division_ids: Sequence[int], start: datetime | None) -> None:
    """Divisions whose stage fired (``start``) or that were started (None)."""
    tx.update("division", ("start_due",), [(start, i) for i in division_ids])


async def open_codes(tx: Tx, contact_ids: Sequence[str]) -> dict[str, set[str]]:
    """Reply codes of the open calls of these persons (a new call's code must differ)."""
    if not contact_ids:
        return {}
    active = [int(r[0]) for r in await tx.rows("SELECT id FROM \"warning\" WHERE state = 'active'")]
    out: dict[str, set[str]] = defaultdict(set)
    for wid in active:
        for cid, code in await tx.rows_in(
            "SELECT contact_id, reply_code FROM \"call\" WHERE warning_id = ? AND state = 'active'"
            " AND reply_code IS NOT NULL AND contact_id IN {ids}",
            list(contact_ids),
            wid,
            type_="text",
        ):
            out[cid].add(code)
    return out


# ---- warnings ------------------------------------------------------------------------------


def _warning(tx: Tx, r: Row) -> WarningRec:
    return WarningRec(
        int(r[0]), r[1], r[2], r[3], tx.flag(r[4]), r[5], r[6], r[7], r[8], r[9], r[10],
        tx.ts(r[11]), r[12], tx.ts(r[13]), list(tx.js(r[14]) or []), tx.ts(r[15]), tx.ts(r[16]),
        r[17],
    )  # fmt: skip


async def warnings_by_id(tx: Tx, ids: Iterable[int]) -> dict[int, WarningRec]:
    rows = await tx.rows_in(_WARNING_SQL + " WHERE id IN {ids}", sorted(set(ids)))
    return {int(r[0]): _warning(tx, r) for r in rows}


async def warning(tx: Tx, warning_id: int) -> WarningRec:
    return (await warnings_by_id(tx, [warning_id]))[warning_id]


async def find_warning(tx: Tx, key: str) -> WarningRec | None:
    """A warning by key or by a unique prefix of its identifier."""
    exact = await tx.rows(_WARNING_SQL + " WHERE key = ?", key)
    if len(exact) == 1:
        return _warning(tx, exact[0])
    pattern = key.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
    like = await tx.rows(_WARNING_SQL + " WHERE key LIKE ? ESCAPE '/' ORDER BY id LIMIT 2", pattern)
    return _warning(tx, like[0]) if len(like) == 1 else None


async def insert_warning(tx: Tx, w: WarningRec) -> int:
    (wid,) = await tx.new_ids("warning", 1)
    w.id = wid
    tx.insert("warning", WARNING_COLS, [_warning_values(tx, w)])
    return wid


def save_warning(tx: Tx, w: WarningRec) -> None:
    tx.update("warning", WARNING_COLS[1:], [(*_warning_values(tx, w)[1:], w.id)])


def _warning_values(tx: Tx, w: WarningRec) -> Row:
    return tuple(getattr(w, c) for c in WARNING_COLS)


# ---- stages -------------------------------------------------------------------------------

_STAGE_COLS = ("id", "warning_id", "idx", "level", "lead_s", "due_at", "state")


def _stage(tx: Tx, r: Row) -> StageRec:
    return StageRec(int(r[0]), int(r[1]), int(r[2]), r[3], int(r[4]), tx.ts(r[5]), r[6])


async def due_stage(tx: Tx, now: datetime) -> StageRec | None:
    """The earliest pending stage due by ``now`` (on PostgreSQL one nobody else holds)."""
    rows = await tx.rows(
        f"SELECT {_cols(_STAGE_COLS)} FROM stage WHERE state = 'pending' AND due_at <= ?"
        " ORDER BY due_at, id LIMIT 1" + lock_clause(tx, skip=True),
        tx.bts(now),
    )
    return _stage(tx, rows[0]) if rows else None


async def pending_stages(tx: Tx, warning_id: int) -> list[StageRec]:
    rows = await tx.rows(
        f"SELECT {_cols(_STAGE_COLS)} FROM stage WHERE warning_id = ? AND state = 'pending'"
        " ORDER BY idx",
        warning_id,
    )
    return [_stage(tx, r) for r in rows]


def insert_stages(tx: Tx, rows: list[Row]) -> None:
    """Rows of (warning_id, idx, level, lead_s, due_at)."""
    tx.insert(
        "stage",
        ("warning_id", "idx", "level", "lead_s", "due_at", "state", "fired_at", "divisions"),
        [(*r, "pending", None, []) for r in rows],
    )


def retime_stages(tx: Tx, rows: list[tuple[datetime, int]]) -> None:
    tx.many("UPDATE stage SET due_at = ? WHERE id = ?", [(tx.bts(d), i) for d, i in rows])


def end_stage(
    tx: Tx, stage_id: int, state: str, fired_at: datetime | None, divisions: list[str]
) -> None:
    tx.update("stage", ("state", "fired_at", "divisions"), [(state, fired_at, divisions, stage_id)])


async def cancel_stages(tx: Tx, warning_id: int) -> None:
    await tx.execute(
        "UPDATE stage SET state = 'cancelled' WHERE warning_id = ? AND state = 'pending'",
        warning_id,
    )


# ---- due work -----------------------------------------------------------------------------


async def due_starts(tx: Tx, now: datetime, limit: int) -> list[int]:
    """Divisions of fired stages still to start, by due time then id (shared by instances)."""
    rows = await tx.rows(
        "SELECT id FROM division WHERE start_due IS NOT NULL AND start_due <= ?"
        " ORDER BY start_due, id LIMIT ?" + lock_clause(tx, skip=True),
        tx.bts(now),
        limit,
    )
    return [int(r[0]) for r in rows]


async def due_calls(
    tx: Tx, now: datetime, limit: int, *, by_person: bool = False
) -> list[tuple[int, int, str]]:
    """(call id, division id, key) of the calls whose timer has come, earliest first. On
    PostgreSQL only those of divisions nobody else is stepping (locked here). ``by_person``
    (bundling, contracts §8): one person's calls due at one time in the same batch, so that
    what they lead to (escalations to the same backup) is made together."""
    due = await tx.rows(
        "SELECT id, division_id, key FROM \"call\" WHERE state = 'active' AND next_due_at <= ?"
        + (" ORDER BY next_due_at, contact_id, id" if by_person else " ORDER BY next_due_at, id")
        + " LIMIT ?",
        tx.bts(now),
        limit,
    )
    if not tx.row_locks or not due:
        return due
    mine = {
        int(r[0])
        for r in await tx.rows_in(
            "SELECT id FROM division WHERE id IN {ids} ORDER BY id" + lock_clause(tx, skip=True),
            sorted({int(d[1]) for d in due}),
        )
    }
    return [(int(a), int(b), c) for a, b, c in due if int(b) in mine]


async def next_due(read: Any) -> datetime | None:
    """When the engine or the sender next has work: the earliest due row (a read)."""
    queries = (
        'SELECT min(s.due_at) FROM stage s JOIN "warning" w ON w.id = s.warning_id'
        " WHERE s.state = 'pending' AND w.state = 'active'",
        "SELECT min(start_due) FROM division WHERE start_due IS NOT NULL",
        "SELECT min(next_due_at) FROM \"call\" WHERE state = 'active'",
        "SELECT min(due_at) FROM outbox WHERE state = 'pending'",
    )
    dues = []
    for q in queries:
        (value,) = (await read.fetch(q))[0]
        if value is not None:
            dues.append(read.ts(value))
    return min(dues) if dues else None
