"""Bundling in the engine (contracts §8), on both backends: one message carries a person's
attempts on several warnings, and one answer to it (IVR key, SMS reply, link) acknowledges
every call it carried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_rig import T0, Rig, ingest
from factory import cap_xml
from sqlalchemy import select

from warnd.config.policy import AckPolicy, Policy
from warnd.engine import Attempt, Engine
from warnd.store.tables import Call, Division, Outbox

M = timedelta(minutes=1)
W1, W2 = "43312241600000_20250614080000", "43312241600000_20250614080001"
VILLAGE_A = "c-433122100200-a"


def bundled(span: timedelta = 2 * M) -> Policy:
    p = Policy.default()
    return replace(p, ack=AckPolicy(p.ack.window, p.ack.attempts, span))


@pytest.fixture
async def rig(tmp_path: Path, store_url: str) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, store_url)
    engine = await r.open()
    engine.ctx.policy = bundled()
    yield r
    if r.store is not None:
        await r.store.close()


async def two_warnings(engine: Engine) -> None:
    """Two warnings over the county at once (no onset: every stage fires now)."""
    await ingest(engine, cap_xml(W1, T0, headline="暴雨橙色预警"))
    await ingest(engine, cap_xml(W2, T0, headline="山洪灾害气象风险预警"))
    await engine.tick()


async def calls_of(rig: Rig, contact: str) -> list[Call]:
    assert rig.engine is not None
    async with rig.engine.ctx.store.read() as s:
        return list((await s.execute(select(Call).where(Call.contact_id == contact))).scalars())


async def outbox(rig: Rig) -> list[Outbox]:
    assert rig.engine is not None
    async with rig.engine.ctx.store.read() as s:
        return list((await s.execute(select(Outbox).order_by(Outbox.seq))).scalars())


async def sent_to(rig: Rig, contact: str) -> Attempt:
    sent = [m for m in await rig.send_all() if m.contact == contact]
    assert len(sent) == 1
    return sent[0]


async def test_one_message_per_person_naming_every_warning(rig: Rig) -> None:
    assert rig.engine is not None
    await two_warnings(rig.engine)
    sent = await rig.send_all()
    assert sorted(m.contact for m in sent) == ["c-433122-a", "c-433122100-a", VILLAGE_A]
    for m in sent:
        assert "暴雨橙色预警" in m.text and "山洪灾害气象风险预警" in m.text
        assert "一次确认全部2条" in m.text and m.reply_code and m.reply_code in m.text
        assert f"/a/{m.token}" in m.text
    rows = await outbox(rig)
    assert len(rows) == 6  # each call's attempt keeps its own row (its history record)
    assert sorted(r.state for r in rows) == ["bundled"] * 3 + ["sent"] * 3
    leads = {m.id for m in sent}
    assert {r.bundle for r in rows} == leads
    for r in rows:
        assert r.state == ("sent" if r.id in leads else "bundled")


@pytest.mark.parametrize("how", ["ivr", "sms-1", "sms-code", "link"])
async def test_one_answer_acknowledges_every_call_of_the_message(rig: Rig, how: str) -> None:
    engine = rig.engine
    assert engine is not None
    await two_warnings(engine)
    m = await sent_to(rig, VILLAGE_A)
    if how == "ivr":
        res = await engine.ack_ivr(m.id, "1")
    elif how == "sms-1":
        res = await engine.ack_reply(m.to, "1")
    elif how == "sms-code":
        res = await engine.ack_reply(m.to, f"收到{m.reply_code}")
    else:
        assert m.token is not None
        res = await engine.ack_token(m.token)
    assert res.ok and not res.duplicate
    calls = await calls_of(rig, VILLAGE_A)
    assert len(calls) == 2 and {c.state for c in calls} == {"acked"}
    assert {c.ack_source for c in calls} == {how.split("-")[0]}
    assert {c.state for c in await calls_of(rig, "c-433122-a")} == {"active"}
    again = await engine.ack_ivr(m.id, "1") if how == "ivr" else None
    if again is not None:  # a retried hook: stored once
        assert again.ok and again.duplicate
    async with engine.ctx.store.read() as s:
        reached = (await s.execute(select(Division.reached_at))).scalars().all()
    assert sum(1 for r in reached if r is not None) == 2  # the village, on each warning


async def test_bundled_attempts_redial_together_and_escalate_per_call(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await two_warnings(engine)
    await rig.send_all()
    for n in (2, 3):  # attempts 2 and 3: again one message per person
        rig.clock.advance(5 * M)
        await engine.tick()
        assert sorted(m.attempt for m in await rig.send_all()) == [n, n, n]
    rig.clock.advance(5 * M)  # every call fails: each division escalates to its backup
    await engine.tick()
    sent = await rig.send_all()
    assert sorted(m.contact for m in sent) == ["c-433122-b", "c-433122100-b", "c-433122100200-b"]
    assert all(m.rung == "backup" and "一次确认全部2条" in m.text for m in sent)


async def test_a_redial_brings_forward_another_warnings_redial_due_in_the_window(
    rig: Rig,
) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(W1, T0))
    await engine.tick()
    await rig.send_all()
    rig.clock.advance(M)
    await ingest(engine, cap_xml(W2, T0 + M))
    await engine.tick()
    assert all("合并" not in m.text for m in await rig.send_all())  # nothing else due by 3m
    rig.clock.advance(4 * M)  # 5m: W1's second attempts; W2's (due 6m) go with them
    await engine.tick()
    sent = await rig.send_all()
    assert len(sent) == 3 and all("一次确认全部2条" in m.text for m in sent)
    calls = await calls_of(rig, VILLAGE_A)
    assert {(c.attempts_made, c.next_due_at) for c in calls} == {(2, T0 + 10 * M)}
    rig.clock.advance(M)  # 6m: W2's own time has nothing left to send
    await engine.tick()
    assert await rig.send_all() == []


async def test_a_stage_due_in_the_window_calls_the_person_now_and_the_rest_later(
    rig: Rig,
) -> None:
    engine = rig.engine
    assert engine is not None
    await ingest(engine, cap_xml(W1, T0))
    # W2: its village stage is due at 1m (onset 1h1m)
    await ingest(engine, cap_xml(W2, T0, onset=T0 + timedelta(hours=1) + M))
    await engine.tick()
    sent = await rig.send_all()
    assert len(sent) == 3 and all("一次确认全部2条" in m.text for m in sent)
    rig.clock.advance(M)
    report = await engine.tick()
    assert report.stages_fired == 1
    assert await rig.send_all() == []  # the village's only A person was called already
    calls = await calls_of(rig, VILLAGE_A)
    assert sorted((c.attempts_made, c.start_at) for c in calls) == [(1, T0), (1, T0)]
    rig.clock.advance(4 * M)  # 5m: both calls' second attempts, together
    await engine.tick()
    village = [m for m in await rig.send_all() if m.contact == VILLAGE_A]
    assert len(village) == 1 and village[0].attempt == 2


async def test_a_cancel_while_a_bundle_is_queued(rig: Rig) -> None:
    """The message already made goes out (it carries the other warning's call too); the lift
    notice follows; the cancelled warning's calls stop and the other's go on alone."""
    engine = rig.engine
    assert engine is not None
    await two_warnings(engine)
    await ingest(
        engine,
        cap_xml(
            W2 + "c",
            T0,
            msg_type="Cancel",
            references=[("433122_Meteorological_Observatory", W2, T0)],
        ),
    )
    sent = await rig.send_all()
    assert sorted(m.purpose for m in sent) == ["call"] * 3 + ["lift"] * 3
    rig.clock.advance(5 * M)
    await engine.tick()
    redials = await rig.send_all()
    assert len(redials) == 3 and all("合并" not in m.text for m in redials)
    assert {m.warning for m in redials} == {W1}


async def test_bundle_off_sends_each_call_on_its_own(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    engine.ctx.policy = Policy.default()
    await two_warnings(engine)
    sent = await rig.send_all()
    assert len(sent) == 6 and all("合并" not in m.text for m in sent)
    assert {r.bundle for r in await outbox(rig)} == {None}
    res = await engine.ack_ivr(sent[0].id, "1")
    assert res.ok
    assert sorted(c.state for c in await calls_of(rig, sent[0].contact)) == ["acked", "active"]


async def test_status_marks_the_bundled_attempts(rig: Rig) -> None:
    """``warnd status <warning>``: a person whose last attempt went out in one message with
    other warnings' is marked 合并 (JSON ``bundled``)."""
    import asyncio
    import json

    from click.testing import CliRunner

    from warnd.cli import main

    def cli(*args: str) -> object:  # the command runs its own event loop
        return asyncio.to_thread(CliRunner().invoke, main, list(args))

    engine = rig.engine
    assert engine is not None
    await two_warnings(engine)
    await rig.send_all()
    cfg = rig.tmp / "warnd.toml"
    cfg.write_text(
        f'[store]\nurl = "{rig.url}"\n[contacts]\npath = "{rig.tmp / "contacts"}"\n'
        '[ack]\nbundle = "2m"\n',
        encoding="utf-8",
    )
    clock = rig.tmp / "clock"
    clock.write_text((T0 + M).isoformat(), encoding="utf-8")
    await rig.close()
    rig.store = None
    args = ["status", W2, "--config", str(cfg), "--clock-file", str(clock)]
    res: Any = await cli(*args, "--json")
    assert res.exit_code == 0, res.output
    people = [p for d in json.loads(res.output)["divisions"] for p in d["persons"]]
    assert people and all(p["bundled"] for p in people)
    term: Any = await cli(*args)
    assert term.exit_code == 0 and "合并" in term.output


async def test_lift_notices_due_together_go_as_one_message_and_calls_apart(rig: Rig) -> None:
    engine = rig.engine
    assert engine is not None
    await two_warnings(engine)
    await rig.send_all()
    sender = "433122_Meteorological_Observatory"
    for w in (W1, W2):
        await ingest(engine, cap_xml(w + "c", T0, msg_type="Cancel", references=[(sender, w, T0)]))
    sent = await rig.send_all()
    assert sorted(m.contact for m in sent) == ["c-433122-a", "c-433122100-a", VILLAGE_A]
    assert all(m.purpose == "lift" and "预警通知·合并2条" in m.text for m in sent)
    lifts = [r for r in await outbox(rig) if r.purpose == "lift"]
    assert sorted(r.state for r in lifts) == ["bundled"] * 3 + ["sent"] * 3
    leads = {m.id: m.text for m in sent}
    for r in lifts:  # the lead's row keeps the joined text: a retry sends the same
        assert r.bundle in leads and (r.id not in leads or r.text == leads[r.id])


async def test_divisions_started_in_other_batches_start_with_the_persons_first_call(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A province's stage starts in batches: a person's division of the other warning, queued
    for a later batch, starts with the batch that calls that person (one message)."""
    from warnd.engine import calls

    monkeypatch.setattr(calls, "START_BATCH", 1)
    engine = rig.engine
    assert engine is not None
    await two_warnings(engine)
    sent = await rig.send_all()
    assert sorted(m.contact for m in sent) == ["c-433122-a", "c-433122100-a", VILLAGE_A]
    assert all("一次确认全部2条" in m.text for m in sent)
    async with engine.ctx.store.read() as s:
        queued = (await s.execute(select(Division.start_due))).scalars().all()
    assert queued == [None] * 6  # every division started once


async def test_escalations_from_calls_in_other_batches_go_to_the_backup_together(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due calls are stepped in batches; with bundling one person's calls due together share a
    batch, so that their divisions escalate together: one message to the backup."""
    from warnd.engine import calls

    engine = rig.engine
    assert engine is not None
    await two_warnings(engine)
    await rig.send_all()
    monkeypatch.setattr(calls, "BATCH", 2)
    for _ in range(3):
        rig.clock.advance(5 * M)
        await engine.tick()
        sent = await rig.send_all()
    assert sorted(m.contact for m in sent) == ["c-433122-b", "c-433122100-b", "c-433122100200-b"]
    assert all("一次确认全部2条" in m.text for m in sent)
