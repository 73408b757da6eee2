"""Both backends store the same chain, row for row; the row builders follow the store's layouts.

A county's whole chain (stages, answers by IVR and SMS, redials, failed sends, every rung of
the ladder, a severity rise, a cancel) runs on SQLite and on PostgreSQL with the same inputs and
deterministic ids; every table is then read back (timestamps as aware datetimes, booleans, JSON
values, ``seq`` as its rank) and compared. The two backends share the engine and the
operations' SQL but not their bulk statements (executemany vs COPY / ``unnest``), their id and
``seq`` allocation, nor their value binding. (Only ``outbox.claimed_by`` differs by design:
PostgreSQL records which instance took a message, SQLite has one daemon.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_URL, drop_pg_database, fresh_pg_database
from directory_gen import generate
from factory import cap_xml

from warnd.config.policy import Policy
from warnd.core import directory
from warnd.core.clock import ManualClock
from warnd.edges.feeds import FeedItem
from warnd.engine import Context, Engine, ingest, records
from warnd.store import Store
from warnd.store.records import EVENT_INSERT, OUTBOX_INSERT, WarningRec
from warnd.store.sqlite import read_ts
from warnd.store.tx import Tx

T0 = datetime(2025, 6, 14, 0, 0, tzinfo=UTC)
W = timedelta(minutes=5)
SENDER = "433100_Meteorological_Observatory"
TABLES = ("warning", "message", "stage", "division", "call", "outbox", "ack", "event", "receipt")
KEYS = {"counter": "name", "instance": "id"}


class _Deterministic:
    """Message ids, reply codes and link tokens from counters, so that two runs compare."""

    def __init__(self) -> None:
        self.n = count()

    def patch(self, mp: pytest.MonkeyPatch) -> None:
        ids = lambda: f"m{next(self.n):06d}"  # noqa: E731
        mp.setattr(records, "new_message_id", ids)
        mp.setattr(ingest, "new_message_id", ids)
        mp.setattr(records, "new_reply_code", lambda _taken=(): f"{1000 + next(self.n) % 9000}")
        mp.setattr(records, "new_link_token", lambda: f"t{next(self.n):08d}")


async def _chain(tmp: Path, url: str) -> None:
    """A county's whole chain: stages, acks, redials, the ladder, a severity rise, a cancel."""
    contacts = tmp / "contacts"
    if not contacts.exists():
        generate(contacts, 1, 3, 3, 3, seed=11)  # villages: 2 A persons and 1 B each
    d, problems = directory.load(contacts)
    assert not problems
    clock = ManualClock(T0)
    store = await Store.open(url)
    engine = Engine(
        Context(
            store=store,
            directory=d,
            policy=Policy.default(),
            clock=clock,
            public_url="http://127.0.0.1:8620",
            instance="test",
        )
    )
    county = sorted({c.division_code[:6] for c in d.contacts()})[0]

    async def send(fail_every: int = 0) -> list[Any]:
        claimed = await engine.claim(limit=100_000)
        await engine.record(
            [
                m.sent("gw", "voice")
                if not fail_every or i % fail_every
                else m.failed("HTTP 400", permanent=i % 2 == 0)
                for i, m in enumerate(claimed)
            ]
        )
        return claimed

    try:
        alert = cap_xml(
            "A1", T0, sender=SENDER, onset=T0 + timedelta(hours=2), geocodes=[county + "000000"]
        )
        await engine.ingest(FeedItem(alert, "t"))
        await engine.tick()
        first = await send()
        for m in first[::3]:
            await engine.ack_ivr(m.id, "1")
        for step in range(1, 40):
            clock.set(T0 + step * W)
            await engine.tick()
            msgs = await send(fail_every=7)
            if step == 4 and msgs:
                await engine.ack_reply(msgs[0].to, "1")
            if step == 13:  # the village stage has fired: raise the severity
                update = cap_xml(
                    "A2",
                    clock.now(),
                    sender=SENDER,
                    msg_type="Update",
                    severity="Extreme",
                    onset=T0 + timedelta(hours=2),
                    geocodes=[county + "000000"],
                    references=[(SENDER, "A1", T0)],
                )
                await engine.ingest(FeedItem(update, "t"))
            if step == 30:
                cancel = cap_xml(
                    "A3",
                    clock.now(),
                    sender=SENDER,
                    msg_type="Cancel",
                    geocodes=[county + "000000"],
                    references=[(SENDER, "A1", T0)],
                )
                await engine.ingest(FeedItem(cancel, "t"))
    finally:
        await store.close()


def _value(v: Any) -> Any:
    """One stored value, the same whichever backend stored it."""
    if isinstance(v, datetime):
        return v.astimezone(UTC)
    if isinstance(v, str) and len(v) == 26 and v[4] == "-" and v[10] == " ":
        try:
            return read_ts(v)
        except ValueError:
            return v
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)
        except ValueError:
            return v
    if isinstance(v, memoryview):
        return bytes(v)
    return v


async def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    store = await Store.open(url)
    try:
        out: dict[str, list[dict[str, Any]]] = {}
        for table in TABLES:
            names = [
                r[0]
                for r in await store.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = :t ORDER BY ordinal_position",
                    {"t": table},
                )
            ] if not store.is_sqlite else [
                r[1] for r in await store.fetch(f'PRAGMA table_info("{table}")')
            ]  # fmt: skip
            rows = await store.fetch(f'SELECT * FROM "{table}" ORDER BY id')
            out[table] = [{n: _value(v) for n, v in zip(names, r, strict=True)} for r in rows]
        ranks = sorted(
            r["seq"] for t in ("outbox", "ack", "event") for r in out[t] if r["seq"] is not None
        )
        rank = {s: i for i, s in enumerate(ranks)}
        for t in ("outbox", "ack", "event"):
            for r in out[t]:
                r["seq"] = rank.get(r["seq"])
        for r in out["division"]:
            r["stopped"] = bool(r["stopped"])
        for t in ("warning", "outbox"):
            for r in out[t]:
                r["drill"] = bool(r["drill"])
        for r in out["outbox"]:  # PostgreSQL names the instance that took it; SQLite has one
            r.pop("claimed_by")
        for r in out["ack"]:
            r["late"], r["counted"] = bool(r["late"]), bool(r["counted"])
        return out
    finally:
        await store.close()


async def test_whole_chain_through_every_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with pytest.MonkeyPatch.context() as mp:
        _Deterministic().patch(mp)
        await _chain(tmp_path, url)
    rows = await dump(url)
    assert {r["type"] for r in rows["event"]} == {"escalate", "unreached"}
    assert {r["rung"] for r in rows["call"]} == {"stage", "backup", "superior", "duty"}
    assert {"sent", "failed", "cancelled"} <= {r["state"] for r in rows["outbox"]}
    assert {r["purpose"] for r in rows["outbox"]} == {"call", "update", "lift"}
    assert {r["round"] for r in rows["call"]} == {1, 2}
    assert any(r["error"] == "call no longer open" for r in rows["outbox"])
    assert {r["source"] for r in rows["ack"]} == {"ivr", "sms"}
    # every call names its latest attempt; every history row has its place
    latest: dict[int, tuple[int, str]] = {}
    for o in rows["outbox"]:
        if o["call_id"] is not None:
            latest[o["call_id"]] = max(latest.get(o["call_id"], (0, "")), (o["attempt"], o["id"]))
    assert {c["id"]: c["last_message"] for c in rows["call"]} == {
        cid: mid for cid, (_n, mid) in latest.items()
    }
    assert all(r["seq"] is not None for t in ("outbox", "ack", "event") for r in rows[t])


@pytest.mark.skipif(PG_URL is None, reason="needs WARND_TEST_PG_URL")
async def test_whole_chain_stores_the_same_on_both_backends(tmp_path: Path) -> None:
    assert PG_URL is not None
    lite = f"sqlite:///{tmp_path / 'a.db'}"
    pg = await fresh_pg_database(PG_URL)
    try:
        with pytest.MonkeyPatch.context() as mp:
            _Deterministic().patch(mp)
            await _chain(tmp_path, lite)
        with pytest.MonkeyPatch.context() as mp:
            _Deterministic().patch(mp)
            await _chain(tmp_path, pg)
        a, b = await dump(lite), await dump(pg)
    finally:
        await drop_pg_database(PG_URL, pg)
    for table in TABLES:
        assert len(a[table]) == len(b[table]), table
        for x, y in zip(a[table], b[table], strict=True):
            assert x == y, (table, x, y)


class _Tx(Tx):
    def __init__(self) -> None:
        super().__init__()


def test_row_builders_follow_the_store_column_layouts() -> None:
    """attempt_row / event_row make tuples; the store reads them by OUTBOX_INSERT/EVENT_INSERT."""
    tx = _Tx()
    w = WarningRec(
        7, "k", "s", "k", True, "active", None, None, None, None, None, None, None, None, [], T0,
        T0, None,
    )  # fmt: skip
    o = dict(
        zip(
            OUTBOX_INSERT,
            records.attempt_row(
                tx, w, message_id="m1", contact_id="c1", to="+8613800000000", purpose="update",
                text="文本", now=T0, cause=3,
            ),
            strict=True,
        )
    )  # fmt: skip
    assert o == {
        "id": "m1", "warning_id": 7, "call_id": None, "message_id": 3, "contact_id": "c1",
        "to": "+8613800000000", "purpose": "update", "attempt": None, "rung": None,
        "text": "文本", "at": T0, "due_at": T0, "state": "pending", "tries": 0, "drill": True,
        "seq": 0,
    }  # fmt: skip
    e = dict(
        zip(
            EVENT_INSERT,
            records.event_row(tx, w, T0, "escalate", division="430", level="county",
                              data={"rung": "backup"}),
            strict=True,
        )
    )  # fmt: skip
    assert e == {
        "warning_id": 7, "at": T0, "type": "escalate", "contact_id": None, "division": "430",
        "level": "county", "data": {"rung": "backup"}, "seq": 1,
    }  # fmt: skip
