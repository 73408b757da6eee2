"""The engine on a real SQLite file: restarts, acknowledgement paths, outbox leases, texts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_rig import T0, Rig, ingest
from factory import cap_xml
from sqlalchemy import select

from warnd.cli import main
from warnd.config.policy import Policy
from warnd.core.errors import StoreError
from warnd.edges.feeds import FeedItem
from warnd.edges.feeds import Outcome as Ingested
from warnd.store import Store
from warnd.store.tables import Ack, Call, Division, Message, Outbox, WarningRow

W = timedelta(minutes=5)
ID = "43312241600000_20250614080000"


@pytest.fixture
async def rig(tmp_path: Path, store_url: str) -> AsyncIterator[Rig]:
    """An engine over a real store: SQLite, and PostgreSQL when the test server is there."""
    r = Rig(tmp_path, store_url)
    await r.open()
    yield r
    if r.store is not None:
        await r.store.close()


async def test_same_message_is_stored_once(rig: Rig) -> None:
    assert rig.engine is not None
    data = cap_xml(ID, T0, onset=T0 + timedelta(hours=8))
    assert await ingest(rig.engine, data) == Ingested.ACCEPTED
    assert await ingest(rig.engine, data) == Ingested.DUPLICATE
    assert await rig.count(Message) == 1 and await rig.count(WarningRow) == 1
    async with rig.engine.ctx.store.read() as s:
        raw = (await s.execute(select(Message.raw))).scalar_one()
    assert raw == data  # kept verbatim


async def test_bad_message_is_rejected_and_changes_nothing(rig: Rig) -> None:
    assert rig.engine is not None
    result = await rig.engine.ingest(FeedItem(b"<alert>broken", "feed:x.xml"))
    assert result.outcome == Ingested.REJECTED and "x.xml" in (result.reason or "")
    assert await rig.count(Message) == 0


async def test_restart_resumes_exactly_where_it_stopped(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))  # no onset: every stage fires now
    await engine.tick()
    first = await rig.send_all()
    assert len(first) == 3  # county, township, village A persons
    await rig.close()  # "crash": nothing in memory survives
    rig.clock.advance(W)
    engine = await rig.open()
    await engine.tick()
    second = await rig.send_all()
    assert sorted((m.contact, m.attempt) for m in second) == sorted((m.contact, 2) for m in first)
    await engine.tick()  # nothing more is due: no duplicate attempt
    assert await rig.send_all() == []


async def test_taken_messages_are_held_until_their_outcome_or_the_process_ends(
    rig: Rig,
) -> None:
    """What a sender took is not handed out again while it is held; a process that dies holds
    nothing any more: on SQLite the next daemon takes it at once (one daemon per store file),
    on PostgreSQL the first heartbeat of a live instance queues it again (its claimer is not
    a live instance)."""
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))
    await engine.tick()
    claimed = await engine.claim()
    assert len(claimed) == 3
    assert await engine.claim() == []  # held: nobody else takes them
    await engine.record([claimed[0].sent("test")])  # one finished, two still held
    assert await engine.claim() == []
    await rig.close()  # the process dies with two messages in flight
    engine = await rig.open(daemon=True, heartbeat_s=0.5)
    again = await engine.claim()  # at once: no lease to wait for, no clock moved
    assert sorted(m.id for m in again) == sorted(m.id for m in claimed[1:])
    assert {m.tries for m in again} == {0}  # no outcome was recorded for them


async def test_one_daemon_per_sqlite_store(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.open(daemon=True)
    try:
        with pytest.raises(StoreError, match="another warnd serve is running"):
            await Store.open(rig.url, daemon=True)
        other = await Store.open(rig.url)  # a command (warnd ack, status) is not a daemon
        await other.close()
    finally:
        await rig.close()
    await rig.open(daemon=True)  # the lock went with the first daemon
    await rig.close()


async def test_ivr_only_digit_one_acknowledges(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))
    await engine.tick()
    msgs = await rig.send_all()
    village = next(m for m in msgs if m.contact.endswith("200-a"))
    assert not (await engine.ack_ivr(village.id, "2")).ok
    assert await rig.count(Ack) == 0
    res = await engine.ack_ivr(village.id, "1")
    assert res.ok and res.contact_id == village.contact
    again = await engine.ack_ivr(village.id, "1")
    assert again.ok and again.duplicate and await rig.count(Ack) == 1
    async with engine.ctx.store.read() as s:
        call = await s.get(Call, village.call_id)
        div = await s.get(Division, call.division_id if call else 0)
    assert call is not None and call.state == "acked" and call.ack_source == "ivr"
    assert div is not None and div.reached_by == village.contact


async def test_sms_reply_by_code_by_bare_one_and_from_unknown_number(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))
    await engine.tick()
    msgs = await rig.send_all()
    county, town = msgs[0], msgs[1]
    unknown = await engine.ack_reply("+8613999999999", "1")
    assert not unknown.ok and await rig.count(Ack) == 0
    assert (await engine.ack_reply(county.to, f"收到 {county.reply_code}")).ok
    assert (await engine.ack_reply(town.to, "1")).ok
    assert await rig.count(Ack) == 2
    assert not (await engine.ack_reply(town.to, "hello")).ok


async def test_link_token_acknowledges_only_its_own_call(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))
    await engine.tick()
    msgs = await rig.send_all()
    target = msgs[0]
    assert target.token and len(target.token) >= 22  # >= 128 bits, URL-safe
    assert await engine.describe_token(target.token) == target.text
    res = await engine.ack_token(target.token)
    assert res.ok and res.contact_id == target.contact
    assert not (await engine.ack_token("not-a-token")).ok
    async with engine.ctx.store.read() as s:
        acked = (await s.execute(select(Call.contact_id).where(Call.state == "acked"))).all()
    assert [a[0] for a in acked] == [target.contact]


async def test_answered_call_gets_no_further_attempt(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))
    await engine.tick()
    msgs = await rig.send_all()
    await engine.ack_ivr(msgs[0].id, "1")
    rig.clock.advance(W)
    await engine.tick()
    redials = await rig.send_all()
    assert msgs[0].contact not in {m.contact for m in redials}
    assert len(redials) == 2


async def test_pending_attempt_of_answered_call_is_not_sent(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))
    await engine.tick()
    msgs = await rig.send_all()
    rig.clock.advance(W)
    await engine.tick()  # attempt 2 queued for everyone ...
    await engine.ack_ivr(msgs[0].id, "1")  # ... then the first person answers attempt 1
    second = await engine.claim()
    assert msgs[0].contact not in {m.contact for m in second}
    assert await rig.count(Outbox, state="cancelled") == 1


async def test_drill_texts_are_marked_and_superior_names_the_place(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0, status="Exercise"))
    await engine.tick()
    for _ in range(6):  # village A (3 attempts) fails, then its B fails: superior
        await rig.send_all()
        rig.clock.advance(W)
        await engine.tick()
    msgs = await rig.send_all()
    assert msgs and all(m.text.startswith("【演练】") for m in msgs)
    superior = [m for m in msgs if m.rung == "superior" and m.contact == "c-433122100-a"]
    assert superior and "村0-0" in superior[0].text and "未应答" in superior[0].text


async def test_officer_ack_resolves_not_woken_entry(rig: Rig, tmp_path: Path) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(ID, T0))
    await engine.tick()
    for _ in range(12):  # nobody answers: every ladder runs to the duty office
        await rig.send_all()
        rig.clock.advance(W)
        await engine.tick()
    async with engine.ctx.store.read() as s:
        unreached = (
            (await s.execute(select(Division).where(Division.unreached_at.is_not(None))))
            .scalars()
            .all()
        )  # type: ignore[union-attr]
    assert {d.code for d in unreached} >= {"433122100200"}
    res = await engine.ack_by_officer(
        warning=ID[:10], contact_id=None, division="433122100200", by="值班员张三", note="电话叫醒"
    )
    assert res.ok
    async with engine.ctx.store.read() as s:
        d = (await s.execute(select(Division).where(Division.code == "433122100200"))).scalar_one()
        ack = (await s.execute(select(Ack).where(Ack.source == "officer"))).scalar_one()
    assert d.reached_at is not None and d.resolved_by == "值班员张三"
    assert ack.by == "值班员张三" and ack.note == "电话叫醒"


def test_cli_ack_records_officer_answer(tmp_path: Path) -> None:
    import asyncio

    rig = Rig(tmp_path)

    async def setup() -> None:
        engine = await rig.open()
        await ingest(engine, cap_xml(ID, T0))
        await engine.tick()
        await rig.send_all()
        await rig.close()

    asyncio.run(setup())
    (tmp_path / "warnd.toml").write_text(
        f'[store]\nurl = "{rig.url}"\n[contacts]\npath = "{tmp_path / "contacts"}"\n',
        encoding="utf-8",
    )
    args = [
        "ack",
        ID,
        "--contact",
        "c-433122-a",
        "--by",
        "李四",
        "--note",
        "电话联系",
        "--json",
        "--config",
        str(tmp_path / "warnd.toml"),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert '"ok": true' in res.output
    bad = CliRunner().invoke(
        main,
        ["ack", "nope", "--contact", "x", "--by", "李四", "--config", str(tmp_path / "warnd.toml")],
    )
    assert bad.exit_code == 1 and "未记录" in bad.output


def test_policy_is_respected(tmp_path: Path) -> None:
    # guard: the default policy the rig uses is the 631 one (documented assumption of this file)
    p = Policy.default()
    assert [s.level for s in p.stages] == ["county", "township", "village"]
    assert replace(p.ack).attempts == 3 and p.ack.window == W
