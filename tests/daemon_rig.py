"""The in-process daemon rig of the end-to-end tests (docs/testing.md): one ``Daemon`` with no
scheduler on a ManualClock, a real SQLite file, its real aiohttp listener on a free port, and a
real aiohttp gateway fake (tests/gateway_fake.py) as its ``webhook`` channel. Time moves only
when a test advances the clock and calls ``wake()``; nothing sleeps for a timer.

Not a test module: the test modules that drive a daemon import it (none imports another).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import aiohttp
from factory import cap_xml, county_rows, write_contacts
from gateway_fake import BODY_KEYS, GatewayFake, Receipt
from sqlmodel import select

from warnd.config.policy import load_config
from warnd.core.clock import ManualClock
from warnd.desk.views import Timestamps
from warnd.edges.channels.delivery import Backoff
from warnd.edges.daemon import Daemon
from warnd.edges.signature import sign
from warnd.engine.ids import message_id_of
from warnd.store.tables import Ack, Call, Division, Outbox, Stage, WarningRow
from warnd.testing import daemon_config

CST = timezone(timedelta(hours=8))
T0 = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
H = timedelta(hours=1)
M = timedelta(minutes=1)
S = timedelta(seconds=1)
SENDER = "433122_Meteorological_Observatory"
ID = "43312241600000_20250614080000"
SECRET = b"hook-secret-for-tests-631-0123456789"
PUBLIC = "https://warn.example.cn"
COUNTY_A, COUNTY_DUTY = "c-433122-a", "c-433122-duty"
T100_A, T101_A = "c-433122100-a", "c-433122101-a"
V1 = ("433122100200", "433122100201", "433122101200", "433122101201")


def config_toml(tmp: Path, gateway_url: str) -> Path:
    """Every table of contracts §2 and §7 (listen port 0: any free port)."""
    return daemon_config(
        tmp,
        gateway_url=gateway_url,
        secret=SECRET,
        public_url=PUBLIC,
        channel={"rate": "50/s", "timeout": "5s"},
    )


@dataclass
class Sent:
    """A gateway receipt joined with the outbox row it came from."""

    receipt: Receipt
    row: Outbox
    call: Call | None
    division: str | None

    @property
    def contact(self) -> str:
        return self.row.contact_id


class Harness:
    def __init__(
        self, tmp: Path, rows: list[list[str]] | None = None, *, backoff: Backoff | None = None
    ) -> None:
        self.backoff = backoff  # the retries within a send (Dispatcher.backoff), when given
        self.tmp = tmp
        self.clock = ManualClock(T0)
        self.gateway = GatewayFake(now=self.clock.now)
        self.rows = rows if rows is not None else county_rows(townships=2, villages=2)
        self.files = 0

    async def start(self) -> None:
        url = await self.gateway.start()
        write_contacts(self.tmp / "contacts", self.rows)
        self.config = load_config(config_toml(self.tmp, url))
        self.daemon = Daemon(self.config, clock=self.clock, scheduler=False, port=0)
        await self.daemon.start()
        if self.backoff is not None:
            assert self.daemon.dispatcher is not None
            self.daemon.dispatcher.backoff = self.backoff
        assert self.daemon.bound_port and self.daemon.monitor_port
        self.base = f"http://127.0.0.1:{self.daemon.bound_port}"
        self.monitor = f"http://127.0.0.1:{self.daemon.monitor_port}"  # /healthz, /metrics
        self.http = aiohttp.ClientSession()

    async def stop(self) -> None:
        await self.http.close()
        await self.daemon.stop()
        await self.gateway.stop()

    # ---- driving --------------------------------------------------------------------------

    async def feed(self, data: bytes) -> None:
        """Drop a CAP file into the spool folder (settled: written a minute ago) and poll."""
        folder = self.tmp / "incoming"
        folder.mkdir(exist_ok=True)
        self.files += 1
        path = folder / f"{self.files:03d}.xml"
        path.write_bytes(data)
        old = time.time() - 60
        os.utime(path, (old, old))
        report = await self.daemon.poll_feed(self.daemon.feeds[0])
        assert (report.items, report.accepted, report.error) == (1, 1, None)
        await self.daemon.settle()
        await self.daemon.wake()
        await self.daemon.settle()

    async def to(self, when: datetime) -> list[Sent]:
        """Move the clock to ``when``, wake the daemon; what the gateway received meanwhile."""
        before = self.gateway.count
        self.clock.set(when)
        await self.daemon.wake()
        await self.daemon.settle()
        return await self.joined(self.gateway.receipts[before:])

    async def joined(self, receipts: list[Receipt]) -> list[Sent]:
        out = []
        async with self.daemon.store.read() as s:  # type: ignore[union-attr]
            for r in receipts:
                row = await s.get(Outbox, message_id_of(r.id))  # a fallback route: <id>-<n>
                assert row is not None, f"gateway got an id the outbox does not know: {r.id}"
                call = await s.get(Call, row.call_id) if row.call_id else None
                div = await s.get(Division, call.division_id) if call else None
                out.append(Sent(r, row, call, div.code if div else None))
        return out

    # ---- hooks ----------------------------------------------------------------------------

    def signed(
        self, body: dict[str, Any], *, ts: int | None = None, secret: bytes = SECRET
    ) -> tuple[bytes, dict[str, str]]:
        raw = json.dumps(body, ensure_ascii=False).encode()
        stamp = int(self.clock.now().timestamp()) if ts is None else ts
        headers = {
            "Content-Type": "application/json",
            "X-Warnd-Timestamp": str(stamp),
            "X-Warnd-Signature": sign(secret, stamp, raw),
        }
        return raw, headers

    async def post(
        self, path: str, raw: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any] | str]:
        async with self.http.post(self.base + path, data=raw, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def hook(self, path: str, body: dict[str, Any], **kw: Any) -> tuple[int, Any]:
        raw, headers = self.signed(body, **kw)
        return await self.post(path, raw, headers)

    # ---- the store ------------------------------------------------------------------------

    async def all(self, model: Any, *where: Any) -> list[Any]:
        async with self.daemon.store.read() as s:  # type: ignore[union-attr]
            return list((await s.execute(select(model).where(*where))).scalars().all())

    async def snapshot(self) -> tuple[Any, ...]:
        """Everything an acknowledgement could change."""
        acks = [(a.contact_id, a.source, a.dedupe_key) for a in await self.all(Ack)]
        calls = [(c.id, c.state, c.attempts_made, c.next_due_at) for c in await self.all(Call)]
        divs = [(d.code, d.rung, d.reached_at, d.unreached_at) for d in await self.all(Division)]
        out = [(o.id, o.state) for o in await self.all(Outbox)]
        return tuple(sorted(acks)), tuple(sorted(calls)), tuple(sorted(divs)), tuple(sorted(out))

    async def division(self, code: str) -> Division:
        (d,) = await self.all(Division, Division.code == code)
        return d


class Rig(Harness):
    async def snapshot(self) -> tuple[Any, ...]:
        """Everything an acknowledgement could change (any number of warnings)."""
        acks = [(a.contact_id, a.source, a.dedupe_key) for a in await self.all(Ack)]
        calls = [(c.id, c.state, c.attempts_made, c.next_due_at) for c in await self.all(Call)]
        divs = [(d.id, d.rung, d.reached_at, d.unreached_at) for d in await self.all(Division)]
        out = [(o.id, o.state) for o in await self.all(Outbox)]
        return tuple(tuple(sorted(rows, key=repr)) for rows in (acks, calls, divs, out))


def calls_of(sent: list[Sent]) -> list[tuple[str | None, str | None, str, int | None]]:
    """(division, rung, contact, attempt) of call messages, sorted."""
    return sorted(
        (s.division, s.row.rung, s.contact, s.row.attempt) for s in sent if s.row.purpose == "call"
    )


class Attempt(NamedTuple):
    """A call attempt with the reply code and link token of its call."""

    id: str
    to: str
    contact_id: str
    warning_id: int
    call_id: int
    due_at: datetime
    token: str | None
    reply_code: str | None


async def calls_out(h: Harness) -> list[Attempt]:
    """Every call attempt queued so far (all stages fire at once for an alert without onset)."""
    store = h.daemon.store
    assert store is not None
    rows = await store.fetch(
        'SELECT o.id, o."to", o.contact_id, o.warning_id, o.call_id, o.due_at, c.token,'
        " c.reply_code FROM outbox o JOIN call c ON c.id = o.call_id ORDER BY o.at, o.seq"
    )
    ts = Timestamps()
    return [Attempt(r[0], r[1], r[2], r[3], r[4], ts(r[5]), r[6], r[7]) for r in rows]  # type: ignore[arg-type]


def link(row: Attempt) -> str:
    assert row.token is not None
    return f"/a/{row.token}"


async def run_chain(h: Harness) -> None:
    onset = T0 + 8 * H
    await h.feed(cap_xml(ID, T0, onset=onset, expires=T0 + 24 * H))
    assert h.gateway.count == 0
    (w,) = await h.all(WarningRow)
    assert (w.key, w.state) == (ID, "active")
    stages = sorted((s.level, s.due_at) for s in await h.all(Stage))
    assert stages == sorted(
        [("county", onset - 6 * H), ("township", onset - 3 * H), ("village", onset - H)]
    )

    # -- county stage at onset - 6h; nothing a second before --------------------------------
    assert await h.to(onset - 6 * H - S) == []
    county = await h.to(onset - 6 * H)
    assert calls_of(county) == [("433122", "stage", COUNTY_A, 1)]
    body = county[0].receipt.body
    assert body["kind"] == "voice" and body["purpose"] == "call"
    assert body["to"] == "+8613810000001" and body["contact"] == COUNTY_A
    assert body["id"] == county[0].row.id and "暴雨橙色预警" in body["text"]
    assert body["reply_code"] in body["text"] and body["link"].startswith(PUBLIC + "/a/")

    # IVR key 2 is not an acknowledgement; the redial comes one window later
    status, answer = await h.hook("/hooks/ivr", {"id": body["id"], "digits": "2"})
    assert status == 200 and answer["ok"] is False
    assert [(c.state, c.attempts_made) for c in await h.all(Call)] == [("active", 1)]
    assert await h.to(onset - 6 * H + 5 * M - S) == []
    redial = await h.to(onset - 6 * H + 5 * M)
    assert calls_of(redial) == [("433122", "stage", COUNTY_A, 2)]
    assert "第2次" in redial[0].receipt.body["text"]
    # IVR key 1 on the second attempt acknowledges: no third attempt, no escalation
    status, answer = await h.hook("/hooks/ivr", {"id": redial[0].row.id, "digits": "1"})
    assert status == 200 and answer["ok"] is True and answer["contact"] == COUNTY_A
    assert await h.to(onset - 6 * H + 30 * M) == []
    (ack,) = await h.all(Ack)
    assert (ack.contact_id, ack.source, ack.outbox_id) == (COUNTY_A, "ivr", redial[0].row.id)
    d = await h.division("433122")
    assert (d.reached_by, d.rung, d.unreached_at) == (COUNTY_A, "stage", None)

    # -- township stage at onset - 3h: SMS short code, and a confirmation link ---------------
    towns = await h.to(onset - 3 * H)
    assert calls_of(towns) == [
        ("433122100", "stage", T100_A, 1),
        ("433122101", "stage", T101_A, 1),
    ]
    t100 = next(s for s in towns if s.contact == T100_A).receipt.body
    t101 = next(s for s in towns if s.contact == T101_A).receipt.body
    national = t100["to"].removeprefix("+86")  # gateways report numbers either way
    status, answer = await h.hook(
        "/hooks/reply", {"from": national, "text": f"收到 {t100['reply_code']}"}
    )
    assert status == 200 and answer["ok"] is True and answer["contact"] == T100_A

    # a link scanner opens the link: the page shows the message and acknowledges nothing
    link_path = urlparse(t101["link"]).path
    before = await h.snapshot()
    async with h.http.get(h.base + link_path) as resp:
        page = await resp.text()
        assert resp.status == 200 and "预警叫应确认" in page and "暴雨橙色预警" in page
        assert 'method="post"' in page
    assert await h.snapshot() == before
    async with h.http.post(h.base + link_path) as resp:
        assert resp.status == 200 and "已确认收到" in await resp.text()
    acks = {a.contact_id: a.source for a in await h.all(Ack)}
    assert acks == {COUNTY_A: "ivr", T100_A: "sms", T101_A: "link"}
    assert await h.to(onset - 3 * H + 20 * M) == []

    # -- an Update moves the onset one hour later: the notified are told ---------------------
    upd_at = onset - 3 * H + 30 * M
    h.clock.set(upd_at)
    before = h.gateway.count
    new_onset = onset + H
    await h.feed(
        cap_xml(
            "43312241600000_20250614123000",
            upd_at,
            onset=new_onset,
            expires=T0 + 24 * H,
            msg_type="Update",
            references=[(SENDER, ID, T0)],
        )
    )
    updates = await h.joined(h.gateway.receipts[before:])
    assert {s.contact for s in updates} == {COUNTY_A, T100_A, T101_A}
    assert {(s.row.purpose, s.receipt.body["kind"]) for s in updates} == {("update", "sms")}
    assert all("预警更新" in s.receipt.body["text"] for s in updates)
    (village_stage,) = await h.all(Stage, Stage.level == "village")
    assert (village_stage.state, village_stage.due_at) == ("pending", new_onset - H)
    assert await h.to(onset - H) == []  # the old village time: nothing any more

    # -- village stage at the new onset - 1h; then redials and the escalation ladder ---------
    V = new_onset - H
    timeline: list[tuple[timedelta, str | None, str | None, str, int | None]] = []

    def log(at: timedelta, sent: list[Sent]) -> None:
        timeline.extend((at, *c) for c in calls_of(sent))

    first = await h.to(V)
    log(timedelta(0), first)
    # a bare "1" from village 100200's A person acknowledges their open attempt
    v0 = next(s for s in first if s.division == V1[0]).receipt.body
    status, answer = await h.hook("/hooks/reply", {"from": v0["to"], "text": "1"})
    assert status == 200 and answer["ok"] is True and answer["contact"] == "c-433122100200-a"
    for minutes in (5, 10, 15):
        log(minutes * M, await h.to(V + minutes * M))
    # village 100201's backup answers the first backup attempt by key press
    b = next(s for s in await h.joined(h.gateway.receipts) if s.contact == "c-433122100201-b")
    status, answer = await h.hook("/hooks/ivr", {"id": b.row.id, "digits": "1"})
    assert status == 200 and answer["ok"] is True
    for minutes in (20, 25, 30, 35, 40, 45):
        log(minutes * M, await h.to(V + minutes * M))
    a, bk, sup, duty = "stage", "backup", "superior", "duty"
    expected = [
        *[(0 * M, v, a, f"c-{v}-a", 1) for v in V1],
        *[(k * 5 * M, v, a, f"c-{v}-a", k + 1) for k in (1, 2) for v in V1[1:]],
        (15 * M, V1[1], bk, "c-433122100201-b", 1),  # A failed at V+15: backup
        (15 * M, V1[2], bk, "c-433122101200-b", 1),
        (15 * M, V1[3], sup, T101_A, 1),  # no backup: straight to the superior
        (20 * M, V1[2], bk, "c-433122101200-b", 2),
        (20 * M, V1[3], sup, T101_A, 2),
        (25 * M, V1[2], bk, "c-433122101200-b", 3),
        (25 * M, V1[3], sup, T101_A, 3),
        (30 * M, V1[2], sup, T101_A, 1),
        (30 * M, V1[3], duty, COUNTY_DUTY, 1),
        (35 * M, V1[2], sup, T101_A, 2),
        (35 * M, V1[3], duty, COUNTY_DUTY, 2),
        (40 * M, V1[2], sup, T101_A, 3),
        (40 * M, V1[3], duty, COUNTY_DUTY, 3),
        (45 * M, V1[2], duty, COUNTY_DUTY, 1),  # 101201's duty call failed: ladder ended
    ]
    assert sorted(timeline) == sorted(expected)
    every = await h.joined(h.gateway.receipts)
    sup_text = next(s for s in every if s.row.rung == sup and s.division == V1[3])
    assert "村1-1责任人未应答" in sup_text.receipt.body["text"]
    duty_text = next(s for s in every if s.row.rung == duty and s.division == V1[3])
    assert "村1-1未叫醒" in duty_text.receipt.body["text"]
    d100200, d100201 = await h.division(V1[0]), await h.division(V1[1])
    d101200, d101201 = await h.division(V1[2]), await h.division(V1[3])
    assert d100200.reached_by == "c-433122100200-a" and d100200.reached_source == "sms"
    assert (d100201.reached_by, d100201.rung) == ("c-433122100201-b", "backup")
    assert (d101201.rung, d101201.unreached_at) == ("ended", V + 30 * M)
    assert (d101200.rung, d101200.unreached_at) == ("duty", V + 45 * M)

    # -- Cancel: lift notices to everyone notified; nothing more after -----------------------
    cancel_at = V + 47 * M
    h.clock.set(cancel_at)
    notified = {s.contact for s in every if s.row.purpose == "call"}
    before = h.gateway.count
    await h.feed(
        cap_xml(
            "43312241600000_20250614155000",
            cancel_at,
            msg_type="Cancel",
            references=[(SENDER, ID, T0)],
        )
    )
    lifts = await h.joined(h.gateway.receipts[before:])
    assert {s.contact for s in lifts} == notified and len(lifts) == len(notified) == 10
    assert {(s.row.purpose, s.receipt.body["kind"]) for s in lifts} == {("lift", "sms")}
    assert all("预警解除" in s.receipt.body["text"] for s in lifts)
    for later in (V + 50 * M, V + 55 * M, V + 60 * M, V + 3 * H):
        assert await h.to(later) == []
    (w,) = await h.all(WarningRow)
    assert w.state == "cancelled"
    assert {c.state for c in await h.all(Call)} <= {"acked", "failed", "cancelled"}
    assert await h.all(Outbox, Outbox.state.in_(("pending", "sending"))) == []  # type: ignore[attr-defined]

    # one gateway message per attempt, each accepted exactly once under its own id
    assert_wire_contract(h)
    call_rows = await h.all(Outbox, Outbox.purpose == "call")
    accepted = [r.id for r in h.gateway.receipts if r.ok and r.body["purpose"] == "call"]
    assert sorted(accepted) == sorted(o.id for o in call_rows if o.state == "sent")
    for c in await h.all(Call):
        mine = [o for o in call_rows if o.call_id == c.id and o.state == "sent"]
        assert sorted(o.attempt for o in mine) == list(range(1, c.attempts_made + 1))
    assert len(h.gateway.receipts) == len(accepted) + len(updates) + len(lifts)


def assert_wire_contract(h: Harness) -> None:
    """Contracts §5 for everything the gateway saw: keys, one message per attempt, ids."""
    assert h.gateway.receipts
    for r in h.gateway.receipts:
        assert r.body.keys() >= BODY_KEYS, r.body
        assert r.body["purpose"] in ("call", "update", "lift")
        assert r.body["kind"] in ("voice", "sms")
        assert r.body["warning"] == ID
        assert re.fullmatch(r"\+861\d{10}", r.body["to"])
        assert r.headers["Content-Type"].startswith("application/json")
    # the same id is never sent again once the gateway accepted it
    assert h.gateway.unexpected_repeats() == []
