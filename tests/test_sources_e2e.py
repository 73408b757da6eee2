"""The real sources end to end: the daemon polling the CMA feed, QWeather and a check list.

One in-process ``Daemon`` per test (no scheduler, a ManualClock, a real store on both backends,
real loopback fakes of the three sources, a real gateway fake as the duty channel). Feeds are
polled by calling ``poll_feed``; the feed watch runs after each poll and on ``watch_feeds``;
time moves only when a test moves the clock. Nothing sleeps for a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from factory import county_rows, write_contacts
from gateway_fake import GatewayFake
from source_fakes import CST, RSS_PATH, CmaDoc, SourceFake, nmc_json, qweather_json
from sqlmodel import col, select

from warnd.cli import main
from warnd.config.policy import load_config
from warnd.core.clock import ManualClock
from warnd.desk.views.feeds import feed_alarms
from warnd.desk.views.reader import source
from warnd.edges.daemon import Daemon
from warnd.edges.feeds import Feed, PollReport
from warnd.store.tables import Message, Outbox, WarningRow

T0 = datetime(2025, 6, 14, 8, 16, tzinfo=CST)
M = timedelta(minutes=1)
CAP_ID = "43312241600000_20250614081500"
CAP_SENDER = "Luxi_Meteorological_Observatory"
QW_ALERT, QW_UPDATE = "202506140815105837988676", "202506141100208812736651"
SECRET = b"hook-secret-for-the-sources-tests-631"


def luxi(sent: datetime, **kw: Any) -> CmaDoc:
    ident = f"433122416000{kw.pop('seq', 0):02d}_{sent:%Y%m%d%H%M%S}"
    return CmaDoc(ident, sent, CAP_SENDER, "433122000000", onset=kw.pop("onset", None), **kw)


class Harness:
    def __init__(
        self,
        tmp: Path,
        store_url: str,
        fake: SourceFake,
        *,
        point: str = "433122",
        priorities: tuple[int, int] = (1, 2),
    ):
        self.tmp, self.store_url, self.fake, self.point = tmp, store_url, fake, point
        self.priorities = priorities
        self.clock = ManualClock(T0)
        self.gateway = GatewayFake(now=self.clock.now)
        key = Ed25519PrivateKey.generate()
        fake.account.public_key = key.public_key()
        (tmp / "qw.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (tmp / "hook-secret").write_bytes(SECRET)
        write_contacts(tmp / "contacts", county_rows(townships=2, villages=2))
        self.daemon: Daemon | None = None

    def toml(self, gateway_url: str) -> Path:
        f = self.fake
        text = f"""
[store]
url = "{self.store_url}"
[contacts]
path = "{self.tmp / "contacts"}"
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{self.tmp / "hook-secret"}"

[[feeds]]
name = "cma"
url = "{f.base}{RSS_PATH}"
priority = {self.priorities[0]}
stale_after = "15m"

[[feeds]]
name = "qweather"
type = "qweather"
host = "{f.base}"
priority = {self.priorities[1]}
auth = "jwt"
kid = "{f.account.kid}"
project = "{f.account.project}"
key_file = "{self.tmp / "qw.pem"}"
points = [{{ code = "{self.point}", lat = 28.22, lon = 110.22, name = "泸溪" }}]

[[feeds]]
name = "nmc"
type = "nmc"
url = "{f.base}/rest/findAlarm?pageNo=1&pageSize=300"
grace = "10m"

[channels.gateway]
type = "webhook"
url = "{gateway_url}"
kinds = ["voice", "sms"]
timeout = "5s"

[feed_alarms]
channel = "gateway"
to = ["+8613800000000"]
"""
        path = self.tmp / "warnd.toml"
        path.write_text(text, encoding="utf-8")
        return path

    async def start(self) -> Daemon:
        url = self.gateway.url if self.gateway.port else await self.gateway.start()
        self.config = load_config(self.toml(url))
        self.daemon = Daemon(self.config, clock=self.clock, scheduler=False, port=0)
        await self.daemon.start()
        await self.daemon.settle()
        return self.daemon

    async def restart(self) -> Daemon:
        assert self.daemon is not None
        await self.daemon.stop()
        return await self.start()

    async def stop(self) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
        await self.gateway.stop()

    def feed(self, name: str) -> Feed:
        assert self.daemon is not None
        return next(f for f in self.daemon.feeds if f.name == name)

    async def poll(self, name: str) -> PollReport:
        assert self.daemon is not None
        report = await self.daemon.poll_feed(self.feed(name))
        await self.daemon.settle()
        return report

    async def watch(self) -> tuple[list[str], list[str]]:
        """Run the feed watch and wait for the alarms it sends (their own task)."""
        assert self.daemon is not None
        result = await self.daemon.watch_feeds()
        await self.daemon.settle()
        return result

    async def to(self, when: datetime) -> None:
        assert self.daemon is not None
        self.clock.set(when)
        await self.daemon.wake()
        await self.daemon.settle()

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        assert self.daemon is not None and self.daemon.store is not None
        async with self.daemon.store.read() as s:
            return list((await s.execute(select(model).where(*where))).scalars().all())

    def notices(self) -> list[dict[str, Any]]:
        return [r.body for r in self.gateway.receipts if r.body.get("purpose") == "notice"]


@pytest.fixture
async def fake() -> AsyncIterator[SourceFake]:
    srv = SourceFake()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def h(tmp_path: Path, store_url: str, fake: SourceFake) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, store_url, fake)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


# -- one chain for one warning from two sources --------------------------------------------------


async def test_cap_then_qweather_minutes_apart_run_one_chain(h: Harness) -> None:
    doc = luxi(datetime(2025, 6, 14, 8, 15, tzinfo=CST), onset=T0 + 5 * 60 * M)
    assert doc.identifier == CAP_ID
    h.fake.publish(doc)
    first = await h.poll("cma")
    assert (first.accepted, first.error) == (1, None)
    await h.to(T0 + 4 * M)
    h.fake.point(28.22, 110.22, qweather_json("luxi-alert.json"))
    second = await h.poll("qweather")
    assert (second.items, second.duplicates, second.accepted, second.error) == (1, 1, 0, None)

    (w,) = await h.rows(WarningRow)
    assert (w.key, w.sender) == (CAP_ID, CAP_SENDER)
    msgs = await h.rows(Message)
    assert len(msgs) == 2 and {m.warning_id for m in msgs} == {w.id}
    copy = next(m for m in msgs if m.sender == "qweather")
    assert copy.identifier == QW_ALERT and copy.origin == f"qweather:{QW_ALERT}"
    assert copy.note and f"copy of {CAP_SENDER},{CAP_ID}" in copy.note

    await h.to(T0 + 2 * 60 * M + 45 * M)  # 11:01: the county and township stages fired
    calls = await h.rows(Outbox, col(Outbox.purpose) == "call")
    assert calls and {c.warning_id for c in calls} == {w.id}
    firsts = [c for c in calls if c.attempt == 1 and c.rung == "stage"]
    assert len(firsts) == len({c.contact_id for c in firsts})  # nobody called twice

    # QWeather's update reaches the same chain through the copy; CAP's is then a copy of it
    h.fake.point(28.22, 110.22, qweather_json("luxi-update.json"))
    await h.to(datetime(2025, 6, 14, 11, 1, tzinfo=CST))
    assert (await h.poll("qweather")).accepted == 1
    (w,) = await h.rows(WarningRow)
    assert w.severity == "Extreme"
    update = luxi(
        datetime(2025, 6, 14, 11, 0, tzinfo=CST),
        seq=1,
        msg_type="Update",
        severity="Extreme",
        colour="红色",
        references=f"{CAP_SENDER},{CAP_ID},2025-06-14T08:15:00+08:00",
    )
    h.fake.publish(update)
    assert (await h.poll("cma")).duplicates == 1
    h.fake.point(28.22, 110.22, qweather_json("luxi-cancel.json"))
    await h.to(datetime(2025, 6, 14, 18, 31, tzinfo=CST))
    assert (await h.poll("qweather")).accepted == 1
    (w,) = await h.rows(WarningRow)
    assert w.state == "cancelled"
    assert len(await h.rows(WarningRow)) == 1 and len(await h.rows(Message)) == 5


async def test_issue_times_too_far_apart_are_two_warnings(h: Harness) -> None:
    h.fake.publish(luxi(datetime(2025, 6, 14, 8, 8, tzinfo=CST)))  # 7 minutes before QWeather's
    await h.poll("cma")
    h.fake.point(28.22, 110.22, qweather_json("luxi-alert.json"))
    report = await h.poll("qweather")
    assert report.accepted == 1 and len(await h.rows(WarningRow)) == 2


async def test_later_copy_with_more_area_re_targets_the_chain(
    tmp_path: Path, store_url: str, fake: SourceFake
) -> None:
    """QWeather first (a township point), then CAP for the whole county: one chain, whole area."""
    h = Harness(tmp_path, store_url, fake, point="433122101")
    await h.start()
    try:
        fake.point(28.22, 110.22, qweather_json("luxi-alert.json"))
        assert (await h.poll("qweather")).accepted == 1
        (w,) = await h.rows(WarningRow)
        assert w.area == ["433122101"]
        await h.to(T0 + 3 * M)
        fake.publish(luxi(datetime(2025, 6, 14, 8, 15, tzinfo=CST)))
        report = await h.poll("cma")
        assert report.accepted == 1  # applied to the chain, not a second chain
        (w,) = await h.rows(WarningRow)
        assert w.key == QW_ALERT and set(w.area) == {"433122101", "433122"}
        cap_msg = next(m for m in await h.rows(Message) if m.sender == CAP_SENDER)
        assert cap_msg.warning_id == w.id and "copy of qweather" in (cap_msg.note or "")
    finally:
        await h.stop()


@pytest.mark.parametrize(("priorities", "key"), [((1, 2), CAP_ID), ((2, 1), QW_ALERT)])
async def test_first_round_in_priority_order_the_preferred_copy_runs_the_chain(
    tmp_path: Path, store_url: str, fake: SourceFake, priorities: tuple[int, int], key: str
) -> None:
    """Both sources already hold the warning when the daemon starts: the preferred one wins."""
    fake.publish(luxi(datetime(2025, 6, 14, 8, 15, tzinfo=CST)))
    fake.point(28.22, 110.22, qweather_json("luxi-alert.json"))
    h = Harness(tmp_path, store_url, fake, priorities=priorities)
    daemon = await h.start()
    try:
        assert [f.name for f in daemon.feeds][:2] == (
            ["cma", "qweather"] if priorities == (1, 2) else ["qweather", "cma"]
        )
        reports = await daemon.poll_all()
        assert sum(r.accepted for r in reports) == 1 and sum(r.duplicates for r in reports) == 1
        (w,) = await h.rows(WarningRow)
        assert w.key == key
    finally:
        await h.stop()


# -- an alarm when a warning is missing ----------------------------------------------------------


async def test_missing_warning_alarm_after_grace_once_also_across_a_restart(h: Harness) -> None:
    h.fake.nmc = nmc_json()  # names Luxi's warning, and others not ours
    await h.poll("nmc")
    assert h.notices() == []
    await h.to(T0 + 8 * M)  # issued 08:15, seen 08:16: deadline 08:26
    await h.watch()
    assert h.notices() == []
    await h.to(T0 + 10 * M)
    raised, _ = await h.watch()
    assert raised == [f"missing:{CAP_ID}"]  # not Hebei's, not the neighbour's, not the province's
    (notice,) = h.notices()
    assert notice["to"] == "+8613800000000" and notice["purpose"] == "notice"
    assert CAP_ID in notice["text"] and "预警未送达" in notice["text"]
    assert notice["id"].startswith("feed-alarm-")
    for _ in range(3):
        await h.to(h.clock.now() + M)
        await h.poll("nmc")
    assert len(h.notices()) == 1

    await h.restart()
    await h.daemon.poll_all()  # type: ignore[union-attr]
    await h.to(h.clock.now() + 14 * M)
    await h.daemon.poll_all()  # type: ignore[union-attr]  (every source answers: none stale)
    await h.watch()
    assert len(h.notices()) == 1  # recorded in the store: not sent again
    assert h.daemon.store is not None
    (alarm,) = await feed_alarms(source(h.daemon.store))
    assert (alarm.kind, alarm.subject, alarm.sent) == ("missing", CAP_ID, True)

    h.fake.publish(luxi(datetime(2025, 6, 14, 8, 15, tzinfo=CST)))  # it finally arrives
    await h.poll("cma")
    assert await feed_alarms(source(h.daemon.store)) == ()
    cleared = h.notices()[-1]
    assert len(h.notices()) == 2 and "解除" in cleared["text"]


async def test_an_alarm_the_channel_refused_is_sent_again_under_its_id(h: Harness) -> None:
    h.fake.nmc = nmc_json()
    h.gateway.fail_next(1, 400)
    await h.poll("nmc")
    await h.to(T0 + 10 * M)
    await h.watch()
    (first,) = h.notices()
    assert h.gateway.receipts[-1].status == 400
    await h.watch()  # a pause after a failure: not at once
    assert len(h.notices()) == 1
    await h.to(T0 + 10 * M + timedelta(seconds=31))
    await h.watch()
    again = h.notices()
    assert len(again) == 2 and again[1]["id"] == first["id"] and h.gateway.receipts[-1].ok
    await h.to(T0 + 12 * M)
    await h.watch()
    assert len(h.notices()) == 2  # delivered: never again


async def test_no_alarm_when_a_copy_from_another_source_arrived(h: Harness) -> None:
    h.fake.nmc = nmc_json()
    h.fake.point(28.22, 110.22, qweather_json("luxi-alert.json"))
    await h.poll("qweather")  # QWeather delivered it (under its own id)
    await h.poll("nmc")
    await h.to(T0 + 14 * M)
    await h.poll("cma")  # answers (with nothing): not stale
    await h.to(T0 + 25 * M)  # well past the deadline (08:26)
    raised, _ = await h.watch()
    assert raised == [] and h.notices() == []


async def test_silent_feed_alarm_and_recovery(h: Harness) -> None:
    await h.poll("cma")  # answered at 08:16
    h.fake.fail["/v2/cap-alerts/cn-cma-xx/rss.xml"] = [500] * 100
    await h.to(T0 + 10 * M)
    await h.poll("cma")
    assert h.notices() == []
    await h.to(T0 + 16 * M)
    await h.poll("cma")
    texts = [n["text"] for n in h.notices()]
    assert len(texts) == 1 and "「cma」" in texts[0] and "没有响应" in texts[0]
    health = {x.name: x for x in h.daemon.alarms.health()}  # type: ignore[union-attr]
    assert health["cma"].stale and not health["qweather"].stale  # qweather: 15m not yet
    await h.to(T0 + 17 * M)
    await h.poll("cma")
    assert len(h.notices()) == 1
    h.fake.fail.clear()
    await h.poll("cma")
    assert len(h.notices()) == 2 and "已恢复" in h.notices()[-1]["text"]


# -- the banner of `warnd status` ----------------------------------------------------------------


def test_status_banner_shows_the_alarm(tmp_path: Path) -> None:
    async def scenario() -> Path:
        fake = SourceFake()
        await fake.start()
        h = Harness(tmp_path, f"sqlite:///{tmp_path / 'warnd.db'}", fake)
        try:
            await h.start()
            fake.nmc = nmc_json()
            await h.poll("nmc")
            await h.to(T0 + 11 * M)
            await h.watch()
            return h.tmp / "warnd.toml"
        finally:
            await h.stop()
            await fake.stop()

    config = asyncio.run(scenario())
    clock = tmp_path / "clock"
    clock.write_text((T0 + 12 * M).isoformat(), encoding="utf-8")
    args = ["status", "--config", str(config), "--clock-file", str(clock)]
    shown = CliRunner().invoke(main, args)
    assert shown.exit_code == 0, shown.output
    assert "预警来源告警" in shown.output and CAP_ID in shown.output
    as_json = CliRunner().invoke(main, [*args, "--json"])
    import json

    (alarm,) = json.loads(as_json.output)["feed_alarms"]
    assert (alarm["kind"], alarm["subject"], alarm["feed"]) == ("missing", CAP_ID, "nmc")
