"""The ``tencent`` channel: Tencent Cloud SMS (SendSms) and voice notification (SendTtsVoice).

Requests are API 3.0 calls signed with TC3-HMAC-SHA256 (canonical request → string to sign →
derived keys, as in Tencent's "签名方法 v3"; tests check the documented worked example). A voice
attempt reads the TTS template out; the provider reports the outcome and key presses to the
voice callback URL under its own ``callid`` only, so ``send`` returns each accepted call's CallId
(``Sent``); the daemon records it as a ``submitted`` receipt and warnd.edges.vendors matches the
callbacks through it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urlsplit

from warnd.core.clock import Clock
from warnd.core.errors import PermanentError, TransientError
from warnd.edges.channels import Outbound, Sent, register, unknown_options
from warnd.edges.channels import cloud as c
from warnd.edges.channels.config import ChannelConfig

SMS_ENDPOINT = "https://sms.tencentcloudapi.com"
VOICE_ENDPOINT = "https://vms.tencentcloudapi.com"
SMS_VERSION = "2021-01-11"
VOICE_VERSION = "2020-09-02"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = ("content-type", "host", "x-tc-action")

#: retrying (with backoff, within the attempt) can help; any ``RequestLimitExceeded*`` too
TRANSIENT = frozenset(
    {
        "InternalError",
        "InternalError.Timeout",
        "InternalError.OtherError",
        "InternalError.SendAndRecvFail",
        "InternalError.ParseBackendResponseFail",
        "ResourceUnavailable",
        "LimitExceeded.PhoneNumberThirtySecondLimit",
    }
)
#: retrying cannot help: the next channel takes over (unknown codes are treated the same)
PERMANENT = frozenset(
    {
        "InvalidParameterValue.IncorrectPhoneNumber",
        "InvalidParameterValue.ContentLengthLimit",
        "InvalidParameterValue.TemplateParameterFormatError",
        "InvalidParameterValue.TemplateParameterLengthLimit",
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.SignatureIncorrectOrUnapproved",
        "FailedOperation.PhoneNumberInBlacklist",
        "FailedOperation.InsufficientBalanceInSmsPackage",
        "FailedOperation.ContainSensitiveWord",
        "LimitExceeded.PhoneNumberOneHourLimit",
        "LimitExceeded.PhoneNumberDailyLimit",
        "LimitExceeded.PhoneNumberSameContentDailyLimit",
        "LimitExceeded.DeliveryFrequencyLimit",
        "LimitExceeded.AppDailyLimit",
        "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
        "AuthFailure.SignatureFailure",
        "AuthFailure.SignatureExpire",
        "AuthFailure.SecretIdNotFound",
        "AuthFailure.UnauthorizedOperation",
        "InternalError.SigVerificationFail",
    }
)

_OPTIONS = (
    "secret_id",
    "secret_id_env",
    "secret_id_file",
    "secret_key_file",
    "secret_key_env",
    "region",
    "endpoint",
    "sms_endpoint",
    "voice_endpoint",
    "timeout",
    "sms_sdk_app_id",
    "sms_sign_name",
    "sms_template_id",
    "sms_notice_template_id",
    "sms_params",
    "voice_sdk_app_id",
    "voice_template_id",
    "voice_notice_template_id",
    "voice_params",
    "play_times",
    "callback_token_file",
    "callback_token_env",
)


# ---- TC3-HMAC-SHA256 (pure) ----------------------------------------------------------------


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def canonical_request(
    method: str,
    headers: Mapping[str, str],
    payload: bytes,
    *,
    signed: tuple[str, ...] = SIGNED_HEADERS,
    uri: str = "/",
    query: str = "",
) -> str:
    """Method, URI, query, lower-cased ``name:value`` lines, signed names, SHA-256(payload)."""
    lower = {k.lower(): v for k, v in headers.items()}
    lines = "".join(f"{name}:{lower[name].strip().lower()}\n" for name in signed)
    return "\n".join((method, uri, query, lines, ";".join(signed), _sha256_hex(payload)))


def credential_scope(timestamp: int, service: str) -> str:
    day = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return f"{day}/{service}/tc3_request"


def string_to_sign(timestamp: int, service: str, request: str) -> str:
    scope = credential_scope(timestamp, service)
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{_sha256_hex(request.encode())}"


def tc3_signature(secret_key: str, timestamp: int, service: str, request: str) -> str:
    """HMAC chain: "TC3"+key → date → service → "tc3_request" → the string to sign (hex)."""
    day = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    k_date = _hmac(("TC3" + secret_key).encode(), day)
    k_service = _hmac(k_date, service)
    k_signing = _hmac(k_service, "tc3_request")
    return hmac.new(
        k_signing, string_to_sign(timestamp, service, request).encode(), hashlib.sha256
    ).hexdigest()


def authorization(
    secret_id: str, secret_key: str, timestamp: int, service: str, request: str
) -> str:
    sig = tc3_signature(secret_key, timestamp, service, request)
    scope = credential_scope(timestamp, service)
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={';'.join(SIGNED_HEADERS)}, Signature={sig}"
    )


def signed_headers(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    host: str,
    action: str,
    version: str,
    region: str,
    timestamp: int,
    payload: bytes,
) -> dict[str, str]:
    """Every header of an API 3.0 POST, Authorization included."""
    headers = {"Content-Type": CONTENT_TYPE, "Host": host, "X-TC-Action": action}
    request = canonical_request("POST", headers, payload)
    headers.update(
        {
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": version,
            "X-TC-Region": region,
            "Authorization": authorization(secret_id, secret_key, timestamp, service, request),
        }
    )
    return headers


def classify(status: int, code: str, message: str) -> TransientError | PermanentError:
    transient = code in TRANSIENT or code.startswith("RequestLimitExceeded")
    return c.classify(status, code, message, transient=transient, permanent=PERMANENT)


# ---- the channel ----------------------------------------------------------------------------


@register("tencent")
class TencentChannel(c.CloudChannel):
    """SendSms and SendTtsVoice over one TC3-signed client."""

    provider = "tencent"
    defaults = ("ap-guangzhou", SMS_ENDPOINT, VOICE_ENDPOINT)

    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        secret_id: str,
        secret_key: str,
        token: str | None,
        clock: Clock,
    ) -> None:
        super().__init__(cfg, token=token, clock=clock)
        self._secret_id = secret_id
        self._secret_key = secret_key
        self.sms_app = c.maybe_text(cfg, "sms_sdk_app_id")
        self.sign_name = c.maybe_text(cfg, "sms_sign_name")
        self.sms_template = c.maybe_text(cfg, "sms_template_id")
        self.sms_notice_template = c.maybe_text(cfg, "sms_notice_template_id") or self.sms_template
        self.sms_params = c.params_list(cfg, "sms_params", ("text",))
        self.voice_app = c.maybe_text(cfg, "voice_sdk_app_id")
        self.voice_template = c.maybe_text(cfg, "voice_template_id")
        self.voice_notice_template = (
            c.maybe_text(cfg, "voice_notice_template_id") or self.voice_template
        )
        self.voice_params = c.params_list(cfg, "voice_params", ("text",))
        self.play_times = c.int_option(cfg, "play_times", 2, 1, 3)

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        unknown_options(cfg, _OPTIONS)
        c.check_common(cfg, cls.defaults)
        c.id_option(cfg, "secret_id")
        c.secret_option(cfg, "secret_key")
        if "sms" in cfg.kinds:
            for key in ("sms_sdk_app_id", "sms_sign_name", "sms_template_id"):
                c.text_option(cfg, key)
        if "voice" in cfg.kinds:
            for key in ("voice_sdk_app_id", "voice_template_id"):
                c.text_option(cfg, key)
        for key in ("sms_params", "voice_params"):
            c.params_list(cfg, key, ("text",))
        for key in ("sms_notice_template_id", "voice_notice_template_id"):
            c.maybe_text(cfg, key)
        c.int_option(cfg, "play_times", 2, 1, 3)

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        return cls(
            cfg,
            secret_id=c.read_id_option(cfg, "secret_id"),
            secret_key=c.read_secret_option(cfg, "secret_key"),
            token=c.callback_token(cfg),
            clock=clock,
        )

    # ---- sending ----------------------------------------------------------------------------

    def request(self, msg: Outbound) -> tuple[str, str, str, str, dict[str, Any]]:
        """(endpoint, service, Action, Version, JSON body) for ``msg`` — before signing."""
        if not msg.to.startswith("+"):
            raise PermanentError(f"{self.name}: not an E.164 number")
        if msg.kind == "sms":
            template = self.sms_template if msg.purpose == "call" else self.sms_notice_template
            sms: dict[str, Any] = {
                "PhoneNumberSet": [msg.to],
                "SmsSdkAppId": self.sms_app,
                "SignName": self.sign_name,
                "TemplateId": template,
                "TemplateParamSet": [c.field_value(msg, f, voice=False) for f in self.sms_params],
                "SessionContext": msg.id,
            }
            return self.sms_endpoint, "sms", "SendSms", SMS_VERSION, sms
        if msg.kind != "voice":
            raise PermanentError(f"{self.name}: cannot carry {msg.kind}")
        template = self.voice_template if msg.purpose == "call" else self.voice_notice_template
        body: dict[str, Any] = {
            "TemplateId": template,
            "CalledNumber": msg.to,
            "VoiceSdkAppid": self.voice_app,
            "TemplateParamSet": [c.field_value(msg, f, voice=True) for f in self.voice_params],
            "PlayTimes": self.play_times,
            "SessionContext": msg.id,
        }
        return self.voice_endpoint, "vms", "SendTtsVoice", VOICE_VERSION, body

    async def send(self, msg: Outbound) -> Sent | None:
        """A voice call returns its CallId (the voice callbacks name the call by it only)."""
        endpoint, service, action, version, body = self.request(msg)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = signed_headers(
            secret_id=self._secret_id,
            secret_key=self._secret_key,
            service=service,
            host=urlsplit(endpoint).netloc,
            action=action,
            version=version,
            region=self.region,
            timestamp=int(self._clock.now().timestamp()),
            payload=payload,
        )
        status, text = await self._http.request(
            "POST", endpoint + "/", data=payload, headers=headers
        )
        response = c.json_object(text).get("Response")
        if not isinstance(response, dict):
            raise c.named(self.name, action, classify(status, f"HTTP{status}", c.short(text)))
        error = response.get("Error")
        if isinstance(error, dict):
            code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
            raise c.named(self.name, action, classify(status, code, message))
        if action == "SendSms":
            statuses = response.get("SendStatusSet") or [{}]
            first = statuses[0] if isinstance(statuses[0], dict) else {}
            code = str(first.get("Code") or "")
            if code != "Ok":
                message = str(first.get("Message") or "no SendStatusSet")
                raise c.named(self.name, action, classify(status, code or "Missing", message))
            return None
        call = response.get("SendStatus")
        call_id = call.get("CallId") if isinstance(call, dict) else None
        if not call_id:
            raise c.named(self.name, action, classify(status, "Missing", "no SendStatus.CallId"))
        return Sent(self.provider, str(call_id))
