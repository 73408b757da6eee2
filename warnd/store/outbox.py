"""Store operations of the outbox: due messages taken for sending, their outcomes written.

Taking messages differs by backend, nothing else does:

* **SQLite** has one daemon per store file (``warnd.store.lock``), so nothing needs to be written
  to take a message: the process remembers what it holds (``held``) until the outcome is
  committed. After a crash nothing is held: every message still pending is due, and goes out
  again at once under its own id (a message in flight at the crash may reach the gateway twice;
  the gateway can drop the repeat by id).
* **PostgreSQL** shares the queue between instances: a claim marks rows ``sending`` with the
  instance's id (``FOR UPDATE SKIP LOCKED``), and rows of an instance silent for two heartbeats
  go back to the queue (``reclaim``).

Messages go out in order of due time; among those due at the same instant, in queueing order
(``seq``): both walk ``ix_outbox_pending (due_at, seq)`` and stop at the claim size.
An attempt whose call was answered, cancelled or overtaken by its next attempt is not sent: it
is recorded ``cancelled`` ("call no longer open").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from warnd.store.tx import Row, Tx

RETRY_AFTER = timedelta(seconds=20)

#: what a taken message needs: the row, its warning's key, its call's state and reply code
_DUE = (
    'SELECT o.id, o."to", o.purpose, o.text, w.key, o.contact_id, o.drill, o.attempt, o.rung,'
    " c.reply_code, c.token, o.call_id, o.tries, c.state, c.attempts_made, o.bundle"
    ' FROM outbox o JOIN "warning" w ON w.id = o.warning_id'
    ' LEFT OUTER JOIN "call" c ON c.id = o.call_id'
)
DUE_SQLITE = _DUE + " WHERE o.state = 'pending' AND o.due_at <= ? ORDER BY o.due_at, o.seq LIMIT ?"


def stale(r: Row) -> bool:
    """A call attempt whose call was answered, cancelled, or overtaken by the next attempt
    (a bundled message carries other calls too: it goes out, contracts §8)."""
    return r[2] == "call" and (r[13] != "active" or (r[7] or 0) < (r[14] or 0)) and r[15] is None


async def take(store: Any, now: datetime, limit: int, instance: str) -> list[Row]:
    """Due messages for sending, held (SQLite) or claimed (PostgreSQL) until their outcome is
    recorded: rows of ``_DUE``'s columns."""
    if not store.is_sqlite:

        async def job(tx: Tx) -> list[Row]:
            return await claim_postgres(tx, now, limit, instance)

        rows: list[Row] = await store.writer.run(job)
        return rows
    return await due_sqlite(store, now, limit)


async def due_sqlite(store: Any, now: datetime, limit: int) -> list[Row]:
    """Due rows not held by this process (nor recorded while this read ran), in order; they
    are held from now on."""
    mark = store.release_mark()
    read = store.backend
    rows = await read.fetch(DUE_SQLITE, (read.bts(now), limit + len(store.held)))
    keep = store.fresh([r[0] for r in rows], mark)
    taken = [r for r, k in zip(rows, keep, strict=True) if k][:limit]
    store.held.update(r[0] for r in taken)
    return taken


async def claim_postgres(tx: Tx, now: datetime, limit: int, instance: str) -> list[Row]:
    """Due rows nobody else holds, marked ``sending`` by ``instance``: one statement."""
    return await tx.rows(
        "WITH taken AS (UPDATE outbox SET state = 'sending', claimed_by = ?"
        " WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND due_at <= ?"
        " ORDER BY due_at, seq LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING *)"
        + _DUE.replace("FROM outbox o", "FROM taken o")
        + " ORDER BY o.due_at, o.seq",
        instance,
        tx.bts(now),
        limit,
    )


_LIVE = LIVE = "state IN ('pending', 'sending')"


def record(
    tx: Tx,
    now: datetime,
    sent: Sequence[tuple[str, str]],
    failed: Sequence[tuple[str, str]],
    retry: Sequence[tuple[str, str]],
    cancelled: Sequence[tuple[str, str]],
) -> None:
    """Outcomes: (id, channel) sent; (id, error) failed for good, to retry, not to be sent.

    One bulk statement per kind (PostgreSQL: ``unnest``); a message already recorded (a late
    outcome after a cancel) is left alone. ``claimed_by`` stays on a message an instance sent
    (who sent it); one that goes back to the queue is nobody's.
    """
    tries = "tries = tries + 1"
    tx.update(
        "outbox",
        ("channel", "sent_at"),
        [(ch, now, i) for i, ch in sent],
        extra=f"state = 'sent', error = NULL, {tries}",
        guard=_LIVE,
    )
    tx.update(
        "outbox", ("error",), [(e, i) for i, e in failed], extra=f"state = 'failed', {tries}",
        guard=_LIVE,
    )  # fmt: skip
    tx.update(
        "outbox",
        ("error", "due_at"),
        [(e, now + RETRY_AFTER, i) for i, e in retry],
        extra=f"state = 'pending', claimed_by = NULL, {tries}",
        guard=_LIVE,
    )
    tx.update(
        "outbox", ("error",), [(e, i) for i, e in cancelled], extra="state = 'cancelled'",
        guard=_LIVE,
    )  # fmt: skip


async def heartbeat(read: Any, instance: str, host: str, pid: int, silent_s: float) -> int:
    """This instance is alive; messages of instances silent for ``silent_s`` are queued again.

    Returns the messages reclaimed. PostgreSQL only (the server's clock: liveness is real
    time, whatever clock the chain runs on).
    """
    async with read.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO instance (id, host, pid, started_at, heartbeat_at)"
            " VALUES ($1, $2, $3, now(), now())"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
            instance,
            host,
            pid,
        )
        silent = f"now() - make_interval(secs => {float(silent_s)})"
        status = await conn.execute(
            "UPDATE outbox SET state = 'pending', claimed_by = NULL WHERE state = 'sending'"
            " AND claimed_by IS DISTINCT FROM $1 AND claimed_by NOT IN"
            f" (SELECT id FROM instance WHERE heartbeat_at > {silent})",
            instance,
        )
        await conn.execute(f"DELETE FROM instance WHERE heartbeat_at <= {silent}")
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def retire(read: Any, instance: str) -> None:
    """A clean stop: what this instance still holds goes back to the queue now."""
    async with read.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE outbox SET state = 'pending', claimed_by = NULL"
            " WHERE state = 'sending' AND claimed_by = $1",
            instance,
        )
        await conn.execute("DELETE FROM instance WHERE id = $1", instance)
