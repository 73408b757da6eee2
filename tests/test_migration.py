"""``warnd db upgrade`` takes a real schema-0002 store with a warning at work to schema 0003, and
the engine carries that warning on: rows kept, attempts neither lost nor repeated, the history
the same as the code of schema 0002 wrote when it went on (``tests/store0002.py``)."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from factory import county_rows, write_contacts
from serve_harness import canonical
from sqlalchemy import Boolean, DateTime, LargeBinary, MetaData, insert
from sqlalchemy.ext.asyncio import create_async_engine
from store0002 import CONTINUATION, T0, TABLES, at

from warnd.config.policy import Policy
from warnd.core import directory
from warnd.core.clock import ManualClock
from warnd.core.errors import StoreError
from warnd.desk.views import history
from warnd.engine import Context, Engine
from warnd.store import Store, async_url, schema

FIXTURE = Path(__file__).parent / "golden" / "store-0002.json"


def _value(column: Any, v: Any) -> Any:
    """A fixture value (as SQLite stored it) as the column's Python value."""
    if v is None:
        return None
    t = column.type
    if isinstance(t, DateTime):
        parsed = datetime.fromisoformat(v)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(t, Boolean):
        return bool(v)
    if isinstance(t, LargeBinary):
        return base64.b64decode(v["base64"])
    if t.__class__.__name__ == "JSON":
        return json.loads(v) if isinstance(v, str) else v
    return v


async def load_0002(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """A fresh store at schema 0002 holding exactly the fixture's rows."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda c: command.upgrade(schema.alembic_config(c), "0002")  # type: ignore[arg-type]
            )
        async with engine.begin() as conn:
            meta = MetaData()
            await conn.run_sync(lambda c: meta.reflect(c))
            for name in TABLES:
                table = meta.tables[name]
                values = [{k: _value(table.c[k], v) for k, v in r.items()} for r in rows[name]]
                if values:
                    await conn.execute(insert(table), values)
            if engine.dialect.name == "postgresql":  # ids were given: move the sequences on
                for name in TABLES:
                    if name != "outbox":
                        await conn.exec_driver_sql(
                            f"SELECT setval(pg_get_serial_sequence('\"{name}\"', 'id'),"
                            f' coalesce((SELECT max(id) FROM "{name}"), 0) + 1, false)'
                        )
    finally:
        await engine.dispose()


def _old_events(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The schema-0002 history (its event rows), as the drill report shows them."""
    tz = UTC
    out = []
    for e in sorted(rows["event"], key=lambda e: (e["at"], e["id"])):
        t = datetime.fromisoformat(e["at"]).replace(tzinfo=UTC)
        item = {
            "at": t.astimezone(tz).isoformat(),
            "type": e["type"],
            "warning": e["warning_key"],
            "contact_id": e["contact_id"],
            "division": e["division"],
            "level": e["level"],
        }
        item.update(json.loads(e["data"]))
        out.append(item)
    return out


async def test_a_0002_store_at_work_is_upgraded_and_carried_on(
    store_url: str, tmp_path: Path
) -> None:
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    rows: dict[str, list[dict[str, Any]]] = fixture["rows"]
    await load_0002(store_url, rows)
    with pytest.raises(StoreError, match=r"0002 is older than this warnd"):
        await Store.open(store_url)
    store = await Store.open(store_url, migrate=True)
    try:
        assert await store.revision() == schema.HEAD
        # -- every row kept, under its id ------------------------------------------------
        for name in TABLES:
            key = "id"
            ids = [r[0] for r in await store.fetch(f'SELECT {key} FROM "{name}" ORDER BY {key}')]
            assert ids == sorted(r[key] for r in rows[name]), name
        # -- the history reads as before ------------------------------------------------
        kept = await history.events(store, UTC)
        assert canonical({"events": kept, "summary": {}}) == canonical(
            {"events": _old_events(rows), "summary": {}}
        )
        # -- calls keep the reply code and link of their latest attempt; nothing is claimed
        latest: dict[int, dict[str, Any]] = {}
        for o in rows["outbox"]:
            if o["call_id"] is not None and o["attempt"] >= latest.get(o["call_id"], {}).get(
                "attempt", 0
            ):
                latest[o["call_id"]] = o
        for cid, code, token, last in await store.fetch(
            'SELECT id, reply_code, token, last_message FROM "call"'
        ):
            o = latest[cid]
            assert (code, token, last) == (o["reply_code"], o["token"], o["id"])
        states = Counter(r[0] for r in await store.fetch("SELECT state FROM outbox"))
        assert "sending" not in states and states["pending"] == sum(
            r["state"] in ("pending", "sending") for r in rows["outbox"]
        )
        open_before = {r["id"] for r in rows["outbox"] if r["state"] in ("pending", "sending")}
        assert open_before and any(r["state"] == "sending" for r in rows["outbox"])

        # -- the engine carries the warning on, as the old code did ------------------------
        write_contacts(tmp_path / "contacts", county_rows(townships=2, villages=2))
        d, problems = directory.load(tmp_path / "contacts")
        assert not problems
        clock = ManualClock(T0)
        engine = Engine(Context(store=store, directory=d, policy=Policy.default(), clock=clock))
        taken: Counter[str] = Counter()
        for minutes, action in CONTINUATION:
            clock.set(at(minutes))
            if action == "tick":
                await engine.tick()
                claimed = await engine.claim(limit=100_000)
                taken.update(m.id for m in claimed)
                await engine.record([m.sent("gateway", "voice") for m in claimed])
                continue
            kind, contact = action.split()
            mid, number, code = (
                await store.fetch(
                    'SELECT o.id, o."to", c.reply_code FROM outbox o JOIN "call" c'
                    " ON c.id = o.call_id WHERE o.contact_id = :c AND o.state = 'sent'"
                    " ORDER BY o.at DESC, o.seq DESC LIMIT 1",
                    {"c": contact},
                )
            )[0]
            result = await (
                engine.ack_ivr(mid, "1") if kind == "ivr" else engine.ack_reply(number, code)
            )
            assert result.ok, (action, result)
        # nothing queued at the upgrade was lost or taken twice
        assert max(taken.values()) == 1
        outcome = dict(await store.fetch("SELECT id, state FROM outbox"))
        assert all(outcome[i] in ("sent", "cancelled") for i in open_before)
        assert not [i for i, s in outcome.items() if s in ("pending", "sending")]
        final = await history.events(store, UTC)
    finally:
        await store.close()
    expected = [{**e, "at": _utc(e["at"])} for e in fixture["history"]]
    assert canonical({"events": final, "summary": {}}) == canonical(
        {"events": expected, "summary": {}}
    )


def _utc(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(UTC).isoformat()
