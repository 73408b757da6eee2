"""The ``tencent`` channel: the documented TC3-HMAC-SHA256 example, requests against a fake
that recomputes the signature, error classification, config rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from vendor_fakes import TencentFake, tc3_signature

from warnd.config.policy import ChannelConfig
from warnd.core.clock import ManualClock
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.edges.channels import Outbound, build_channel, check_channel
from warnd.edges.channels import tencent as tx

T0 = datetime(2025, 6, 14, 0, 15, 30, tzinfo=UTC)
SECRET_ID, SECRET_KEY = "AKIDtest631", "tencent-test-secret-key-631"

# 签名方法 v3 (cloud.tencent.com/document/api/213/30654): CVM DescribeInstances, 1551113065
DOC_PAYLOAD = (
    b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
)
DOC_HEADERS = {"Content-Type": "application/json; charset=utf-8", "Host": "cvm.tencentcloudapi.com"}


def message(**changes: Any) -> Outbound:
    fields: dict[str, Any] = {
        "id": "7a1c9a7d2b8e4c51a6d7e8f901234567",
        "to": "+8613800138000",
        "kind": "voice",
        "purpose": "call",
        "text": (
            "【预警叫应】暴雨橙色预警。区域：浦市镇。"
            "请回复1或4821确认收到，或打开 https://w.cn/a/t 确认。"
        ),
        "warning": "43312241600000_20250614081500",
        "contact": "c-433122100-a",
        "reply_code": "4821",
        "link": "https://w.cn/a/t",
    }
    fields.update(changes)
    return Outbound(**fields)


def config(url: str, key_file: Path, **options: Any) -> ChannelConfig:
    opts: dict[str, Any] = {
        "secret_id": SECRET_ID,
        "secret_key_file": str(key_file),
        "endpoint": url,
        "sms_sdk_app_id": "1400006666",
        "sms_sign_name": "泸溪县应急管理局",
        "sms_template_id": "1110",
        "sms_notice_template_id": "1111",
        "sms_params": ["text"],
        "voice_sdk_app_id": "1400009099",
        "voice_template_id": "4356",
        "voice_params": ["text", "reply_code"],
        "play_times": 3,
    }
    opts.update(options)
    return ChannelConfig("tx", "tencent", kinds=("voice", "sms"), options=MappingProxyType(opts))


@pytest.fixture
async def fake() -> AsyncIterator[TencentFake]:
    f = TencentFake(SECRET_ID, SECRET_KEY, now=lambda: T0)
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "tencent-key"
    path.write_text(SECRET_KEY)
    return path


# ---- the documented worked example ---------------------------------------------------------


def test_tc3_matches_the_documented_example() -> None:
    request = tx.canonical_request(
        "POST", DOC_HEADERS, DOC_PAYLOAD, signed=("content-type", "host")
    )
    assert request == (
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\n"
        "host:cvm.tencentcloudapi.com\n\ncontent-type;host\n"
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    assert tx.string_to_sign(1551113065, "cvm", request) == (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    # the page's key as printed today (masked) and as printed in its earlier edition
    assert (
        tx.tc3_signature("Gu5t9xGARNpq86cd98joQYCN3*******", 1551113065, "cvm", request)
        == "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"
    )
    assert (
        tx.tc3_signature("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", 1551113065, "cvm", request)
        == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


def test_signed_headers_agree_with_the_fakes_independent_code() -> None:
    payload = b'{"PhoneNumberSet":["+8613800138000"]}'
    headers = tx.signed_headers(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        service="sms",
        host="sms.tencentcloudapi.com",
        action="SendSms",
        version=tx.SMS_VERSION,
        region="ap-guangzhou",
        timestamp=1749860130,
        payload=payload,
    )
    sig = headers["Authorization"].rsplit("Signature=", 1)[1]
    assert headers["Authorization"].startswith(
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2025-06-14/sms/tc3_request, "
        "SignedHeaders=content-type;host;x-tc-action, "
    )
    want = tc3_signature(
        SECRET_KEY, "sms", 1749860130, headers, "content-type;host;x-tc-action", payload
    )
    assert sig == want
    assert headers["X-TC-Timestamp"] == "1749860130" and headers["X-TC-Version"] == "2021-01-11"


# ---- requests against the fake -------------------------------------------------------------


async def test_send_tts_voice(fake: TencentFake, key_file: Path) -> None:
    ch = build_channel(config(fake.url, key_file), clock=ManualClock(T0))
    try:
        await ch.send(message())
    finally:
        await ch.aclose()
    assert fake.rejected == []
    (call,) = fake.calls
    assert (
        call.headers["X-TC-Action"] == "SendTtsVoice"
        and call.headers["X-TC-Region"] == "ap-guangzhou"
    )
    assert call.headers["X-TC-Timestamp"] == str(int(T0.timestamp()))
    assert call.params == {
        "TemplateId": "4356",
        "CalledNumber": "+8613800138000",
        "VoiceSdkAppid": "1400009099",
        "TemplateParamSet": ["【预警叫应】暴雨橙色预警。区域：浦市镇。收到请按1确认。", "4821"],
        "PlayTimes": 3,
        "SessionContext": message().id,
    }


async def test_send_sms_call_and_notice(fake: TencentFake, key_file: Path) -> None:
    ch = build_channel(config(fake.url, key_file), clock=ManualClock(T0))
    try:
        await ch.send(message(kind="sms"))
        await ch.send(message(kind="sms", purpose="update", id="u1", text="【预警更新】x。"))
    finally:
        await ch.aclose()
    assert fake.rejected == []
    first, second = fake.calls
    assert first.headers["X-TC-Action"] == "SendSms"
    assert first.params == {
        "PhoneNumberSet": ["+8613800138000"],
        "SmsSdkAppId": "1400006666",
        "SignName": "泸溪县应急管理局",
        "TemplateId": "1110",
        "TemplateParamSet": [message().text],
        "SessionContext": message().id,
    }
    assert second.params["TemplateId"] == "1111" and second.params["TemplateParamSet"] == [
        "【预警更新】x。"
    ]
    assert json.loads(first.raw)["SessionContext"] == message().id


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        ({"Error": {"Code": "RequestLimitExceeded", "Message": "limit"}}, TransientError, None),
        (
            {"Error": {"Code": "RequestLimitExceeded.UinLimitExceeded", "Message": "x"}},
            TransientError,
            None,
        ),
        ({"Error": {"Code": "InternalError.Timeout", "Message": "x"}}, TransientError, None),
        ({"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "x"}}, PermanentError, None),
        (
            {"Error": {"Code": "FailedOperation.TemplateIncorrectOrUnapproved", "Message": "x"}},
            PermanentError,
            None,
        ),
        (None, PermanentError, "InvalidParameterValue.IncorrectPhoneNumber"),
        (None, PermanentError, "LimitExceeded.PhoneNumberDailyLimit"),
        (None, TransientError, "LimitExceeded.PhoneNumberThirtySecondLimit"),
    ],
)
async def test_error_codes_are_classified(
    fake: TencentFake,
    key_file: Path,
    answer: dict[str, Any] | None,
    error: type[Exception],
    code: str | None,
) -> None:
    if answer is None:  # a per-number failure inside a successful SendSms answer
        status = {"SerialNo": "", "PhoneNumber": "+8613800138000", "Code": code, "Message": "x"}
        answer = {"SendStatusSet": [status]}
    fake.answer_next(200, {"Response": {**answer, "RequestId": "r"}})
    ch = build_channel(config(fake.url, key_file), clock=ManualClock(T0))
    try:
        with pytest.raises(error):
            await ch.send(message(kind="sms"))
    finally:
        await ch.aclose()


async def test_wrong_key_and_stale_clock_are_refused(fake: TencentFake, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-key")
    ch = build_channel(config(fake.url, wrong), clock=ManualClock(T0))
    try:
        with pytest.raises(PermanentError, match=r"AuthFailure\.SignatureFailure"):
            await ch.send(message())
    finally:
        await ch.aclose()
    right = tmp_path / "right"
    right.write_text(SECRET_KEY)
    stale = build_channel(
        config(fake.url, right), clock=ManualClock(datetime(2025, 6, 13, tzinfo=UTC))
    )
    try:
        with pytest.raises(PermanentError, match=r"AuthFailure\.SignatureExpire"):
            await stale.send(message())
    finally:
        await stale.aclose()
    assert [c.error for c in fake.rejected] == [
        "AuthFailure.SignatureFailure",
        "AuthFailure.SignatureExpire",
    ]


async def test_http_failure_without_a_response_is_transient(
    fake: TencentFake, key_file: Path
) -> None:
    fake.answer_next(502, {"oops": True})
    ch = build_channel(config(fake.url, key_file), clock=ManualClock(T0))
    try:
        with pytest.raises(TransientError, match="HTTP502"):
            await ch.send(message())
    finally:
        await ch.aclose()


def test_config_rules(key_file: Path) -> None:
    base = dict(config("http://127.0.0.1:1", key_file).options)

    def cfg(kinds: tuple[str, ...] = ("voice", "sms"), **changes: Any) -> ChannelConfig:
        opts = {k: v for k, v in {**base, **changes}.items() if v is not None}
        return ChannelConfig("tx", "tencent", kinds=kinds, options=MappingProxyType(opts))

    check_channel(cfg())
    check_channel(cfg(kinds=("voice",), sms_sdk_app_id=None, sms_template_id=None))
    cases = {
        "channels.tx.voice_template_id": cfg(voice_template_id=None),
        "channels.tx.sms_sdk_app_id": cfg(sms_sdk_app_id=None),
        "channels.tx.secret_key": cfg(secret_key_file=None),
        "channels.tx.secret_id": cfg(secret_id=None),
        "channels.tx.kinds": cfg(kinds=("email",)),
        "channels.tx.voice_params": cfg(voice_params=["nope"]),
        "channels.tx.timeout": cfg(timeout="forever"),
    }
    for field, bad in cases.items():
        with pytest.raises(ConfigError) as err:
            check_channel(bad)
        assert err.value.field == field, (field, str(err.value))
