"""Escalation floor: what SQLite alone needs for the province-wide escalation sweep.

Builds the store of ``bench/fanout.py`` (122 counties × 12 townships × 17 villages, one
province-wide warning, all stages fired, every message marked sent), copies it, runs the
escalation tick (attempts = 1: 102,724 calls fail, every division moves to its backup) while
recording every SQL statement with its parameters and every commit, then replays exactly that
SQL with the bare ``sqlite3`` module (the store's pragmas) on the copy: the time no engine can
beat with this schema on this machine. Also replayed: with ``synchronous=NORMAL``, without the
``event`` rows, and without the ``event`` and ``outbox`` rows (what those rows cost).

Usage: .venv/bin/python bench/escalation_floor.py  (about a minute)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from directory_gen import generate  # noqa: E402
from fanout import province_alert, start_daemon  # noqa: E402

from warnd import logs  # noqa: E402
from warnd.feeds import FeedItem  # noqa: E402

Statement = tuple[str, str | None, Any]  # ("one" | "many" | "commit", sql, parameters)
VARIANTS = [
    ("as stored", "FULL", ()),
    ("synchronous=NORMAL", "NORMAL", ()),
    ("without event rows", "FULL", ("INSERT INTO event",)),
    ("without event and outbox rows", "FULL", ("INSERT INTO event", "INSERT INTO outbox")),
]


def replay(
    before: Path, work: Path, log: list[Statement], sync: str, skip: tuple[str, ...]
) -> float:
    """Seconds for plain sqlite3 to run ``log`` on a fresh copy of ``before``."""
    shutil.copy(before, work)
    con = sqlite3.connect(work, isolation_level=None)
    for pragma in ("journal_mode=WAL", f"synchronous={sync}", "foreign_keys=ON"):
        con.execute(f"PRAGMA {pragma}")
    con.execute("PRAGMA cache_size=-65536")
    began = False
    start = time.perf_counter()
    for kind, sql, params in log:
        if kind == "commit":
            if began:
                con.execute("COMMIT")
                began = False
        elif sql is None or sql.startswith(skip or ("\0",)):
            continue
        elif sql.startswith("BEGIN"):
            con.execute(sql)
            began = True
        elif kind == "many":
            con.executemany(sql, params)
        else:
            con.execute(sql, params).fetchall()
    if began:
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


async def run() -> dict[str, Any]:
    logs.configure(json=True, level="warning")
    tmp = Path(tempfile.mkdtemp(prefix="warnd-floor-"))
    try:
        generate(tmp / "contacts", 122, 12, 17, 8, seed=7)
        db = tmp / "warnd.db"
        url = f"sqlite:///{db}"
        daemon, clock = await start_daemon(tmp, "http://127.0.0.1:9/send", url)
        engine = daemon.engine
        assert engine is not None
        await engine.ingest(FeedItem(province_alert(clock.now()), "bench"))
        await engine.tick()
        async with engine.ctx.store.write() as s:
            await s.execute(text("UPDATE outbox SET state = 'sent', sent_at = due_at"))
        raw = sqlite3.connect(db)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        shutil.copy(db, tmp / "before.db")
        log: list[Statement] = []
        sync_engine = engine.ctx.store._write.sync_engine

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _statement(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
            log.append(("many" if many else "one", sql, params))

        @event.listens_for(sync_engine, "commit")
        def _commit(_c: Any) -> None:
            log.append(("commit", None, None))

        clock.advance(timedelta(minutes=5))
        start = time.perf_counter()
        report = await engine.tick()
        figures: dict[str, Any] = {
            "calls_failed_and_escalated": report.calls_advanced,
            "engine_escalation_s": round(time.perf_counter() - start, 2),
            "statements": sum(1 for kind, _s, _p in log if kind != "commit"),
        }
        await daemon.stop()
        for name, sync, skip in VARIANTS:
            seconds = replay(tmp / "before.db", tmp / "replay.db", log, sync, skip)
            figures[f"sqlite3_replay_s ({name})"] = round(seconds, 2)
        return figures
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    print(json.dumps(asyncio.run(run()), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
