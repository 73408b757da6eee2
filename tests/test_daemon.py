"""``Daemon`` end to end: feed folder → engine → real HTTP gateway; real hooks → store.

One in-process daemon per test (no scheduler, a ManualClock, a real SQLite file, its real
aiohttp listener on a free port) and a real aiohttp gateway fake (tests/gateway_fake.py)
configured as a ``webhook`` channel. Time moves only when a test advances the clock and calls
``wake()``; nothing sleeps for a timer. See docs/testing.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from daemon_rig import COUNTY_A, ID, T0, H, Harness, M, S, assert_wire_contract, calls_of, run_chain
from factory import cap_xml, county_rows, write_contacts

from warnd.core.errors import ConfigError
from warnd.edges.channels.delivery import Backoff
from warnd.edges.daemon import Daemon
from warnd.edges.feeds import FeedItem, Outcome
from warnd.store.tables import Ack, Call, Outbox


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


# ---- the whole chain ----------------------------------------------------------------------


async def test_631_chain_end_to_end(tmp_path: Path) -> None:
    rows = [r for r in county_rows(townships=2, villages=2) if r[0] != "c-433122101201-b"]
    h = Harness(tmp_path, rows)  # village 101201 has no backup: that rung is skipped at once
    await h.start()
    try:
        await run_chain(h)
    finally:
        await h.stop()


# ---- authentication of the hooks ----------------------------------------------------------


async def test_hooks_refuse_unsigned_bad_stale_and_replayed_requests(h: Harness) -> None:
    await h.feed(cap_xml(ID, T0, onset=T0 + 6 * H))  # county stage fires at arrival
    (sent,) = await h.joined(h.gateway.receipts)
    ivr = {"id": sent.row.id, "digits": "1"}
    now = int(h.clock.now().timestamp())
    before = await h.snapshot()
    raw, good = h.signed(ivr)

    refused: dict[str, tuple[bytes, dict[str, str]]] = {
        "unsigned": (raw, {"Content-Type": "application/json"}),
        "no timestamp": (raw, {"X-Warnd-Signature": good["X-Warnd-Signature"]}),
        "wrong secret": h.signed(ivr, secret=b"not-the-secret"),
        "not hex": (raw, {**good, "X-Warnd-Signature": "sha256=xyz"}),
        "body changed": (raw.replace(b'"1"', b'"1" '), good),
        "stale (5 min + 1 s)": h.signed(ivr, ts=now - 301),
        "from the future": h.signed(ivr, ts=now + 3600),
    }
    for what, (body, headers) in refused.items():
        status, _ = await h.post("/hooks/ivr", body, headers)
        assert status == 401, what
        assert await h.snapshot() == before, what
    # the same for SMS replies: a forged "1" from the person's own number changes nothing
    forged = h.signed({"from": sent.receipt.body["to"], "text": "1"}, secret=b"forged")
    assert (await h.post("/hooks/reply", *forged))[0] == 401
    assert await h.snapshot() == before

    # an SMS reply from a number nobody called: accepted as a request, changes nothing
    status, answer = await h.hook("/hooks/reply", {"from": "+8613999999999", "text": "1"})
    assert status == 200 and answer["ok"] is False
    assert await h.snapshot() == before

    # freshness is judged by the daemon's clock: signed at T0, refused 6 minutes later
    late_raw, late_headers = h.signed(ivr, ts=now)
    h.clock.advance(6 * M)
    assert (await h.post("/hooks/ivr", late_raw, late_headers))[0] == 401
    assert await h.snapshot() == before
    # a request signed 4 minutes ago is still fresh...
    raw4, headers4 = h.signed(ivr, ts=now + 2 * 60)
    status, answer = await h.post("/hooks/ivr", raw4, headers4)
    assert status == 200 and answer["ok"] is True
    after = await h.snapshot()
    assert after != before and len(after[0]) == 1
    # ...but the very same request again is a replay: refused, not counted twice
    assert (await h.post("/hooks/ivr", raw4, headers4))[0] == 401
    # a platform retrying the hook signs afresh: accepted as a duplicate, nothing new stored
    status, answer = await h.hook("/hooks/ivr", ivr)
    assert status == 200 and answer["duplicate"] is True
    assert await h.snapshot() == after


# ---- the gateway misbehaving ---------------------------------------------------------------


async def test_gateway_500_then_200_retries_the_same_id(h: Harness) -> None:
    h.gateway.fail_next(1, 500)
    await h.feed(cap_xml(ID, T0, onset=T0 + 6 * H))
    first, second = h.gateway.receipts
    assert first.id == second.id and (first.status, second.status) == (500, 200)
    assert first.body == second.body  # the same message, byte for byte the same text
    (row,) = await h.all(Outbox)
    assert (row.id, row.state, row.error) == (first.id, "sent", None)
    assert_wire_contract(h)


async def test_gateway_400_fails_the_attempt_and_the_ladder_goes_on(h: Harness) -> None:
    h.gateway.script(lambda b: b["contact"] == COUNTY_A, 400, 400, 400, 400)
    await h.feed(cap_xml(ID, T0, onset=T0 + 6 * H))
    assert h.gateway.receipts and all(r.status == 400 for r in h.gateway.receipts)
    (row,) = await h.all(Outbox)
    assert row.state == "failed" and "HTTP 400" in (row.error or "")
    # voice, then the SMS fallback under its own id
    assert sorted((r.body["kind"], r.id) for r in h.gateway.receipts) == [
        ("sms", f"{row.id}-1"),
        ("voice", row.id),
    ]
    h.gateway.reset()  # from now on the gateway accepts
    redial = await h.to(T0 + 5 * M)  # attempt 2 one window later, as if attempt 1 went out
    assert calls_of(redial) == [("433122", "stage", COUNTY_A, 2)]
    assert [s.receipt.status for s in redial] == [200]
    await h.to(T0 + 10 * M)
    backup = await h.to(T0 + 15 * M)  # unanswered: the backup is called
    assert calls_of(backup) == [("433122", "backup", "c-433122-b", 1)]
    assert (await h.division("433122")).rung == "backup"


async def test_gateway_down_then_up_message_is_sent_later(
    h: Harness,
) -> None:
    # the channel's own back-off would retry for up to a minute of real time; shorten it
    assert h.daemon.dispatcher is not None
    h.daemon.dispatcher.backoff = Backoff(initial=0.01, maximum=0.02, jitter=0)
    await h.gateway.down()
    await h.feed(cap_xml(ID, T0, onset=T0 + 6 * H))
    (row,) = await h.all(Outbox)
    assert h.gateway.count == 0 and row.state == "pending" and row.error
    await h.gateway.up()
    sent = await h.to(T0 + 30 * S)  # retried after the outbox back-off (20 s), same id
    assert [(s.row.id, s.receipt.status) for s in sent] == [(row.id, 200)]


async def test_healthz(h: Harness) -> None:
    async with h.http.get(h.monitor + "/healthz") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        report = await resp.json()
    assert report["ok"] is True and report["contacts"] == len(h.rows)
    assert report["now"] == T0.isoformat() and report["next_due"] is None
    assert report["feeds"]["incoming"]["consecutive_failures"] == 0
    await h.feed(cap_xml(ID, T0, onset=T0 + 8 * H))
    async with h.http.get(h.monitor + "/healthz") as resp:
        report = await resp.json()
    assert datetime.fromisoformat(report["next_due"]) == T0 + 2 * H


async def test_poll_feed_outcome_for_a_duplicate_file(h: Harness) -> None:
    data = cap_xml(ID, T0, onset=T0 + 6 * H)
    await h.feed(data)
    path = h.tmp / "incoming" / "dup.xml"
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))
    report = await h.daemon.poll_feed(h.daemon.feeds[0])
    assert (report.items, report.duplicates) == (1, 1)
    assert h.gateway.count == 1
    assert (h.tmp / "incoming" / "processed" / "dup.xml").exists()


async def test_input_arriving_while_the_next_wake_is_scheduled_is_not_left_waiting(
    h: Harness,
) -> None:
    """A warning ingested during ``_schedule_next`` is worked on in the same wake."""
    original = h.daemon._schedule_next
    fed = False

    async def schedule_next() -> None:
        nonlocal fed
        await original()
        if not fed:  # a feed poll lands right now, while the wake lock is still held
            fed = True
            item = FeedItem(cap_xml(ID, T0, onset=T0 + 6 * H), "test:late.xml")
            assert (await h.daemon.ingest(item)).outcome == Outcome.ACCEPTED

    h.daemon._schedule_next = schedule_next  # type: ignore[method-assign]
    await h.daemon.wake()
    await h.daemon.settle()
    assert fed and [r.body["contact"] for r in h.gateway.receipts] == [COUNTY_A]


async def test_a_taken_port_is_a_one_line_config_error(h: Harness) -> None:
    elsewhere = dataclasses.replace(h.config, store_url=f"sqlite:///{h.tmp / 'other.db'}")
    other = Daemon(elsewhere, clock=h.clock, scheduler=False, port=h.daemon.bound_port)
    with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1") as err:
        await other.start()
    await other.stop()  # releases what the failed start opened
    assert "\n" not in str(err.value) and other.store is None


async def test_a_hung_gateway_does_not_stop_the_chain_timers(h: Harness) -> None:
    """Redials, escalations and stages keep their times while sends hang on the gateway."""
    h.gateway.hold_after(0)  # the gateway takes requests and never answers (until released)
    h.clock.set(T0)
    path = h.tmp / "incoming" / "hang.xml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(cap_xml(ID, T0, onset=T0 + 6 * H))
    os.utime(path, (time.time() - 60,) * 2)
    await h.daemon.poll_feed(h.daemon.feeds[0])
    await h.gateway.wait_for(1)  # attempt 1 is stuck in the gateway
    h.clock.set(T0 + 5 * M)
    await asyncio.wait_for(h.daemon.wake(), 3)  # bounded: the timers must not wait for sends
    (call,) = await h.all(Call)
    assert call.attempts_made == 2  # the redial is queued on time
    h.gateway.release()
    await h.daemon.settle()
    await h.daemon.wake()
    await h.daemon.settle()
    attempts = [(s.row.attempt, s.receipt.status) for s in await h.joined(h.gateway.receipts)]
    assert (2, 200) in attempts


async def test_in_flight_is_bounded_by_the_concurrency(h: Harness) -> None:
    """A slot is free only once its outcome is committed: with the gateway hanging, no more than
    ``concurrency`` messages have left without a durable record (all a SIGKILL could resend),
    and nothing is marked in the store to take them (one daemon per SQLite store)."""
    rows = [r for r in county_rows(townships=6, villages=2) if r[4] == "A"]
    h.gateway.hold_after(1)  # the first request is answered, the rest hang
    h.clock.set(T0)
    write_contacts(h.tmp / "contacts", rows)
    assert h.daemon.reload_directory()
    path = h.tmp / "incoming" / "slow.xml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(cap_xml(ID, T0))  # no onset: county, township and village at once
    os.utime(path, (time.time() - 60,) * 2)
    await h.daemon.poll_feed(h.daemon.feeds[0])
    concurrency = h.config.channels["gateway"].concurrency
    await h.gateway.wait_for(concurrency + 1)
    await asyncio.sleep(0.3)  # time enough for more, if anything let more through
    assert h.gateway.count == concurrency + 1
    stored = await h.all(Outbox)
    assert len(stored) == len(rows) == 19 > concurrency + 1
    assert sorted(r.state for r in stored).count("sent") == 1
    assert {r.state for r in stored} == {"sent", "pending"} and not any(
        r.claimed_by for r in stored
    )
    h.gateway.release()
    await h.daemon.settle()
    assert {r.state for r in await h.all(Outbox)} == {"sent"}
    assert h.gateway.count == 19 and h.gateway.unexpected_repeats() == []


async def test_a_hook_that_failed_inside_can_be_retried_with_the_same_signature(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.feed(cap_xml(ID, T0, onset=T0 + 6 * H))
    (sent,) = await h.joined(h.gateway.receipts)
    raw, headers = h.signed({"id": sent.row.id, "digits": "1"})
    engine = h.daemon.engine
    assert engine is not None
    real = engine.ack_ivr
    calls = 0

    async def flaky(message_id: str, digits: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store briefly unavailable")
        return await real(message_id, digits)

    monkeypatch.setattr(engine, "ack_ivr", flaky)
    assert (await h.post("/hooks/ivr", raw, headers))[0] == 500
    assert await h.all(Ack) == []
    status, answer = await h.post("/hooks/ivr", raw, headers)  # the platform's retry
    assert status == 200 and answer["ok"] is True
    assert len(await h.all(Ack)) == 1
    assert (await h.post("/hooks/ivr", raw, headers))[0] == 401  # now it is a replay


async def test_metrics_expose_chain_state_and_process_counters(h: Harness) -> None:
    await h.feed(cap_xml(ID, T0, onset=T0 + 6 * H))  # county stage fires at arrival
    (sent,) = await h.joined(h.gateway.receipts)
    assert (await h.hook("/hooks/ivr", {"id": sent.row.id, "digits": "1"}))[0] == 200
    async with h.http.get(h.monitor + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    lines = set(text.splitlines())
    assert 'warnd_warnings{drill="false",state="active"} 1.0' in lines
    assert 'warnd_acknowledgements_total{source="ivr"} 1.0' in lines
    assert 'warnd_outbox_messages{channel="gateway/voice",purpose="call",state="sent"} 1.0' in lines
    assert any(
        line.startswith('warnd_messages_total{channel="gateway",purpose="call",result="sent"}')
        for line in lines
    )
    assert any(line.startswith('warnd_time_to_ack_seconds_count{source="ivr"}') for line in lines)
    assert any(line.startswith('warnd_feed_polls_total{feed="incoming"}') for line in lines)
