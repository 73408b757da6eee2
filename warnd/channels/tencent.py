"""The ``tencent`` channel: Tencent Cloud SMS (SendSms) and voice notification (SendTtsVoice).

Requests are API 3.0 calls signed with TC3-HMAC-SHA256 (canonical request → string to sign →
derived keys, as in Tencent's "签名方法 v3"; tests check the documented worked example). A voice
attempt reads the TTS template out; the provider reports the outcome and key presses to the
voice callback URL under its own ``callid`` only, so the channel records each accepted call as
a ``submitted`` receipt (ref = CallId) and warnd.vendors matches the callbacks through it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import structlog

from warnd.channels import Outbound, register, unknown_options
from warnd.channels import cloud as c
from warnd.channels.config import ChannelConfig
from warnd.clock import Clock
from warnd.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from aiohttp import web

    from warnd.engine import Engine

log = structlog.get_logger("warnd.channels.tencent")

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
    text = f"HTTP {status} {code}: {message}".strip()
    transient = code in TRANSIENT or code.startswith("RequestLimitExceeded")
    if transient or (code not in PERMANENT and status >= 500):
        return TransientError(text, status=status)
    return PermanentError(text, status=status)


# ---- the channel ----------------------------------------------------------------------------


@register("tencent")
class TencentChannel:
    """SendSms and SendTtsVoice over one TC3-signed client."""

    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        secret_id: str,
        secret_key: str,
        token: str | None,
        clock: Clock,
    ) -> None:
        o = cfg.options
        self.name = cfg.name
        self.kinds = frozenset(cfg.kinds)
        self._clock = clock
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._token = token
        self._engine: Engine | None = None
        self.region = c.text_option(cfg, "region", "ap-guangzhou")
        base = c.url_option(cfg, "endpoint", "") if "endpoint" in o else None
        self.sms_endpoint = base or c.url_option(cfg, "sms_endpoint", SMS_ENDPOINT)
        self.voice_endpoint = base or c.url_option(cfg, "voice_endpoint", VOICE_ENDPOINT)
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
        self._http = c.Http(cfg.name, c.timeout_option(cfg))

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        unknown_options(cfg, _OPTIONS)
        c.voice_sms_kinds(cfg, "tencent")
        c.id_option(cfg, "secret_id")
        c.secret_option(cfg, "secret_key")
        c.secret_option(cfg, "callback_token", required=False)
        if "sms" in cfg.kinds:
            for key in ("sms_sdk_app_id", "sms_sign_name", "sms_template_id"):
                c.text_option(cfg, key)
        if "voice" in cfg.kinds:
            for key in ("voice_sdk_app_id", "voice_template_id"):
                c.text_option(cfg, key)
        c.text_option(cfg, "region", "ap-guangzhou")
        for key, default in (("sms_endpoint", SMS_ENDPOINT), ("voice_endpoint", VOICE_ENDPOINT)):
            c.url_option(cfg, key, default)
        if "endpoint" in cfg.options:
            c.url_option(cfg, "endpoint", "")
        for key in ("sms_params", "voice_params"):
            c.params_list(cfg, key, ("text",))
        for key in ("sms_notice_template_id", "voice_notice_template_id"):
            c.maybe_text(cfg, key)
        c.int_option(cfg, "play_times", 2, 1, 3)
        c.timeout_option(cfg)

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        return cls(
            cfg,
            secret_id=c.read_id_option(cfg, "secret_id"),
            secret_key=c.read_secret_option(cfg, "secret_key"),
            token=c.callback_token(cfg),
            clock=clock,
        )

    def routes(self, engine: Engine) -> list[web.RouteDef]:
        """The callback URLs of this channel (and the engine for recording CallIds)."""
        self._engine = engine
        if self._token is None:
            return []
        from warnd.vendors import tencent_routes

        return tencent_routes(engine, channel=self.name, token=self._token)

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

    async def send(self, msg: Outbound) -> None:
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
            raise _named(self.name, action, classify(status, f"HTTP{status}", c.short(text)))
        error = response.get("Error")
        if isinstance(error, dict):
            code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
            raise _named(self.name, action, classify(status, code, message))
        if action == "SendSms":
            statuses = response.get("SendStatusSet") or [{}]
            first = statuses[0] if isinstance(statuses[0], dict) else {}
            code = str(first.get("Code") or "")
            if code != "Ok":
                message = str(first.get("Message") or "no SendStatusSet")
                raise _named(self.name, action, classify(status, code or "Missing", message))
            return
        call = response.get("SendStatus")
        call_id = call.get("CallId") if isinstance(call, dict) else None
        if not call_id:
            raise _named(self.name, action, classify(status, "Missing", "no SendStatus.CallId"))
        await self._remember(msg, str(call_id))

    async def _remember(self, msg: Outbound, call_id: str) -> None:
        """Record the CallId: the voice callbacks name the call by it, not by our id."""
        if self._engine is None:
            return
        from warnd.engine.receipts import ReceiptIn, record

        try:
            await record(
                self._engine.ctx,
                [ReceiptIn("tencent", "submitted", outbox_id=msg.id, ref=call_id)],
            )
        except Exception:  # the call is out: a missing record only weakens callback matching
            log.exception("callid_not_recorded", channel=self.name, message=msg.id)

    async def aclose(self) -> None:
        await self._http.aclose()


def _named(name: str, action: str, exc: TransientError | PermanentError) -> Exception:
    return type(exc)(f"{name}: {action}: {exc}", status=exc.status)
