"""The ``aliyun`` channel: the documented signature examples, requests against a checking fake,
error classification, config rules, the per-provider rate limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from vendor_fakes import AliyunFake, aliyun_signature

from warnd.config.policy import ChannelConfig, load_config, parse_rate
from warnd.core.clock import ManualClock
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.edges.channels import Outbound, build_channel, check_channel
from warnd.edges.channels import aliyun as ali
from warnd.edges.channels.delivery import Backoff, deliver
from warnd.edges.channels.ratelimit import Limiter

T0 = datetime(2025, 6, 14, 0, 15, 30, tzinfo=UTC)
KEY_ID, SECRET = "LTAI-test-key-id", "aliyun-test-secret-631"
TEXT = (
    "【演练】【预警叫应】泸溪县气象台发布暴雨橙色预警信号。区域：浦市镇。预计06月14日16:00开始。"
    "请回复1或4821确认收到，或打开 https://warn.example.cn/a/tok 确认。"
)


def message(**changes: Any) -> Outbound:
    fields: dict[str, Any] = {
        "id": "0f3c9a7d2b8e4c51a6d7e8f901234567",
        "to": "+8613800138000",
        "kind": "voice",
        "purpose": "call",
        "text": TEXT,
        "warning": "43312241600000_20250614081500",
        "contact": "c-433122100-a",
        "drill": True,
        "reply_code": "4821",
        "link": "https://warn.example.cn/a/tok",
    }
    fields.update(changes)
    return Outbound(**fields)


def config(url: str, secret_file: Path, **options: Any) -> ChannelConfig:
    opts: dict[str, Any] = {
        "access_key_id": KEY_ID,
        "access_key_secret_file": str(secret_file),
        "endpoint": url,
        "sms_sign_name": "泸溪县应急管理局",
        "sms_template": "SMS_463730001",
        "sms_notice_template": "SMS_463730002",
        "sms_params": {"content": "text"},
        "called_show_number": "07434222110",
        "ivr_start_code": "TTS_290000001",
        "ivr_confirm_code": "TTS_290000002",
        "ivr_params": {"content": "text", "code": "reply_code"},
        "tts_code": "TTS_290000003",
        "timeout": "5s",
    }
    opts.update(options)
    return ChannelConfig(
        name="ali",
        type="aliyun",
        kinds=("voice", "sms"),
        rate=parse_rate("2/s"),
        options=MappingProxyType(opts),
    )


@pytest.fixture
async def fake() -> AsyncIterator[AliyunFake]:
    f = AliyunFake(KEY_ID, SECRET)
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "aliyun-secret"
    path.write_text(SECRET + "\n")
    return path


# ---- the documented worked examples --------------------------------------------------------


def test_signature_matches_the_documented_sms_example() -> None:
    """Aliyun's 短信服务 "HTTP协议及签名" example: testId/testSecret, SendSms, GET."""
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert ali.string_to_sign("GET", params) == (
        "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123"
        "%26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%26SignName%3D"
        "%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4%25BF%25A1"
        "%25E6%25B5%258B%25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466"
        "%26SignatureVersion%3D1.0%26TemplateCode%3DSMS_71390007"
        "%26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D"
        "%26Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25"
    )
    assert ali.signature("testSecret", "GET", params) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_signature_matches_the_documented_rpc_example() -> None:
    """The 签名机制 page's DescribeRegions example: testid/testsecret."""
    params = {
        "Action": "DescribeRegions",
        "Format": "XML",
        "Version": "2014-05-26",
        "AccessKeyId": "testid",
        "SignatureMethod": "HMAC-SHA1",
        "Timestamp": "2016-02-23T12:46:24Z",
        "SignatureVersion": "1.0",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
    }
    assert ali.signature("testsecret", "GET", params) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_percent_encoding_rules() -> None:
    assert ali.percent_encode("a b*c~d/e+f") == "a%20b%2Ac~d%2Fe%2Bf"
    assert ali.percent_encode("叫应") == "%E5%8F%AB%E5%BA%94"
    assert ali.canonical_query({"b": "2", "a": "1 1", "B": "x"}) == "B=x&a=1%201&b=2"


def test_post_signature_agrees_with_the_fakes_independent_code() -> None:
    params = {
        "Action": "SendSms",
        "PhoneNumbers": "13800138000",
        "Timestamp": "2025-06-14T00:00:00Z",
    }
    assert ali.signature(SECRET, "POST", params) == aliyun_signature(SECRET, "POST", params)


# ---- requests against the fake -------------------------------------------------------------


async def test_ivr_call_for_a_call_attempt(fake: AliyunFake, secret_file: Path) -> None:
    ch = build_channel(config(fake.url, secret_file), clock=ManualClock(T0))
    try:
        await ch.send(message())
    finally:
        await ch.aclose()
    assert fake.rejected == []
    (call,) = fake.calls
    p = call.params
    assert p["Action"] == "IvrCall" and p["AccessKeyId"] == KEY_ID
    assert p["Timestamp"] == "2025-06-14T00:15:30Z" and p["RegionId"] == "cn-hangzhou"
    assert p["CalledNumber"] == "13800138000" and p["CalledShowNumber"] == "07434222110"
    assert p["StartCode"] == "TTS_290000001" and p["OutId"] == message().id
    assert (p["MenuKeyMap.1.Key"], p["MenuKeyMap.1.Code"]) == ("1", "TTS_290000002")
    spoken = json.loads(p["StartTtsParams"])
    assert spoken["code"] == "4821"
    # read out: no URL, and the SMS reply instruction becomes "press 1"
    assert "http" not in spoken["content"] and spoken["content"].endswith("收到请按1确认。")
    assert spoken["content"].startswith("【演练】【预警叫应】泸溪县气象台")
    assert set(p) == {
        *("AccessKeyId", "Action", "Format", "RegionId", "Signature", "SignatureMethod"),
        *("SignatureNonce", "SignatureVersion", "Timestamp", "Version", "CalledNumber"),
        *("CalledShowNumber", "StartCode", "StartTtsParams", "MenuKeyMap.1.Key"),
        *("MenuKeyMap.1.Code", "PlayTimes", "OutId"),
    }


async def test_sms_and_voice_notices(fake: AliyunFake, secret_file: Path) -> None:
    ch = build_channel(config(fake.url, secret_file), clock=ManualClock(T0))
    try:
        await ch.send(message(kind="sms"))
        await ch.send(message(kind="sms", purpose="lift", id="lift-1", text="【预警解除】已解除。"))
        await ch.send(message(kind="voice", purpose="update", id="upd-1", text="【预警更新】x。"))
    finally:
        await ch.aclose()
    assert fake.rejected == []
    sms, lift, upd = (c.params for c in fake.calls)
    assert sms["Action"] == "SendSms" and sms["PhoneNumbers"] == "13800138000"
    assert sms["SignName"] == "泸溪县应急管理局" and sms["TemplateCode"] == "SMS_463730001"
    assert json.loads(sms["TemplateParam"]) == {"content": TEXT}  # SMS keeps link and code
    assert sms["OutId"] == message().id
    assert lift["TemplateCode"] == "SMS_463730002" and lift["OutId"] == "lift-1"
    assert upd["Action"] == "SingleCallByTts" and upd["TtsCode"] == "TTS_290000003"
    assert json.loads(upd["TtsParam"]) == {"content": "【预警更新】x。"} and upd["OutId"] == "upd-1"
    # every nonce is fresh
    assert len({c.params["SignatureNonce"] for c in fake.calls}) == 3


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "Throttling.User", TransientError),
        (503, "ServiceUnavailable", TransientError),
        (500, "isp.SYSTEM_ERROR", TransientError),
        (400, "isv.MOBILE_NUMBER_ILLEGAL", PermanentError),
        (400, "isv.BUSINESS_LIMIT_CONTROL", PermanentError),
        (400, "isv.SMS_TEMPLATE_ILLEGAL", PermanentError),
        (400, "isv.SOMETHING_NEW", PermanentError),
        (502, "SomethingNew", TransientError),
    ],
)
async def test_error_codes_are_classified(
    fake: AliyunFake, secret_file: Path, status: int, code: str, error: type[Exception]
) -> None:
    fake.answer_next(status, {"Code": code, "Message": "从假服务", "RequestId": "x"})
    ch = build_channel(config(fake.url, secret_file), clock=ManualClock(T0))
    try:
        with pytest.raises(error, match=code.replace(".", r"\.")):
            await ch.send(message(kind="sms"))
    finally:
        await ch.aclose()


async def test_wrong_secret_is_refused_by_the_fake_and_permanent(
    fake: AliyunFake, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret")
    ch = build_channel(config(fake.url, wrong), clock=ManualClock(T0))
    try:
        with pytest.raises(PermanentError, match="SignatureDoesNotMatch"):
            await ch.send(message())
    finally:
        await ch.aclose()
    assert [c.error for c in fake.rejected] == ["SignatureDoesNotMatch"]


async def test_unreachable_endpoint_is_transient(secret_file: Path) -> None:
    ch = build_channel(config("http://127.0.0.1:9", secret_file), clock=ManualClock(T0))
    try:
        with pytest.raises(TransientError):
            await ch.send(message())
    finally:
        await ch.aclose()


async def test_only_mainland_numbers(fake: AliyunFake, secret_file: Path) -> None:
    ch = build_channel(config(fake.url, secret_file), clock=ManualClock(T0))
    try:
        with pytest.raises(PermanentError, match=r"\+86"):
            await ch.send(message(to="+85291234567"))
    finally:
        await ch.aclose()
    assert fake.calls == []


async def test_rate_from_config_paces_requests(fake: AliyunFake, secret_file: Path) -> None:
    """``rate = "2/s"``: the third message waits half a second (virtual time)."""
    cfg = config(fake.url, secret_file)
    ch = build_channel(cfg, clock=ManualClock(T0))
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 3))
        now[0] += seconds

    limiter = Limiter.for_channel(cfg, now=lambda: now[0], sleep=sleep)
    try:
        for n in range(3):
            result = await deliver(
                ch, message(id=f"m{n}"), limiter=limiter, deadline_s=60, backoff=Backoff(jitter=0)
            )
            assert result.ok, result.error
    finally:
        await ch.aclose()
    assert waits == [0.5] and len(fake.calls) == 3


# ---- config --------------------------------------------------------------------------------


def test_config_rules(secret_file: Path) -> None:
    base = dict(config("http://127.0.0.1:1", secret_file).options)

    def cfg(kinds: tuple[str, ...] = ("voice", "sms"), **changes: Any) -> ChannelConfig:
        opts = {**base, **changes}
        for k in [k for k, v in opts.items() if v is None]:
            del opts[k]
        return ChannelConfig("ali", "aliyun", kinds=kinds, options=MappingProxyType(opts))

    check_channel(cfg())
    check_channel(cfg(kinds=("sms",), ivr_start_code=None, called_show_number=None))
    cases = {
        "channels.ali.sms_template": cfg(sms_template=None),
        "channels.ali.ivr_confirm_code": cfg(ivr_confirm_code=None),
        "channels.ali.access_key_secret": cfg(access_key_secret_file=None),
        "channels.ali.kinds": cfg(kinds=("voice", "im")),
        "channels.ali.sms_params.content": cfg(sms_params={"content": "headline"}),
        "channels.ali.endpoint": cfg(endpoint="ftp://x"),
        "channels.ali.play_times": cfg(play_times=4),
        "channels.ali.bogus": cfg(bogus=1),
    }
    for field, bad in cases.items():
        with pytest.raises(ConfigError) as err:
            check_channel(bad)
        assert err.value.field == field, (field, str(err.value))


def test_secrets_never_in_the_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "warnd.toml"
    toml.write_text(
        '[channels.ali]\ntype = "aliyun"\nkinds = ["sms"]\naccess_key_id = "LTAI"\n'
        'access_key_secret = "plain-text"\nsms_sign_name = "x"\nsms_template = "SMS_1"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_config(toml)
    assert err.value.field == "channels.ali.access_key_secret" and err.value.line == 5


def test_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALI_SECRET", SECRET)
    monkeypatch.setenv("ALI_ID", KEY_ID)
    opts = {
        "access_key_id_env": "ALI_ID",
        "access_key_secret_env": "ALI_SECRET",
        "sms_sign_name": "x",
        "sms_template": "SMS_1",
    }
    cfg = ChannelConfig("ali", "aliyun", kinds=("sms",), options=MappingProxyType(opts))
    ch = build_channel(cfg, clock=ManualClock(T0))
    assert isinstance(ch, ali.AliyunChannel)
    assert ch.sms_endpoint == ali.SMS_ENDPOINT and ch.voice_endpoint == ali.VOICE_ENDPOINT
    monkeypatch.delenv("ALI_SECRET")
    with pytest.raises(ConfigError) as err:
        build_channel(cfg, clock=ManualClock(T0))
    assert err.value.field == "channels.ali.access_key_secret_env"
