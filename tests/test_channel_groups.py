"""WeCom and DingTalk group robots: webhook formats, DingTalk's signed webhook, @-mentions,
duty-group digests (purpose / division filters), error classification, config rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pytest
from factory import county_rows, write_contacts
from vendor_fakes import DingtalkFake, WecomFake

from warnd.config.policy import ChannelConfig
from warnd.core import directory as directory_mod
from warnd.core.clock import ManualClock
from warnd.core.directory import Directory
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.edges.channels import Outbound, build_channel, check_channel
from warnd.edges.channels import dingtalk as dt
from warnd.edges.channels.groups import clip, digest
from warnd.engine.outbox import Attempt

T0 = datetime(2025, 6, 14, 0, 15, 30, tzinfo=UTC)
KEY, TOKEN, SECRET = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa", "ding-token-631", "SECtest631secret"
HEADLINE = "【演练】【预警叫应】泸溪县气象台发布暴雨橙色预警信号"


def outbound(**changes: Any) -> Outbound:
    fields: dict[str, Any] = {
        "id": "m1",
        "to": "+8613810000004",
        "kind": "im",
        "purpose": "call",
        "text": f"{HEADLINE}。区域：镇0。请按1确认。",
        "warning": "W1",
        "contact": "c-433122100-a",
    }
    fields.update(changes)
    return Outbound(**fields)


def claimed(
    contact: str,
    phone: str,
    *,
    purpose: str = "call",
    attempt: int | None = 1,
    rung: str | None = "stage",
    warning: str = "W1",
) -> Attempt:
    text = (
        f"{HEADLINE}。区域：x。请按1确认。"
        if purpose == "call"
        else "【演练】【预警解除】暴雨已解除。"
    )
    return Attempt(
        id=f"id-{contact}-{attempt}",
        to=phone,
        purpose=purpose,
        text=text,
        warning=warning,
        contact=contact,
        drill=True,
        attempt=attempt if purpose == "call" else None,
        rung=rung if purpose == "call" else None,
        reply_code=None,
        token=None,
        call_id=None,
        tries=0,
    )


@pytest.fixture
def people(tmp_path: Path) -> Directory:
    write_contacts(tmp_path / "contacts", county_rows(townships=2, villages=2))
    directory, problems = directory_mod.load(tmp_path / "contacts")
    assert problems == []
    return directory


def cfg(type_: str, url: str, tmp: Path, **options: Any) -> ChannelConfig:
    (tmp / "secret").write_text(SECRET)
    (tmp / "key").write_text(KEY if type_ == "wecom" else TOKEN)
    opts: dict[str, Any] = {"endpoint": url}
    if type_ == "wecom":
        opts["key_file"] = str(tmp / "key")
    else:
        opts["access_token_file"] = str(tmp / "key")
        opts["secret_file"] = str(tmp / "secret")
    opts.update({k: v for k, v in options.items() if v is not None})
    for k in [k for k, v in options.items() if v is None]:
        opts.pop(k, None)
    return ChannelConfig("duty", type_, kinds=("im",), options=MappingProxyType(opts))


@pytest.fixture
async def wecom() -> AsyncIterator[WecomFake]:
    f = WecomFake(KEY)
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
async def ding() -> AsyncIterator[DingtalkFake]:
    f = DingtalkFake(TOKEN, SECRET, now=lambda: T0)
    await f.start()
    yield f
    await f.stop()


# ---- DingTalk's signature -----------------------------------------------------------------


def test_dingtalk_sign_follows_the_documented_recipe() -> None:
    ts = 1749860130000
    mac = hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
    assert dt.sign(SECRET, ts) == quote_plus(base64.b64encode(mac).decode())
    # url-encoded exactly once: decoding gives back the base64 of the 32-byte HMAC
    assert base64.b64decode(unquote_plus(dt.sign(SECRET, ts))) == mac


# ---- routes: one person's message in the group ----------------------------------------------


async def test_wecom_route_mentions_the_person(wecom: WecomFake, tmp_path: Path) -> None:
    ch = build_channel(cfg("wecom", wecom.url, tmp_path), clock=ManualClock(T0))
    try:
        await ch.send(outbound())
    finally:
        await ch.aclose()
    (post,) = wecom.posts
    assert post.query == {"key": KEY}
    assert post.body == {
        "msgtype": "text",
        "text": {"content": outbound().text, "mentioned_mobile_list": ["13810000004"]},
    }


async def test_dingtalk_signed_route(ding: DingtalkFake, tmp_path: Path) -> None:
    ch = build_channel(cfg("dingtalk", ding.url, tmp_path, keyword="预警"), clock=ManualClock(T0))
    try:
        await ch.send(outbound(text="暴雨橙色信号。请按1确认。"))
    finally:
        await ch.aclose()
    (post,) = ding.posts  # the fake accepted the signature
    assert post.query["timestamp"] == str(int(T0.timestamp() * 1000))
    assert post.body["at"] == {"atMobiles": ["13810000004"], "isAtAll": False}
    assert post.body["text"]["content"] == "预警 暴雨橙色信号。请按1确认。\n@13810000004"


async def test_dingtalk_wrong_secret_is_permanent(ding: DingtalkFake, tmp_path: Path) -> None:
    c = cfg("dingtalk", ding.url, tmp_path)
    (tmp_path / "secret").write_text("SECwrong")
    ch = build_channel(c, clock=ManualClock(T0))
    try:
        with pytest.raises(PermanentError, match="310000"):
            await ch.send(outbound())
    finally:
        await ch.aclose()
    assert ding.posts == []


@pytest.mark.parametrize(
    ("robot", "errcode", "error"),
    [
        ("wecom", 45009, TransientError),
        ("wecom", 93000, PermanentError),
        ("wecom", -1, TransientError),
        ("dingtalk", 130101, TransientError),
        ("dingtalk", 310000, PermanentError),
        ("dingtalk", 300001, PermanentError),
    ],
)
async def test_error_codes(
    wecom: WecomFake, ding: DingtalkFake, tmp_path: Path, robot: str, errcode: int, error: type
) -> None:
    fake = wecom if robot == "wecom" else ding
    fake.answer_next(200, {"errcode": errcode, "errmsg": "fake"})
    ch = build_channel(cfg(robot, fake.url, tmp_path), clock=ManualClock(T0))
    try:
        with pytest.raises(error, match=str(errcode)):
            await ch.send(outbound())
    finally:
        await ch.aclose()


# ---- digests: the duty group hears about a batch -----------------------------------------


def test_digest_groups_by_purpose_rung_and_attempt(people: Directory) -> None:
    batch = [
        claimed("c-433122100-a", "+8613810000004"),
        claimed("c-433122101-a", "+8613810000010"),
        claimed("c-433122100200-a", "+8613810000006", attempt=2),
        claimed("c-433122100200-b", "+8613810000007", rung="backup"),
        claimed("c-433122100-a", "+8613810000004", purpose="lift"),
    ]
    posts = digest(batch, people, max_names=30)
    assert [p[1] for p in posts] == [
        ["13810000004", "13810000010"],
        ["13810000006"],
        ["13810000007"],
        ["13810000004"],
    ]
    first, redial, backup, lift = (p[0] for p in posts)
    assert first.splitlines() == [
        HEADLINE,
        "正在叫应（2人）：",
        "镇0镇长0、镇1镇长1",
        "请被呼叫的责任人接听电话并按1确认；群内消息不算确认。",
    ]
    assert "第2次呼叫（前次未应答）（1人）" in redial and "村0-0村支书0-0" in redial
    assert "正在叫应（B角）（1人）" in backup and "村主任0-0" in backup
    assert lift.splitlines()[:2] == ["【演练】【预警解除】暴雨已解除", "已发送预警解除（1人）："]


def test_digest_caps_the_names(people: Directory) -> None:
    batch = [claimed(f"c-{i}", f"+86138100000{i:02d}") for i in range(40)]
    ((text, mobiles),) = digest(batch, people, max_names=5)
    assert len(mobiles) == 5 and text.splitlines()[1] == "正在叫应（40人）："
    assert text.splitlines()[2].endswith("c-4 等共40人")


def test_clip_keeps_whole_characters() -> None:
    assert clip("预警" * 2000, 2048).encode().__len__() <= 2048
    assert clip("short", 10) == "short"


async def test_observe_filters_by_purpose_and_division(
    wecom: WecomFake, people: Directory, tmp_path: Path
) -> None:
    c = cfg("wecom", wecom.url, tmp_path, notify=["call", "lift"], divisions=["433122100"])
    ch = build_channel(c, clock=ManualClock(T0))
    batch = [
        claimed("c-433122100-a", "+8613810000004"),  # township 100: kept
        claimed("c-433122101-a", "+8613810000010"),  # township 101: another group's
        claimed("c-433122100200-a", "+8613810000006"),  # a village of 100: kept
        claimed("c-433122100-a", "+8613810000004", purpose="update"),  # not in notify
    ]
    try:
        assert await ch.observe(batch, people) == 1  # type: ignore[attr-defined]
    finally:
        await ch.aclose()
    (post,) = wecom.posts
    assert post.body["text"]["mentioned_mobile_list"] == ["13810000004", "13810000006"]
    assert "（2人）" in post.body["text"]["content"]


async def test_observe_never_raises(wecom: WecomFake, people: Directory, tmp_path: Path) -> None:
    wecom.answer_next(200, {"errcode": 93000, "errmsg": "invalid webhook url"})
    ch = build_channel(cfg("wecom", wecom.url, tmp_path, mention=False), clock=ManualClock(T0))
    try:
        batch = [claimed("c-433122100-a", "+8613810000004")]
        assert await ch.observe(batch, people) == 0  # type: ignore[attr-defined]
        assert await ch.observe(batch, people) == 1  # type: ignore[attr-defined]
    finally:
        await ch.aclose()
    assert "mentioned_mobile_list" not in wecom.posts[0].body["text"]


# ---- config ---------------------------------------------------------------------------------


def test_config_rules(tmp_path: Path) -> None:
    check_channel(cfg("wecom", "http://127.0.0.1:1", tmp_path))
    check_channel(cfg("dingtalk", "http://127.0.0.1:1", tmp_path, secret_file=None))
    bad_kinds = ChannelConfig(
        "duty", "wecom", kinds=("im", "sms"), options=MappingProxyType({"key_env": "K"})
    )
    cases: dict[str, ChannelConfig] = {
        "channels.duty.kinds": bad_kinds,
        "channels.duty.key": cfg("wecom", "http://127.0.0.1:1", tmp_path, key_file=None),
        "channels.duty.access_token": cfg(
            "dingtalk", "http://127.0.0.1:1", tmp_path, access_token_file=None
        ),
        "channels.duty.notify": cfg("wecom", "http://127.0.0.1:1", tmp_path, notify=["ack"]),
        "channels.duty.divisions": cfg("wecom", "http://127.0.0.1:1", tmp_path, divisions=["x1"]),
        "channels.duty.mention": cfg("wecom", "http://127.0.0.1:1", tmp_path, mention="yes"),
    }
    for field, bad in cases.items():
        with pytest.raises(ConfigError) as err:
            check_channel(bad)
        assert err.value.field == field, (field, str(err.value))


# ---- a person who names the group channel in the contacts' channels column -----------------


class _FailingVoice:
    """A voice channel that refuses every number (permanent), to force the fallback."""

    name = "voice-gw"
    kinds = frozenset({"voice", "sms"})

    async def send(self, msg: Outbound) -> None:
        raise PermanentError("number refused")

    async def aclose(self) -> None:
        return None


async def test_named_group_channel_is_a_fallback_route(wecom: WecomFake, tmp_path: Path) -> None:
    from warnd.edges.channels.ratelimit import Limiter
    from warnd.edges.dispatch import Dispatcher

    group = build_channel(cfg("wecom", wecom.url, tmp_path), clock=ManualClock(T0))
    voice = _FailingVoice()
    dispatcher = Dispatcher(
        {"voice-gw": voice, "duty": group},
        {"voice-gw": Limiter.unlimited(), "duty": Limiter.unlimited()},
    )
    try:
        # default routes never pick a robot for a call; a person's list may name it
        assert [(c.name, k) for c, k in dispatcher.routes("call")] == [
            ("voice-gw", "voice"),
            ("voice-gw", "sms"),
        ]
        routes = dispatcher.routes("call", ("voice-gw", "duty"))
        assert [(c.name, k) for c, k in routes] == [("voice-gw", "voice"), ("duty", "im")]
        msg = claimed("c-433122100-a", "+8613810000004")
        sent = await dispatcher.send(msg, _Person(("voice-gw", "duty")))  # type: ignore[arg-type]
        assert (sent.ok, sent.channel, sent.kind) == (True, "duty", "im")
    finally:
        await dispatcher.aclose()
    (post,) = wecom.posts
    assert post.body["text"]["mentioned_mobile_list"] == ["13810000004"]
    assert post.body["text"]["content"] == msg.text


class _Person:
    """The one lookup ``Dispatcher.send`` makes: the person's ``channels`` column."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels

    def contact(self, contact_id: str) -> _Person:
        return self
