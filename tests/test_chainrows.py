"""The SQLite fast path of the engine's bulk statements writes exactly what the portable one does.

``warnd.store.chainrows`` issues its bulk statements through SQLAlchemy Core on every backend
and, on SQLite, as driver-level executemany over pre-processed tuples. Both must leave the same
bytes in the store and read back the same values through the ORM.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from directory_gen import generate
from factory import cap_xml
from sqlalchemy import select

from warnd import directory
from warnd.clock import ManualClock
from warnd.engine import Context, Engine, context
from warnd.engine.outbox import Outcome
from warnd.feeds import FeedItem
from warnd.policy import Policy
from warnd.store import Store, bulk, chainrows
from warnd.store.tables import Call, Division, Event, Outbox, WarningRow

T0 = datetime(2025, 6, 14, 0, 0, tzinfo=UTC)
CST = timezone(timedelta(hours=8))
W = timedelta(minutes=5)
SENDER = "433100_Meteorological_Observatory"
TABLES = ("warning", "message", "stage", "division", "call", "outbox", "ack", "event")


@pytest.fixture
def portable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Force the portable Core statements on SQLite."""
    monkeypatch.setattr(bulk, "_BY_DIALECT", {})
    yield


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        con.close()


async def _write_rows(url: str) -> None:
    """Every bulk statement once, with awkward values: other offsets, None, JSON, booleans."""
    store = await Store.open(url)
    try:
        async with store.write() as s:
            w = WarningRow(
                key="k", sender="s", identifier="i", arrived_at=T0, updated_at=T0, area=["433122"]
            )
            s.add(w)
            await s.flush()
            assert w.id is not None
            ids = await chainrows.insert_divisions(
                s,
                [
                    {
                        "warning_id": w.id,
                        "code": code,
                        "name": f"村{code}",
                        "level": "village",
                        "county": code[:6],
                        "round": 0,
                        "rung": "stage",
                        "rung_started_at": None if code.endswith("1") else T0.astimezone(CST),
                        "reached_at": None,
                        "reached_by": None,
                        "reached_source": None,
                        "unreached_at": None,
                        "resolved_at": None,
                        "resolved_by": None,
                        "resolved_note": None,
                        "stopped": code.endswith("2"),
                    }
                    for code in ("433122101201", "433122101202", "433122101203")
                ],
            )
            assert sorted(ids.values()) == [1, 2, 3]
            loaded = await chainrows.load_many(s, ids.values())
            changes = []
            for row, calls in loaded.values():
                state = chainrows.to_state(row, calls)
                from warnd.chain import ladder

                rules = ladder.Rules(W, 2, ("backup",))

                class People:
                    def for_rung(self, code: str, rung: str) -> tuple[str, ...]:
                        return (f"{code}-{rung}-1", f"{code}-{rung}-2")

                now = T0 + timedelta(microseconds=7)
                state, _ = ladder.step(state, ladder.Start(), now, rules, People())
                changes.append(
                    (row, calls, state, {c.contact_id: "+8613800000000" for c in state.calls})
                )
            saved = await chainrows.save_many(s, changes)
            assert len(saved) == 4  # the stopped division starts nothing
            row = next(iter(loaded.values()))[0]
            await chainrows.insert_outbox(
                s,
                [
                    (
                        f"m{i}",  # fixed ids: both paths must store the same rows
                        *context.outbox_row(
                            w,
                            contact_id=f"c{i}",
                            to="+8613800000000",
                            purpose="call",
                            text="【预警叫应】测试",
                            now=T0 + timedelta(seconds=i),
                            call_id=1,
                            attempt=1,
                            rung="stage",
                            reply_code="1234",
                            token=None,
                        )[1:],
                    )
                    for i in range(3)
                ],
            )
            await chainrows.insert_events(
                s,
                [
                    context.event_row(
                        w, T0, "notify", contact_id="c", division=row.code, level="village",
                        data={"attempt": 1, "rung": "stage", "名": "值"},
                    ),
                    context.event_row(
                        w, T0.astimezone(CST), "escalate", contact_id=None, division=None,
                        level=None, data={},
                    ),
                ],
            )  # fmt: skip
        # second transaction: updates over loaded rows (call state, division fields)
        async with store.write() as s:
            loaded = await chainrows.load_many(s, [1, 2, 3])
            changes = []
            for row, calls in loaded.values():
                state = chainrows.to_state(row, calls)
                state = state.__class__(
                    state.code, state.level, state.round, "backup", T0 + W, T0 + W, "x",
                    "ivr", None, True,
                    tuple(
                        c.__class__(
                            c.key, c.contact_id, c.rung, c.round, c.start_at, 2, None,
                            "acked", T0 + W, T0 + W, "ivr",
                        )
                        for c in state.calls
                    ),
                )  # fmt: skip
                changes.append((row, calls, state, {}))
            await chainrows.save_many(s, changes)
    finally:
        await store.close()


async def test_fast_and_portable_rows_are_identical(tmp_path: Path) -> None:
    fast, slow = tmp_path / "fast.db", tmp_path / "slow.db"
    await _write_rows(f"sqlite:///{fast}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bulk, "_BY_DIALECT", {})
        await _write_rows(f"sqlite:///{slow}")
    a, b = dump(fast), dump(slow)
    assert a["division"] and a["call"] and a["outbox"] and a["event"]
    assert a == b
    # and read back through the ORM: aware UTC datetimes, booleans, JSON
    store = await Store.open(f"sqlite:///{fast}")
    try:
        async with store.read() as s:
            divs = (await s.execute(select(Division).order_by(Division.id))).scalars().all()  # type: ignore[arg-type]
            calls = (await s.execute(select(Call).order_by(Call.id))).scalars().all()  # type: ignore[arg-type]
            msgs = (await s.execute(select(Outbox).order_by(Outbox.id))).scalars().all()  # type: ignore[arg-type]
            events = (await s.execute(select(Event).order_by(Event.id))).scalars().all()  # type: ignore[arg-type]
    finally:
        await store.close()
    assert [d.stopped for d in divs] == [True, True, True]
    assert divs[0].rung_started_at == T0 + W and divs[0].rung_started_at.tzinfo is UTC
    assert {c.start_at for c in calls} == {T0 + timedelta(microseconds=7)}
    assert all(c.acked_at == T0 + W and c.state == "acked" for c in calls)
    assert [m.due_at for m in msgs] == [T0 + timedelta(seconds=i) for i in range(3)]
    assert all(m.drill is False and m.lease_until is None for m in msgs)
    assert events[0].data == {"attempt": 1, "rung": "stage", "名": "值"}
    assert events[1].at == T0 and events[1].data == {}


class _Deterministic:
    """Message ids, reply codes and link tokens from counters, so that two runs compare."""

    def __init__(self) -> None:
        self.n = count()

    def patch(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(context, "new_message_id", lambda: f"m{next(self.n):06d}")
        mp.setattr(context, "new_reply_code", lambda: f"{1000 + next(self.n) % 9000}")
        mp.setattr(context, "new_link_token", lambda: f"t{next(self.n):08d}")


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
    county = next(iter(sorted({c[:6] for c in _codes(d)})))

    async def send(fail_every: int = 0) -> list[Any]:
        claimed = await engine.claim(limit=100_000)
        await engine.mark(
            [
                Outcome(m.id, True, "gw/voice")
                if not fail_every or i % fail_every
                else Outcome(m.id, False, None, "HTTP 400", permanent=i % 2 == 0)
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


def _codes(d: directory.Directory) -> list[str]:
    return [c.division_code for c in d.contacts()]


async def test_whole_chain_stores_the_same_on_both_paths(tmp_path: Path) -> None:
    fast, slow = tmp_path / "fast.db", tmp_path / "slow.db"
    with pytest.MonkeyPatch.context() as mp:
        _Deterministic().patch(mp)
        await _chain(tmp_path, f"sqlite:///{fast}")
    with pytest.MonkeyPatch.context() as mp:
        _Deterministic().patch(mp)
        mp.setattr(bulk, "_BY_DIALECT", {})
        await _chain(tmp_path, f"sqlite:///{slow}")
    a, b = dump(fast), dump(slow)
    for table in TABLES:
        assert a[table] == b[table], table
    con = sqlite3.connect(fast)
    try:  # the run went through every path worth comparing
        events = {t for (t,) in con.execute("SELECT DISTINCT type FROM event")}
        rungs = {r for (r,) in con.execute("SELECT DISTINCT rung FROM call")}
        states = {s for (s,) in con.execute("SELECT DISTINCT state FROM outbox")}
        rounds = {r for (r,) in con.execute("SELECT DISTINCT round FROM call")}
        (stale,) = con.execute("SELECT count(*) FROM outbox WHERE error = 'call no longer open'")
    finally:
        con.close()
    assert {"notify", "ack", "escalate", "unreached", "update", "cancel"} <= events
    assert rungs == {"stage", "backup", "superior", "duty"}
    assert {"sent", "failed", "cancelled"} <= states and rounds == {1, 2} and stale[0] > 0


def test_row_builders_follow_the_store_column_layouts() -> None:
    """outbox_row / event_row make tuples; the store reads them by OUTBOX_COLS / EVENT_COLS."""
    w = WarningRow(id=7, key="k", sender="s", identifier="k", drill=True)
    o = dict(
        zip(
            chainrows.OUTBOX_COLS,
            context.outbox_row(
                w, contact_id="c1", to="+8613800000000", purpose="call", text="文本", now=T0,
                call_id=3, attempt=2, rung="backup", reply_code="4321", token="tok",
            ),
            strict=True,
        )
    )  # fmt: skip
    assert len(o["id"]) == 32 and o["id"][12] == "7"  # a UUIDv7 in hex
    assert {k: v for k, v in o.items() if k != "id"} == {
        "warning_id": 7, "call_id": 3, "contact_id": "c1", "to": "+8613800000000",
        "purpose": "call", "attempt": 2, "rung": "backup", "text": "文本", "due_at": T0,
        "state": "pending", "tries": 0, "reply_code": "4321", "token": "tok", "drill": True,
    }  # fmt: skip
    e = dict(
        zip(
            chainrows.EVENT_COLS,
            context.event_row(w, T0, "notify", contact_id="c1", division="430", level="county",
                              data={"attempt": 1}),
            strict=True,
        )
    )  # fmt: skip
    assert e == {
        "warning_id": 7, "at": T0, "type": "notify", "warning_key": "k", "contact_id": "c1",
        "division": "430", "level": "county", "data": {"attempt": 1},
    }  # fmt: skip
