"""End to end through real providers' formats: warning → signed voice request to a loopback
fake → the fake's callback → the person acknowledged (key 1) or not (no key: redial follows).

One in-process daemon per test (ManualClock, no scheduler, port 0; the store is SQLite and,
with WARND_TEST_PG_URL, PostgreSQL too), configured
with the ``aliyun`` or ``tencent`` channel pointed at the fakes of tests/vendor_fakes.py and a
WeCom duty-group robot. Time moves only when a test advances the clock and wakes the daemon.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from factory import cap_xml, county_rows, write_contacts
from sqlmodel import select
from vendor_fakes import AliyunFake, Call, TencentFake, WecomFake

from warnd.config.policy import load_config
from warnd.core.clock import ManualClock
from warnd.edges.daemon import Daemon
from warnd.edges.vendors import aliyun_voice_event, tencent_voice_event
from warnd.store.tables import Ack, Division, Outbox, Receipt
from warnd.store.tables import Call as CallRow

CST = timezone(timedelta(hours=8))
T0 = datetime(2025, 6, 14, 8, 0, tzinfo=CST)
ONSET = T0 + timedelta(hours=8)
COUNTY_STAGE = ONSET - timedelta(hours=6)
M = timedelta(minutes=1)
ID = "43312241600000_20250614080000"
TOKEN = "cb-token-0123456789abcdef"
ALI_ID, ALI_SECRET = "LTAI-e2e", "aliyun-e2e-secret"
TX_ID, TX_KEY = "AKIDe2e", "tencent-e2e-key"
WECOM_KEY = "wecom-e2e-key"
COUNTY_A, COUNTY_A_PHONE = "c-433122-a", "13810000001"


def write_config(tmp: Path, channel: str, store_url: str) -> Path:
    for name, value in {
        "hook-secret": "hook-secret-e2e-0123456789abcdefghij",
        "cb-token": TOKEN,
        "ali-secret": ALI_SECRET,
        "tx-key": TX_KEY,
        "wecom-key": WECOM_KEY,
    }.items():
        (tmp / name).write_text(value + "\n")
    text = f"""
[store]
url = "{store_url}"
[contacts]
path = "{tmp / "contacts"}"
[ack]
window = "5m"
attempts = 3
[listen]
host = "127.0.0.1"
port = 0
[hooks]
secret_file = "{tmp / "hook-secret"}"
[[feeds]]
name = "incoming"
path = "{tmp / "incoming"}"
{channel}
"""
    path = tmp / "warnd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def aliyun_table(url: str, tmp: Path, kinds: str = '["voice", "sms"]') -> str:
    return f"""
[channels.ali]
type = "aliyun"
kinds = {kinds}
rate = "50/s"
endpoint = "{url}"
access_key_id = "{ALI_ID}"
access_key_secret_file = "{tmp / "ali-secret"}"
callback_token_file = "{tmp / "cb-token"}"
sms_sign_name = "泸溪县应急管理局"
sms_template = "SMS_463730001"
sms_params = {{ content = "text" }}
called_show_number = "07434222110"
ivr_start_code = "TTS_290000001"
ivr_confirm_code = "TTS_290000002"
ivr_params = {{ content = "text" }}
"""


def tencent_table(url: str, tmp: Path) -> str:
    return f"""
[channels.tx]
type = "tencent"
kinds = ["voice", "sms"]
endpoint = "{url}"
secret_id = "{TX_ID}"
secret_key_file = "{tmp / "tx-key"}"
callback_token_file = "{tmp / "cb-token"}"
sms_sdk_app_id = "1400006666"
sms_sign_name = "泸溪县应急管理局"
sms_template_id = "1110"
voice_sdk_app_id = "1400009099"
voice_template_id = "4356"
"""


def wecom_table(url: str, tmp: Path) -> str:
    return f"""
[channels.county-duty]
type = "wecom"
kinds = ["im"]
endpoint = "{url}"
key_file = "{tmp / "wecom-key"}"
notify = ["call", "lift"]
divisions = ["433122"]
"""


class Harness:
    def __init__(self, tmp: Path, channel: str, store_url: str) -> None:
        self.tmp = tmp
        self.clock = ManualClock(T0)
        write_contacts(tmp / "contacts", county_rows(townships=0, villages=0))
        self.config = load_config(write_config(tmp, channel, store_url))
        self.daemon = Daemon(self.config, clock=self.clock, scheduler=False, port=0)

    async def start(self) -> None:
        await self.daemon.start()
        self.base = f"http://127.0.0.1:{self.daemon.bound_port}"

    def hook(self, channel: str, event: str, token: str = TOKEN) -> str:
        return f"{self.base}/hooks/vendor/{channel}/{token}/{event}"

    async def feed(self, data: bytes) -> None:
        folder = self.tmp / "incoming"
        folder.mkdir(exist_ok=True)
        path = folder / "001.xml"
        path.write_bytes(data)
        old = time.time() - 60
        os.utime(path, (old, old))
        report = await self.daemon.poll_feed(self.daemon.feeds[0])
        assert (report.accepted, report.error) == (1, None)
        await self.daemon.settle()

    async def to(self, when: datetime) -> None:
        self.clock.set(when)
        await self.daemon.wake()
        await self.daemon.settle()

    async def all(self, model: Any, *where: Any) -> list[Any]:
        async with self.daemon.store.read() as s:  # type: ignore[union-attr]
            return list((await s.execute(select(model).where(*where))).scalars().all())

    async def snapshot(self) -> tuple[Any, ...]:
        acks = sorted((a.contact_id, a.source) for a in await self.all(Ack))
        calls = sorted((c.id, c.state, c.attempts_made) for c in await self.all(CallRow))
        receipts = sorted((r.status, r.outbox_id) for r in await self.all(Receipt))
        return tuple(acks), tuple(calls), tuple(receipts)

    async def county_call(self) -> CallRow:
        (call,) = await self.all(CallRow, CallRow.contact_id == COUNTY_A)
        return call


@pytest.fixture
async def ali(
    tmp_path: Path, store_url: str
) -> AsyncIterator[tuple[Harness, AliyunFake, WecomFake]]:
    fake, group = AliyunFake(ALI_ID, ALI_SECRET), WecomFake(WECOM_KEY)
    url, group_url = await fake.start(), await group.start()
    channels = aliyun_table(url, tmp_path) + wecom_table(group_url, tmp_path)
    h = Harness(tmp_path, channels, store_url)
    await h.start()
    try:
        yield h, fake, group
    finally:
        await h.daemon.stop()
        await fake.stop()
        await group.stop()


def ivr_calls(fake: AliyunFake) -> list[Call]:
    return [c for c in fake.calls if c.params["Action"] == "IvrCall"]


async def test_aliyun_key_press_acknowledges_and_no_key_redials(
    ali: tuple[Harness, AliyunFake, WecomFake],
) -> None:
    h, fake, group = ali
    await h.feed(cap_xml(ID, T0, onset=ONSET, expires=T0 + timedelta(hours=24)))
    await h.to(COUNTY_STAGE)

    # the warning reaches the provider as a signed IvrCall naming our attempt in OutId
    assert fake.rejected == []
    (first,) = ivr_calls(fake)
    assert first.params["CalledNumber"] == COUNTY_A_PHONE
    (row,) = await h.all(Outbox, Outbox.id == first.params["OutId"])
    assert (row.contact_id, row.purpose, row.attempt, row.state) == (COUNTY_A, "call", 1, "sent")
    assert row.channel == "ali/voice"
    # the county duty group heard about it, the person @-mentioned; nobody else was called
    (post,) = group.posts
    assert post.body["text"]["mentioned_mobile_list"] == [COUNTY_A_PHONE]
    assert "正在叫应（1人）" in post.body["text"]["content"]
    assert len(fake.calls) == 1

    # a callback with a wrong token changes nothing
    before = await h.snapshot()
    report = fake.voice_report(first, dtmf="1")
    status, _ = await fake.push(h.hook("ali", "voice-report", token="x" * 24), [report])
    assert status == 403 and await h.snapshot() == before

    # answered, heard it, pressed nothing: recorded, not acknowledged
    status, answer = await fake.push(h.hook("ali", "voice-report"), [fake.voice_report(first)])
    assert (status, answer) == (200, {"code": 0, "msg": "接收成功"})
    call = await h.county_call()
    assert (call.state, call.attempts_made) == ("active", 1)
    assert await h.all(Ack) == []
    (receipt,) = await h.all(Receipt)
    assert (receipt.status, receipt.outbox_id, receipt.contact_id) == ("no_key", row.id, COUNTY_A)

    # nothing before the window is over; then the redial
    await h.to(COUNTY_STAGE + 5 * M - timedelta(seconds=1))
    assert len(ivr_calls(fake)) == 1
    await h.to(COUNTY_STAGE + 5 * M)
    second = ivr_calls(fake)[1]
    assert second.params["OutId"] != first.params["OutId"]
    (row2,) = await h.all(Outbox, Outbox.id == second.params["OutId"])
    assert (row2.attempt, row2.contact_id) == (2, COUNTY_A)
    assert "第2次呼叫（前次未应答）" in group.posts[1].body["text"]["content"]

    # key 1 on the redial: acknowledged (a re-pushed report counts once)
    pressed = fake.voice_report(second, dtmf="1")
    for _ in range(2):
        status, answer = await fake.push(h.hook("ali", "voice-report"), [pressed])
        assert status == 200 and answer["code"] == 0
    (ack,) = await h.all(Ack)
    assert (ack.contact_id, ack.source, ack.outbox_id) == (COUNTY_A, "ivr", row2.id)
    call = await h.county_call()
    assert (call.state, call.attempts_made) == ("acked", 2)
    (division,) = await h.all(Division, Division.code == "433122")
    assert (division.reached_by, division.rung) == (COUNTY_A, "stage")
    assert sorted(r.status for r in await h.all(Receipt)) == ["keypress", "no_key"]

    # no third attempt, no escalation to the backup
    await h.to(COUNTY_STAGE + 30 * M)
    assert len(fake.calls) == 2


async def test_aliyun_fallback_to_sms_and_sms_reply(tmp_path: Path, store_url: str) -> None:
    fake = AliyunFake(ALI_ID, ALI_SECRET)
    url = await fake.start()
    h = Harness(tmp_path, aliyun_table(url, tmp_path), store_url)
    await h.start()
    try:
        # the voice call fails for good (number refused): the same attempt goes out as SMS
        fake.answer_next(400, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "号码格式错误"})
        await h.feed(cap_xml(ID, T0, onset=ONSET, expires=T0 + timedelta(hours=24)))
        await h.to(COUNTY_STAGE)
        voice, sms = fake.calls
        assert voice.params["Action"] == "IvrCall" and sms.params["Action"] == "SendSms"
        # the SMS is a message of its own towards the provider: the attempt's id + "-1"
        assert sms.params["OutId"] == voice.params["OutId"] + "-1"
        (row,) = await h.all(Outbox, Outbox.id == voice.params["OutId"])
        assert (row.state, row.channel) == ("sent", "ali/sms")

        # a delivery report is recorded and acknowledges nothing
        report = {
            "phone_number": COUNTY_A_PHONE,
            "send_time": "2025-06-14 10:00:01",
            "report_time": "2025-06-14 10:00:05",
            "success": True,
            "err_code": "DELIVERED",
            "err_msg": "用户接收成功",
            "sms_size": "2",
            "biz_id": "biz-1",
            "out_id": sms.params["OutId"],  # what the provider echoes: the SMS's own id
        }
        status, _ = await fake.push(h.hook("ali", "sms-report"), [report])
        assert status == 200 and await h.all(Ack) == []
        (receipt,) = await h.all(Receipt)
        assert (receipt.status, receipt.outbox_id, receipt.ref) == ("delivered", row.id, "biz-1")

        # a large batch (beyond the hooks' 64 KiB body limit) of reports for other messages
        batch = [
            {**report, "phone_number": f"139{n:08d}", "biz_id": f"other-{n}", "out_id": ""}
            for n in range(300)
        ]
        assert len(json.dumps(batch, ensure_ascii=False).encode()) > 64 * 1024
        status, _ = await fake.push(h.hook("ali", "sms-report"), batch)
        assert status == 200 and len(await h.all(Receipt)) == 301
        assert await h.all(Ack) == []

        # the person answers the SMS with "1" (上行短信): acknowledged
        up = {
            "phone_number": COUNTY_A_PHONE,
            "send_time": "2025-06-14 10:01:00",
            "content": "1",
            "sign_name": "泸溪县应急管理局",
            "dest_code": "1234",
            "sequence_id": 1234567890,
        }
        status, answer = await fake.push(h.hook("ali", "sms-up"), [up])
        assert (status, answer["code"]) == (200, 0)
        (ack,) = await h.all(Ack)
        assert (ack.contact_id, ack.source, ack.outbox_id) == (COUNTY_A, "sms", row.id)
    finally:
        await h.daemon.stop()
        await fake.stop()


async def test_tencent_answered_is_not_an_ack_key_one_is(tmp_path: Path, store_url: str) -> None:
    clock_box: list[ManualClock] = []
    fake = TencentFake(TX_ID, TX_KEY, now=lambda: clock_box[0].now())
    url = await fake.start()
    h = Harness(tmp_path, tencent_table(url, tmp_path), store_url)
    clock_box.append(h.clock)
    await h.start()
    try:
        await h.feed(cap_xml(ID, T0, onset=ONSET, expires=T0 + timedelta(hours=24)))
        await h.to(COUNTY_STAGE)
        assert fake.rejected == []
        (first,) = fake.calls
        assert first.headers["X-TC-Action"] == "SendTtsVoice"
        assert first.params["CalledNumber"] == "+86" + COUNTY_A_PHONE
        (submitted,) = await h.all(Receipt)
        assert (submitted.status, submitted.outbox_id) == (
            "submitted",
            first.params["SessionContext"],
        )
        callid = submitted.ref
        assert callid and callid.startswith("call-")

        def prompt(cid: str, result: str) -> dict[str, Any]:
            return {
                "voiceprompt_callback": {
                    "result": result,
                    "accept_time": "1749866400",
                    "call_from": "",
                    "callid": cid,
                    "end_calltime": "1749866420",
                    "fee": "1",
                    "mobile": COUNTY_A_PHONE,
                    "nationcode": "86",
                    "start_calltime": "1749866390",
                }
            }

        def key(cid: str, keypress: str) -> dict[str, Any]:
            return {
                "voicekey_callback": {
                    "call_from": "",
                    "callid": cid,
                    "keypress": keypress,
                    "mobile": COUNTY_A_PHONE,
                    "nationcode": "86",
                }
            }

        # wrong token: 403, nothing recorded
        status, _ = await fake.push(h.hook("tx", "voice", token="y" * 20), key(callid, "1"))
        assert status == 403 and await h.all(Ack) == []
        # picked up and heard, then pressed 2: two receipts, no acknowledgement
        for payload in (prompt(callid, "0"), key(callid, "2")):
            status, answer = await fake.push(h.hook("tx", "voice"), payload)
            assert (status, answer) == (200, {"result": 0, "errmsg": "OK"})
        assert await h.all(Ack) == []
        statuses = sorted((r.status, r.outbox_id) for r in await h.all(Receipt))
        assert statuses == [(s, submitted.outbox_id) for s in ("answered", "no_key", "submitted")]
        assert (await h.county_call()).state == "active"

        # the redial after the window; key 1 on it acknowledges
        await h.to(COUNTY_STAGE + 5 * M)
        second = fake.calls[1]
        (sub2,) = await h.all(Receipt, Receipt.outbox_id == second.params["SessionContext"])
        assert sub2.ref != callid
        status, _ = await fake.push(h.hook("tx", "voice"), key(str(sub2.ref), "1"))
        assert status == 200
        (ack,) = await h.all(Ack)
        assert (ack.contact_id, ack.source, ack.outbox_id) == (COUNTY_A, "ivr", sub2.outbox_id)
        assert (await h.county_call()).state == "acked"
        await h.to(COUNTY_STAGE + 30 * M)
        assert len(fake.calls) == 2
    finally:
        await h.daemon.stop()
        await fake.stop()


@pytest.mark.parametrize(
    ("item", "status", "ack"),
    [
        ({"status_code": "200000", "dtmf": "21", "out_id": "m"}, "keypress", True),
        ({"status_code": "200000", "dtmf": "2", "out_id": "m"}, "no_key", False),
        ({"status_code": "200001", "dtmf": "", "out_id": "m"}, "no_key", False),
        ({"status_code": "200003", "dtmf": "", "out_id": "m"}, "no_answer", False),
        ({"status_code": "200010", "out_id": "m"}, "no_answer", False),
        ({"status_code": "200004", "out_id": "m"}, "failed", False),
        (
            {"status_code": "200102", "status_time": "2025-06-14 08:00:05", "out_id": "m"},
            "answered",
            False,
        ),
        (
            {"status_code": "200201", "status_time": "2025-06-14 08:00:03", "out_id": "m"},
            None,
            False,
        ),
    ],
)
def test_aliyun_voice_reports_map_to_receipts(
    item: dict[str, Any], status: str | None, ack: bool
) -> None:
    event = aliyun_voice_event(item)
    if status is None:
        assert event is None  # ringing: wait for the call record
        return
    assert event is not None and (event.status, event.ack, event.outbox_id) == (status, ack, "m")


def test_tencent_voice_callbacks_map_to_receipts() -> None:
    fail = {
        "voicefailure_callback": {
            "callid": "c1",
            "failure_code": 8,
            "failure_reason": "空号",
            "mobile": COUNTY_A_PHONE,
            "nationcode": "86",
        }
    }
    event = tencent_voice_event(fail, "tx")
    assert (event.status, event.ack, event.ref, event.phone) == (
        "failed",
        False,
        "c1",
        "+86" + COUNTY_A_PHONE,
    )
    missed = {
        "voiceprompt_callback": {"result": "1", "callid": "c2", "mobile": "1", "nationcode": "86"}
    }
    assert tencent_voice_event(missed, "tx").status == "no_answer"
    with pytest.raises(ValueError):
        tencent_voice_event({"something": {}}, "tx")
