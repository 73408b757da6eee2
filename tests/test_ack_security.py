"""Acknowledgement security through the real listener of an in-process daemon (contracts §6).

Forged, stale and replayed hooks on every path; confirmation tokens (length, randomness,
single purpose, expiry a day after their attempt, GET never acknowledging); SMS replies that
must change nothing; oversized bodies (413); and a whole end-to-end run whose every log line is
checked for phone numbers and secrets. Harness: ``tests/daemon_rig.py`` (ManualClock, real
SQLite, real aiohttp listener and gateway fake).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from daemon_rig import ID, SECRET, T0, Harness, Rig, calls_out, link, run_chain
from factory import cap_xml, county_rows, write_contacts
from gateway_fake import GatewayFake

from warnd.core import phone
from warnd.edges import logs
from warnd.engine.acks import TOKEN_TTL
from warnd.store.tables import Ack, Call

H = timedelta(hours=1)
M = timedelta(minutes=1)
S = timedelta(seconds=1)
ID2 = "43312241600000_20250614090000"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Rig(tmp_path)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def page(h: Harness, method: str, path: str, **kw: Any) -> tuple[int, str]:
    async with h.http.request(method, h.base + path, **kw) as resp:
        return resp.status, await resp.text()


# ---- hooks: signatures, freshness, replays ------------------------------------------------------


@pytest.mark.parametrize("path", ["/hooks/ivr", "/hooks/reply"])
async def test_forged_stale_and_replayed_hooks_change_nothing(h: Harness, path: str) -> None:
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    target = (await calls_out(h))[0]
    body = (
        {"id": target.id, "digits": "1"}
        if path == "/hooks/ivr"
        else {"from": target.to, "text": f"收到 {target.reply_code}"}
    )
    now = int(h.clock.now().timestamp())
    raw, good = h.signed(body)
    other = json.dumps({**body, "digits": "1 "}).encode()
    forged: dict[str, tuple[bytes, dict[str, str]]] = {
        "unsigned": (raw, {"Content-Type": "application/json"}),
        "signature only": (raw, {"X-Warnd-Signature": good["X-Warnd-Signature"]}),
        "timestamp only": (raw, {"X-Warnd-Timestamp": good["X-Warnd-Timestamp"]}),
        "wrong secret": h.signed(body, secret=SECRET + b"x"),
        "empty secret": h.signed(body, secret=b""),
        "sha1 prefix": (raw, {**good, "X-Warnd-Signature": good["X-Warnd-Signature"][7:]}),
        "truncated": (raw, {**good, "X-Warnd-Signature": good["X-Warnd-Signature"][:-2]}),
        "other body": (other, good),
        "timestamp moved": (raw, {**good, "X-Warnd-Timestamp": str(now + 1)}),
        "timestamp junk": (raw, {**good, "X-Warnd-Timestamp": "1e9"}),
        "stale": h.signed(body, ts=now - 301),
        "future": h.signed(body, ts=now + 120),
    }
    before = await h.snapshot()
    for what, (data, headers) in forged.items():
        status, _ = await h.post(path, data, headers)
        assert status == 401, what
        assert await h.snapshot() == before, what

    status, answer = await h.post(path, raw, good)  # the genuine one
    assert status == 200 and answer["ok"] is True and answer["contact"] == target.contact_id
    after = await h.snapshot()
    assert after != before and len(after[0]) == 1
    for _ in range(3):  # captured and sent again, as is: refused
        assert (await h.post(path, raw, good))[0] == 401
    assert await h.snapshot() == after


# ---- confirmation tokens -------------------------------------------------------------------------


async def test_tokens_are_unguessable_and_acknowledge_only_their_own_call(h: Harness) -> None:
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    h.clock.advance(M)
    await h.feed(cap_xml(ID2, T0 + M, expires=T0 + 12 * H, headline="第二个预警"))
    rows = await calls_out(h)
    tokens = [r.token for r in rows]
    assert len(rows) == 2 * 7 and all(tokens)  # 1 county + 2 townships + 4 villages, twice
    for token in tokens:
        assert token is not None and re.fullmatch(r"[A-Za-z0-9_-]+", token)
        assert len(token) * 6 >= 128  # base64url: 6 bits a character
    assert len(set(tokens)) == len(tokens)
    assert len({t[:6] for t in tokens if t}) == len(tokens)  # no shared prefixes: not a counter

    # The same person holds a token for each warning; the first acknowledges the first only.
    person = rows[0].contact_id
    mine = [r for r in rows if r.contact_id == person]
    assert len(mine) == 2 and mine[0].warning_id != mine[1].warning_id
    before = await h.snapshot()
    status, text = await page(h, "POST", link(mine[0]))
    assert status == 200 and "已确认收到" in text
    (ack,) = await h.all(Ack)
    assert (ack.contact_id, ack.outbox_id, ack.source) == (person, mine[0].id, "link")
    calls = {c.id: c for c in await h.all(Call)}
    assert calls[mine[0].call_id].state == "acked"
    assert calls[mine[1].call_id].state == "active"  # the other warning's call is untouched
    assert sum(c.state == "acked" for c in calls.values()) == 1
    changed = await h.snapshot()
    assert changed[3] == before[3]  # nothing queued or cancelled in the outbox

    # Pressing the button again is a duplicate; anything that is not exactly a token is unknown.
    assert (await page(h, "POST", link(mine[0])))[0] == 200
    token = mine[1].token
    assert token is not None
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for junk in (flipped, token[:-1], token + "x", "A" * 32, "x" * 5000, "..%2f..%2fetc"):
        status, text = await page(h, "POST", f"/a/{junk}")
        assert status in (404, 414) and "已确认" not in text, junk
    assert await h.snapshot() == changed


async def test_get_and_head_never_acknowledge(h: Harness) -> None:
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    rows = await calls_out(h)
    before = await h.snapshot()
    for row in rows:
        for _ in range(3):  # a link scanner, a chat preview, the person opening it
            status, text = await page(h, "GET", link(row))
            assert status == 200 and 'method="post"' in text
            assert (await page(h, "HEAD", link(row)))[0] == 200
        assert (await page(h, "GET", link(row) + "?confirm=1&ok=1"))[0] == 200
    for path in ("/hooks/ivr", "/hooks/reply"):
        assert (await page(h, "GET", f"{path}?id={rows[0].id}&digits=1"))[0] == 405
    assert await h.snapshot() == before


async def test_a_confirmation_link_expires_a_day_after_its_attempt(h: Harness) -> None:
    await h.feed(cap_xml(ID, T0, expires=T0 + 48 * H))
    first, second = (await calls_out(h))[:2]
    assert first.due_at == second.due_at == T0 and TOKEN_TTL == 24 * H
    for k in range(1, 16):  # through the whole ladder (window 5 min), wake by wake
        await h.to(T0 + k * 5 * M)
    assert {c.state for c in await h.all(Call)} == {"failed"}
    await h.to(T0 + 24 * H - S)  # the ladder has long ended; the link still works (late)
    status, text = await page(h, "GET", link(first))
    assert status == 200 and "暴雨橙色预警" in text
    assert (await page(h, "POST", link(first)))[0] == 200
    (ack,) = await h.all(Ack)
    assert ack.contact_id == first.contact_id and ack.late is True

    # a link belongs to its call and works for a day after the call's latest attempt (3 × 5 min)
    await h.to(T0 + 10 * M + 24 * H - S)
    assert (await page(h, "GET", link(second)))[0] == 200
    await h.to(T0 + 10 * M + 24 * H + S)
    before = await h.snapshot()
    for method in ("GET", "POST"):
        status, text = await page(h, method, link(second))
        assert status == 404 and "过期" in text and "暴雨" not in text
    assert await h.snapshot() == before
    # an SMS reply still records the late answer: the link alone is limited
    status, answer = await h.hook("/hooks/reply", {"from": second.to, "text": second.reply_code})
    assert status == 200 and answer["ok"] is True
    assert len(await h.all(Ack)) == 2


# ---- SMS replies that must change nothing -------------------------------------------------------


async def test_sms_replies_from_strangers_or_with_foreign_codes_change_nothing(h: Harness) -> None:
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    a, b = (await calls_out(h))[:2]
    assert a.to != b.to
    before = await h.snapshot()
    stranger = "+8613999999999"
    assert phone.normalise(stranger) == stranger
    replies = [
        (stranger, "1"),
        (stranger, f"收到 {a.reply_code}"),  # someone else's code from an unknown number
        (b.to, f"收到 {a.reply_code}"),  # a's code from b's number: codes belong to a number
        (a.to, "0"),
        (a.to, "不知道"),
        (a.to, "9" * 500),
    ]
    for sender, text in replies:
        status, answer = await h.hook("/hooks/reply", {"from": sender, "text": text})
        assert status == 200 and answer["ok"] is False, (sender, text)
    for bad in ({"from": "not a number", "text": "1"}, {"from": a.to}, {"text": "1"}, []):
        raw, headers = h.signed(bad)  # type: ignore[arg-type]
        assert (await h.post("/hooks/reply", raw, headers))[0] == 400
    assert await h.snapshot() == before


# ---- body size limits -----------------------------------------------------------------------


async def test_oversized_bodies_are_refused_with_413_and_change_nothing(h: Harness) -> None:
    await h.feed(cap_xml(ID, T0, expires=T0 + 12 * H))
    target = (await calls_out(h))[0]
    before = await h.snapshot()
    big = {"id": target.id, "digits": "1", "pad": "x" * (64 * 1024)}
    raw, headers = h.signed(big)  # correctly signed: only its size refuses it
    for path in ("/hooks/ivr", "/hooks/reply"):
        assert (await h.post(path, raw, headers))[0] == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(80):
            yield b"x" * 1024

    for path in ("/hooks/ivr", link(target)):
        async with h.http.post(h.base + path, data=chunks(), headers=headers) as resp:
            assert resp.status == 413, path
    status, _ = await page(h, "POST", link(target), data=b"confirm=1&" + b"x" * 70_000)
    assert status == 413
    assert await h.snapshot() == before
    # the listener is still fine: a small genuine request goes through
    status, answer = await h.hook("/hooks/ivr", {"id": target.id, "digits": "1"})
    assert status == 200 and answer["ok"] is True


# ---- logs never carry numbers or secrets whole ----------------------------------------------


class EchoingGateway(GatewayFake):
    """A gateway whose errors quote the number, as many SMS platforms' do."""

    async def _handle(self, request: web.Request) -> web.Response:
        resp = await super()._handle(request)
        if resp.status >= 400:
            body = self.receipts[-1].body
            text = f"invalid mobile {body.get('to')} ({str(body.get('to'))[3:]})"
            return web.json_response({"code": resp.status, "msg": text}, status=resp.status)
        return resp


async def test_no_log_line_of_a_whole_run_carries_a_number_or_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buf = io.StringIO()
    logs.configure(json=True, level="debug", file=buf)
    caplog.set_level(logging.INFO)
    rows = [r for r in county_rows(townships=2, villages=2) if r[0] != "c-433122101201-b"]
    h = Harness(tmp_path, rows)
    h.gateway = EchoingGateway(now=h.clock.now)
    await h.start()
    try:
        await run_chain(h)  # the whole 631 chain: stages, IVR, SMS, link, update, ladder
        # failure paths that put outside text into log lines
        await h.hook("/hooks/reply", {"from": "+8613999999999", "text": "1"})
        await h.post("/hooks/ivr", *h.signed({"id": "x", "digits": "1"}, secret=b"wrong"))
        h.gateway.script(lambda body: True, 400, 400, 400, 400)
        h.clock.advance(M)
        await h.feed(cap_xml(ID2, h.clock.now(), expires=h.clock.now() + 12 * H))
        assert any(r.status == 400 for r in h.gateway.receipts)
        bad = [  # a duplicate number and a landline A: contacts problems quote numbers
            *rows,
            ["c-dup", "433122100200", "村0-0", "village", "B", "r", "某", rows[5][7], ""],
            ["c-land", "433122100", "镇0", "township", "A", "r", "某", "0743-4222119", ""],
        ]
        write_contacts(tmp_path / "contacts", bad)
        assert h.daemon.reload_directory() is True
    finally:
        await h.stop()

    text = buf.getvalue() + "\n".join(r.getMessage() for r in caplog.records)
    lines = buf.getvalue().splitlines()
    assert len(lines) > 80 and all(json.loads(line) for line in lines)
    events = {json.loads(line)["event"] for line in lines}
    assert {"message_sent", "ack_recorded", "sms_reply", "hook_refused"} <= events
    assert {"delivery failed", "contacts_problem"} <= events
    numbers = {p for r in bad for p in (r[7], r[8]) if p}
    assert len(numbers) == len(bad) - 1  # every number of the directory (one is shared)
    for raw in numbers:
        e164 = phone.normalise(raw)
        assert e164 is not None
        national = e164.removeprefix("+86")
        assert e164 not in text and national not in text, raw
    assert "+86138****" in text and "0743****2119" in text  # numbers do appear, masked
    assert SECRET.decode() not in text and "sha256=" not in text
    assert "invalid mobile +86138****" in text  # the gateway's echo, masked
