"""Faulty feeds and gateways against the real ``Daemon`` (in process, ManualClock, real SQLite).

Feeds: HTTP feeds (a real aiohttp server on 127.0.0.1) that answer 5xx/429, hang, reset the
connection, cut the body short, send garbage or change their format; a spool folder that is not
a folder, with unreadable, half-written and poisonous files. The daemon keeps running, polls the
other feeds in the same round, reports the fault (log line + ``warnd_feed_poll_errors_total``
on /metrics + /healthz) and recovers when the feed does.

Gateways: a share of 503/429, timeouts, down for minutes of clock time, a channel failing for
good next to a working one. Every attempt is sent or, when its window passes, the ladder goes on;
every failure leaves a log line and a row state, nothing is dropped silently.

The harness is ``tests/daemon_rig.py``'s, with a config of several feeds and channels. Feed
retry back-offs and the channel back-off are shortened (injected sleep / patched ``deliver``);
chain time only moves with the ManualClock.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import os
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from daemon_rig import PUBLIC, SECRET, T0, Harness
from factory import cap_xml, write_contacts
from gateway_fake import GatewayFake

from warnd.config.policy import load_config
from warnd.edges import logs
from warnd.edges.channels import delivery
from warnd.edges.channels.delivery import Backoff
from warnd.edges.daemon import Daemon
from warnd.edges.feeds.http import HttpFeed
from warnd.engine.ids import message_id_of
from warnd.store.tables import Call, Division, Outbox, WarningRow

M = timedelta(minutes=1)
S = timedelta(seconds=1)
H = timedelta(hours=1)
RETRY = timedelta(seconds=20)  # the outbox back-off after a transient failure


def doc(n: int, sent: datetime = T0, **kw: Any) -> bytes:
    """Warning number ``n`` (distinct identifier), every stage firing at arrival."""
    kw.setdefault("expires", sent + 12 * H)
    return cap_xml(f"43312241600000_2025061408{n:04d}", sent, **kw)


# ---- a feed server that misbehaves on demand ------------------------------------------------


class FeedServer:
    """A real HTTP server: ``/<name>`` answers as ``modes[name]`` says."""

    def __init__(self) -> None:
        self.modes: dict[str, tuple[str, bytes]] = {}
        self.hits: Counter[str] = Counter()
        self.release = asyncio.Event()
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def set(self, name: str, mode: str, body: bytes = b"") -> None:
        self.modes[name] = (mode, body)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] += 1
        mode, body = self.modes.get(name, ("status", b"404"))
        if mode == "ok":
            return web.Response(body=body, content_type="application/cap+xml")
        if mode == "status":
            headers = {"Retry-After": "7"} if body == b"429" else {}
            return web.Response(status=int(body), text="维护中 busy", headers=headers)
        if mode == "hang":
            await self.release.wait()
            return web.Response(text="too late")
        transport = request.transport
        assert transport is not None
        if mode == "reset":  # RST instead of an answer
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return web.Response()
        if mode == "short":  # promises a body and stops half-way
            resp = web.StreamResponse(headers={"Content-Length": str(len(body) * 2)})
            await resp.prepare(request)
            await resp.write(body)
            transport.abort()
            return resp
        raise AssertionError(mode)


class Rig(Harness):
    """The daemon with feeds ``incoming`` (folder), ``good`` and ``bad`` (HTTP) and channels."""

    def __init__(
        self,
        tmp: Path,
        *,
        backup: bool = False,
        channel_timeout: str = "5s",
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(tmp, backoff=backoff)
        self.server = FeedServer()
        self.backup = GatewayFake(now=self.clock.now, seed=7) if backup else None
        self.channel_timeout = channel_timeout
        self.log = io.StringIO()
        self.sleeps: list[float] = []

    async def start(self) -> None:
        logs.configure(json=True, level="info", file=self.log)
        await self.server.start()
        url = await self.gateway.start()
        backup = await self.backup.start() if self.backup else None
        write_contacts(self.tmp / "contacts", self.rows)
        self.config = load_config(self._config(url, backup))
        self.daemon = Daemon(self.config, clock=self.clock, scheduler=False, port=0)
        await self.daemon.start()
        if self.backoff is not None:
            assert self.daemon.dispatcher is not None
            self.daemon.dispatcher.backoff = self.backoff
        self.base = f"http://127.0.0.1:{self.daemon.bound_port}"
        self.monitor = f"http://127.0.0.1:{self.daemon.monitor_port}"
        import aiohttp

        self.http = aiohttp.ClientSession()
        for feed in self.daemon.feeds:
            if isinstance(feed, HttpFeed):  # the feed's own retries: recorded, not slept
                feed._sleep = self._sleep
                feed.timeout_s = 0.15

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def stop(self) -> None:
        await super().stop()
        if self.backup is not None:
            await self.backup.stop()
        await self.server.stop()

    def _config(self, gateway: str, backup: str | None) -> Path:
        (self.tmp / "hook-secret").write_bytes(SECRET)
        text = f"""
[store]
url = "sqlite:///{self.tmp / "warnd.db"}"
[contacts]
path = "{self.tmp / "contacts"}"
[ack]
window = "5m"
attempts = 3
[listen]
host = "127.0.0.1"
port = 0
public_url = "{PUBLIC}"
[hooks]
secret_file = "{self.tmp / "hook-secret"}"
[[feeds]]
name = "incoming"
path = "{self.tmp / "incoming"}"
[[feeds]]
name = "good"
url = "{self.server.base}/good"
timeout = "1s"
[[feeds]]
name = "bad"
url = "{self.server.base}/bad"
timeout = "1s"
[channels.gateway]
type = "webhook"
url = "{gateway}"
kinds = ["voice", "sms"]
timeout = "{self.channel_timeout}"
"""
        if backup:
            text += f'[channels.backup]\ntype = "webhook"\nurl = "{backup}"\n'
        path = self.tmp / "warnd.toml"
        path.write_text(text, encoding="utf-8")
        return path

    # ---- observing --------------------------------------------------------------------------

    def feed_named(self, name: str) -> Any:
        return next(f for f in self.daemon.feeds if f.name == name)

    async def poll_all(self) -> dict[str, Any]:
        """One scheduler round: every feed polled concurrently, as APScheduler runs the jobs."""
        feeds = self.daemon.feeds
        reports = await asyncio.gather(*(self.daemon.poll_feed(f) for f in feeds))
        await self.daemon.settle()
        return {f.name: r for f, r in zip(feeds, reports, strict=True)}

    async def metric(self, name: str, feed: str) -> float:
        async with self.http.get(self.monitor + "/metrics") as resp:
            text = await resp.text()
        m = re.search(rf'^{name}{{feed="{feed}"}} ([0-9.e+]+)$', text, re.MULTILINE)
        return float(m[1]) if m else 0.0

    async def health(self) -> dict[str, Any]:
        async with self.http.get(self.monitor + "/healthz") as resp:
            assert resp.status == 200
            answer: dict[str, Any] = await resp.json()
            return answer

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log.getvalue().splitlines()]
        return [e for e in lines if e["event"] == name]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


#: the channel's own back-off (1 s, 2 s, 4 s … of real time) shortened to milliseconds
FAST = Backoff(initial=0.005, maximum=0.01, jitter=0, max_tries=3)


@pytest.fixture
def fast_delivery(rig: Rig) -> None:
    """The rig's sends retry with ``FAST``."""
    assert rig.daemon.dispatcher is not None
    rig.daemon.dispatcher.backoff = FAST


@pytest.fixture
def one_try(rig: Rig) -> None:
    """No retry inside a send: every transient failure goes back to the outbox (20 s)."""
    assert rig.daemon.dispatcher is not None
    rig.daemon.dispatcher.backoff = Backoff(max_tries=1)


# ---- HTTP feed faults ----------------------------------------------------------------------------

HTTP_FAULTS = {
    # name: (mode, body, what the error says, tries per poll)
    "500": ("status", b"500", "HTTP 500", 4),
    "503": ("status", b"503", "HTTP 503", 4),
    "429": ("status", b"429", "HTTP 429", 4),
    "hang": ("hang", b"", "timed out", 4),
    "reset": ("reset", b"", "连接失败", 8),  # aiohttp itself retries a dropped GET once
    "short body": ("short", b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'>", "连接失败", 4),
    "garbage": ("ok", bytes(range(256)) * 4, "malformed XML", 1),
    "json instead": ("ok", b'{"alerts": [{"id": 1}]}', "内容无效", 1),
    "html instead": ("ok", "<html><body>升级维护中</body></html>".encode(), "not a CAP alert", 1),
    "404": ("status", b"404", "HTTP 404", 1),
}


@pytest.mark.parametrize("fault", HTTP_FAULTS)
async def test_a_faulty_http_feed_is_reported_while_the_others_go_on(rig: Rig, fault: str) -> None:
    mode, body, needle, tries = HTTP_FAULTS[fault]
    rig.server.set("good", "ok", doc(1))
    rig.server.set("bad", mode, body)
    errors0 = await rig.metric("warnd_feed_poll_errors_total", "bad")
    polls0 = await rig.metric("warnd_feed_polls_total", "good")

    for n in (2, 3):  # two rounds of faults, while the good feed brings new warnings
        start = time.monotonic()
        reports = await rig.poll_all()
        assert time.monotonic() - start < 3.0  # a hanging feed does not hold up the round
        assert reports["bad"].error is not None and needle in reports["bad"].error
        assert "\n" not in reports["bad"].error and reports["bad"].items == 0
        assert (reports["good"].accepted, reports["good"].error) == (1, None)
        rig.server.set("good", "ok", doc(n))
    assert rig.server.hits["bad"] == 2 * tries  # retried within a poll only when it may pass
    if fault == "429":
        assert 7.0 in rig.sleeps  # Retry-After honoured

    assert await rig.metric("warnd_feed_poll_errors_total", "bad") == errors0 + 2
    assert await rig.metric("warnd_feed_polls_total", "good") == polls0 + 2
    failed = [e for e in rig.events("feed_poll_failed") if e["feed"] == "bad"]
    assert len(failed) == 2 and needle in failed[0]["error"]
    health = await rig.health()
    assert health["feeds"]["bad"]["consecutive_failures"] == 2
    assert health["feeds"]["good"]["consecutive_failures"] == 0
    assert len(await rig.all(WarningRow)) == 2  # the good feed's warnings, worked on
    assert rig.gateway.count > 0

    rig.server.set("bad", "ok", doc(9))  # the feed recovers
    reports = await rig.poll_all()
    assert (reports["bad"].accepted, reports["bad"].error) == (1, None)
    assert (await rig.health())["feeds"]["bad"]["consecutive_failures"] == 0
    assert await rig.metric("warnd_feed_poll_errors_total", "bad") == errors0 + 2
    assert {w.identifier[-4:] for w in await rig.all(WarningRow)} == {
        "0001",
        "0002",
        "0003",
        "0009",
    }


# ---- folder feed faults --------------------------------------------------------------------


def drop(folder: Path, name: str, data: bytes, age: float = 60.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    old = time.time() - age
    os.utime(path, (old, old))
    return path


async def test_a_spool_path_that_is_not_a_folder_is_reported_and_recovers(rig: Rig) -> None:
    rig.server.set("good", "ok", doc(1))
    rig.server.set("bad", "ok", doc(2))
    spool = rig.tmp / "incoming"
    if spool.is_dir():
        spool.rmdir()
    spool.write_text("someone replaced the mount point with a file")
    errors0 = await rig.metric("warnd_feed_poll_errors_total", "incoming")
    reports = await rig.poll_all()
    error = reports["incoming"].error
    assert error is not None and "cannot list folder" in error
    assert (reports["good"].accepted, reports["bad"].accepted) == (1, 1)
    assert await rig.metric("warnd_feed_poll_errors_total", "incoming") == errors0 + 1

    spool.unlink()  # repaired: the feed makes its folder and reads what arrives
    drop(spool, "a.xml", doc(3))
    reports = await rig.poll_all()
    assert (reports["incoming"].accepted, reports["incoming"].error) == (1, None)
    assert len(await rig.all(WarningRow)) == 3


async def feed_items(rig: Rig) -> Counter[str]:
    """``warnd_feed_items_total`` of the ``incoming`` feed, by outcome, as /metrics shows it."""
    async with rig.http.get(rig.monitor + "/metrics") as resp:
        scraped = await resp.text()
    pattern = r'^warnd_feed_items_total\{feed="incoming",outcome="(\w+)"\} ([0-9.e+]+)$'
    return Counter({m[1]: int(float(m[2])) for m in re.finditer(pattern, scraped, re.MULTILINE)})


async def test_unreadable_half_written_and_poisonous_files(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = rig.tmp / "incoming"
    locked = drop(spool, "locked.xml", doc(1), age=90)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads mode-000 files: make the open fail as it would for warnd
        real_open = builtins.open

        def guarded(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file).endswith("locked.xml"):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("warnd.edges.feeds.folder.open", guarded, raising=False)
    whole = doc(2)
    growing = drop(spool, "growing.xml", whole[:300], age=0)  # being written right now
    drop(spool, "copy.xml.part", whole[:100], age=600)  # a temporary name: never read
    drop(spool, "crashed.xml", doc(3)[:500], age=600)  # the writer died half-way
    drop(spool, "noise.xml", os.urandom(2000), age=600)
    poison = doc(4).replace(b"2025-06-14T08:00:00+08:00", b"9999-12-31T23:59:59-14:00", 1)
    drop(spool, "poison.xml", poison, age=600)
    drop(spool, "fine.xml", doc(5), age=30)

    before = await feed_items(rig)
    report = await rig.daemon.poll_feed(rig.feed_named("incoming"))
    await rig.daemon.settle()
    assert report.accepted == 1  # fine.xml, although every other file is a fault
    assert {w.identifier[-4:] for w in await rig.all(WarningRow)} == {"0005"}
    rejected = {p.name for p in (spool / "rejected").iterdir() if p.suffix == ".xml"}
    assert {"locked.xml", "crashed.xml", "noise.xml"} <= rejected
    reasons = {
        name: (spool / "rejected" / f"{name}.reason.txt").read_text(encoding="utf-8")
        for name in ("locked.xml", "crashed.xml", "noise.xml")
    }
    assert "Permission denied" in reasons["locked.xml"]
    assert "malformed XML" in reasons["crashed.xml"] and "malformed XML" in reasons["noise.xml"]
    logged = {e["origin"].split(":")[1] for e in rig.events("feed.item_rejected")}
    assert {"locked.xml", "crashed.xml", "noise.xml"} <= logged
    items = await feed_items(rig)  # counted for the duty monitor (the registry is per process)
    assert items["accepted"] - before["accepted"] == 1
    assert items["rejected"] - before["rejected"] >= 3
    assert (spool / "copy.xml.part").exists() and growing.exists()
    # the poisonous file (a date at the end of the calendar) is reported, never taken as a
    # warning; the feed and the daemon go on (docs/hardening.md: refuse it in the parser)
    poison_seen = (spool / "rejected" / "poison.xml").exists() or (
        report.error is not None and "poison.xml" in report.error
    )
    assert poison_seen

    growing.write_bytes(whole)  # the writer finishes: changed since the last poll, so one
    old = time.time() - 60  # more poll has to find it unchanged before it is read
    os.utime(growing, (old, old))
    report = await rig.daemon.poll_feed(rig.feed_named("incoming"))
    assert report.accepted == 0
    report = await rig.daemon.poll_feed(rig.feed_named("incoming"))
    await rig.daemon.settle()
    assert report.accepted == 1
    assert {w.identifier[-4:] for w in await rig.all(WarningRow)} == {"0002", "0005"}
    assert (await rig.health())["ok"] is True


# ---- gateway faults ------------------------------------------------------------------------------


async def feed_county(rig: Rig, n: int = 1) -> None:
    """A county warning whose three stages fire at once: 7 calls (county_rows 2 × 2)."""
    await rig.feed(doc(n, rig.clock.now()))


async def walk(rig: Rig, until: datetime, step: timedelta) -> None:
    while rig.clock.now() < until:
        await rig.to(min(until, rig.clock.now() + step))


async def assert_every_attempt_sent_or_superseded(rig: Rig) -> None:
    """Each call's attempts 1..n reached a gateway, except ones overtaken by the next attempt."""
    rows = await rig.all(Outbox, Outbox.purpose == "call")
    calls = {c.id: c for c in await rig.all(Call)}
    assert rows
    for row in rows:
        assert row.state in ("sent", "cancelled", "failed"), (row.id, row.state)
        if row.state != "sent":
            assert row.error, f"{row.id} {row.state} without a reason"
    for call in calls.values():
        mine = sorted((r.attempt or 0, r.state) for r in rows if r.call_id == call.id)
        assert [a for a, _ in mine] == list(range(1, call.attempts_made + 1)), (call.id, mine)
        assert mine[-1][1] in ("sent", "failed") or call.state != "active"


async def failures(rig: Rig) -> int:
    """``warnd_delivery_failures_total`` of the gateway, as /metrics shows it."""
    async with rig.http.get(rig.monitor + "/metrics") as resp:
        text = await resp.text()
    pattern = r'^warnd_delivery_failures_total\{channel="gateway",[^}]*\} ([0-9.e+]+)$'
    return int(sum(float(m[1]) for m in re.finditer(pattern, text, re.MULTILINE)))


async def test_a_share_of_5xx_and_429_delays_but_loses_nothing(rig: Rig, one_try: None) -> None:
    counted0 = await failures(rig)  # the registry is per process: a delta
    rig.gateway.share_5xx, rig.gateway.share_429 = 0.3, 0.15
    await feed_county(rig)
    await walk(rig, T0 + 65 * M, timedelta(seconds=30))
    statuses = Counter(r.status for r in rig.gateway.receipts)
    assert statuses[503] > 5 and statuses[429] > 2 and statuses[200] > 20
    await assert_every_attempt_sent_or_superseded(rig)
    rows = await rig.all(Outbox, Outbox.purpose == "call")
    assert all(r.state == "sent" for r in rows)  # ten retries fit in a 5-minute window
    assert rig.gateway.unexpected_repeats() == []  # an id accepted once is never sent again
    # accepted once each, on the first route (the id) or the SMS fallback (the id + "-1")
    accepted = Counter(message_id_of(r.id) for r in rig.gateway.receipts if r.ok)
    assert set(accepted) == {r.id for r in rows} and set(accepted.values()) == {1}
    # a transient failure does not turn a voice call into an SMS: the attempt is queued again
    # as voice (docs/hardening.md, the fallback rule); every failed request is counted and
    # logged, one line each (none throttled at this rate)
    refused = Counter(r.id for r in rig.gateway.receipts if not r.ok)
    assert {r.body["kind"] for r in rig.gateway.receipts} == {"voice"}
    assert {r.channel for r in rows} == {"gateway/voice"}
    failed_sends = Counter(e["message"] for e in rig.events("send_failed"))
    assert failed_sends == refused  # one request a send: no retry inside it (one_try)
    delivery._LINES.flush()  # the throttled lines' summary, due at the end of its period
    lines = rig.events("delivery failed")
    assert len(lines) + sum(e["suppressed"] for e in lines) == sum(refused.values())
    assert 20 <= len(lines) < sum(refused.values())  # throttled: 20 lines per 10 s
    assert await failures(rig) - counted0 == sum(refused.values())  # and every one counted
    assert rig.events("route_fallback") == []
    # the ladder ran its normal course: nobody answered, every division ended on the list
    assert {d.rung for d in await rig.all(Division)} == {"ended"}


async def test_gateway_timeouts_are_retried_under_the_same_id(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, channel_timeout="0.2", backoff=FAST)
    await rig.start()
    try:
        rig.gateway.latency = 0.4  # answers after warnd gave up: ambiguous, so sent again
        await feed_county(rig)
        rows = await rig.all(Outbox, Outbox.purpose == "call")
        assert len(rows) == 7 and {r.state for r in rows} == {"pending"}
        assert all("timed out" in (r.error or "") for r in rows)
        slow = {r.id for r in rig.gateway.receipts}  # voice only: a timeout is transient
        assert slow == {r.id for r in rows} and len(slow) == 7
        assert {r.body["kind"] for r in rig.gateway.receipts} == {"voice"}
        rig.gateway.latency = 0.0
        await rig.to(T0 + RETRY)
        rows = await rig.all(Outbox, Outbox.purpose == "call")
        assert {r.state for r in rows} == {"sent"}
        # the same id again only for requests warnd could not know were accepted
        assert rig.gateway.unexpected_repeats(allowed=slow) == []
        assert {r.id for r in rig.gateway.receipts[-7:]} == {r.id for r in rows}  # voice
    finally:
        await rig.stop()


async def test_gateway_down_for_minutes_the_ladder_goes_on(rig: Rig, fast_delivery: None) -> None:
    await rig.gateway.down()
    await feed_county(rig)
    await walk(rig, T0 + 7 * M, RETRY)  # down for 7 minutes: longer than a window
    assert rig.gateway.count == 0
    rows = await rig.all(Outbox, Outbox.purpose == "call")
    first = [r for r in rows if r.attempt == 1]
    assert len(first) == 7 and {r.state for r in first} == {"cancelled"}
    assert {r.error for r in first} == {"call no longer open"}  # overtaken by attempt 2
    failures = Counter(e["message"] for e in rig.events("send_failed"))
    assert all(failures[r.id] >= 10 for r in first)  # tried every 20 s, each try logged
    assert {c.attempts_made for c in await rig.all(Call)} == {2}

    await rig.gateway.up()
    sent = await rig.to(T0 + 7 * M + RETRY)
    assert sorted(s.row.attempt for s in sent) == [2] * 7  # the redials, not the stale attempts
    for minutes in (10, 15):  # the third attempt and the end of the call, on time
        await rig.to(T0 + minutes * M)
    divisions = await rig.all(Division)
    assert {d.rung for d in divisions} == {"backup"}  # unanswered: the ladder went on in time
    await assert_every_attempt_sent_or_superseded(rig)


async def test_a_channel_failing_for_good_falls_back_to_the_next(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, backup=True, backoff=FAST)
    await rig.start()
    assert rig.backup is not None
    try:
        rig.gateway.script(lambda body: True, *[400] * 1000)  # refuses everything for good
        await feed_county(rig)
        rows = await rig.all(Outbox, Outbox.purpose == "call")
        assert {(r.state, r.channel) for r in rows} == {("sent", "backup/voice")}
        # the backup is the second route: the message's id with "-1" (its own message)
        assert {r.id for r in rig.backup.receipts if r.ok} == {f"{r.id}-1" for r in rows}
        assert Counter(r.id for r in rig.gateway.receipts) == Counter({r.id: 1 for r in rows})
        failed = [e for e in rig.events("delivery failed") if e["channel"] == "gateway"]
        assert len(failed) == 7 and all(e["permanent"] for e in failed)

        rig.gateway.reset()  # transient failures for good (503): the same fallback
        rig.gateway.script(lambda body: True, *[503] * 1000)
        sent = await rig.to(T0 + 5 * M)
        assert {s.receipt.status for s in sent} == {503} and len(rig.backup.accepted()) == 14
        rows = await rig.all(Outbox, Outbox.purpose == "call", Outbox.attempt == 2)
        assert {(r.state, r.channel) for r in rows} == {("sent", "backup/voice")}

        rig.gateway.reset()  # both channels refuse for good
        rig.gateway.script(lambda body: True, *[400] * 1000)
        rig.backup.script(lambda body: True, *[400] * 1000)
        await rig.to(T0 + 10 * M)
        rows = await rig.all(Outbox, Outbox.purpose == "call", Outbox.attempt == 3)
        assert {r.state for r in rows} == {"failed"}
        assert all("gateway/" in r.error and "backup/" in r.error for r in rows)
        assert len([e for e in rig.events("send_failed") if e["permanent"]]) >= 7
        await rig.to(T0 + 15 * M)  # the attempts failed, the ladder did not wait for them
        assert {d.rung for d in await rig.all(Division) if d.level == "village"} == {"backup"}
    finally:
        await rig.stop()


async def test_a_fallback_route_is_not_swallowed_by_an_idempotent_gateway(rig: Rig) -> None:
    """Contracts §5 lets a gateway drop repeated ids; this one replays its first answer, as
    idempotency-key APIs do. A refused voice call falls back to SMS on the same gateway: under
    the same id the SMS would get the voice call's 400 back and nobody would be told."""
    rig.gateway.idempotent = True
    rig.gateway.script(lambda body: body.get("kind") == "voice", *[400] * 1000)
    await feed_county(rig)
    rows = await rig.all(Outbox, Outbox.purpose == "call")
    assert len(rows) == 7 and {(r.state, r.channel) for r in rows} == {("sent", "gateway/sms")}
    voice = [r for r in rig.gateway.receipts if r.body["kind"] == "voice"]
    sms = [r for r in rig.gateway.receipts if r.body["kind"] == "sms"]
    assert sorted(r.id for r in voice) == sorted(r.id for r in rows)
    assert {r.status for r in voice} == {400}
    assert sorted(r.id for r in sms) == sorted(f"{r.id}-1" for r in rows)
    assert all(r.ok and not r.replayed for r in sms)  # delivered, each once
    # the text of the SMS still carries the attempt's own reply code
    assert all(
        r.body["text"] == row.text
        for r, row in zip(
            sorted(sms, key=lambda r: r.id), sorted(rows, key=lambda r: r.id), strict=True
        )
    )
    # the redial goes out again as voice under its own new id (a new attempt, a new message)
    await rig.to(T0 + 5 * M)
    second = await rig.all(Outbox, Outbox.purpose == "call", Outbox.attempt == 2)
    assert {(r.state, r.channel) for r in second} == {("sent", "gateway/sms")}
    assert not [r for r in rig.gateway.receipts if r.replayed]
    # a report quoting the fallback's id is about the same attempt: it acknowledges that call
    assert rig.daemon.engine is not None
    first = rows[0]
    result = await rig.daemon.engine.ack_message(f"{first.id}-1", "ivr")
    assert result.ok
    calls = {c.id: c for c in await rig.all(Call)}
    assert calls[first.call_id].state == "acked"  # type: ignore[index]
