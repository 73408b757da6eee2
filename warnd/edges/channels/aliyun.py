"""The ``aliyun`` channel: Aliyun SMS (SendSms) and voice (IvrCall, SingleCallByTts).

A call attempt goes out as ``IvrCall``: the TTS template is read out and a key press of 1 plays
the confirmation prompt; the key press comes back in the VoiceReport receipt (``dtmf``, with our
message id as ``out_id``) and acknowledges (warnd.edges.vendors). Update and lift notices by voice
use ``SingleCallByTts`` (nothing to confirm); SMS uses ``SendSms`` with the template of the
message's purpose. Every request is an RPC call signed with HMAC-SHA1 as the Aliyun signature
documentation describes (``string_to_sign``/``signature`` below; tests check the documented
worked examples). Error codes are classified in ``TRANSIENT`` / ``PERMANENT``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import UTC
from typing import Any, Self
from urllib.parse import quote

from warnd.core.clock import Clock
from warnd.core.errors import PermanentError, TransientError
from warnd.edges.channels import Outbound, Sent, register, unknown_options
from warnd.edges.channels import cloud as c
from warnd.edges.channels.config import ChannelConfig

SMS_ENDPOINT = "https://dysmsapi.aliyuncs.com"
VOICE_ENDPOINT = "https://dyvmsapi.aliyuncs.com"
API_VERSION = "2017-05-25"  # both Dysmsapi and Dyvmsapi
SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"

#: retrying (with backoff, within the attempt) can help
TRANSIENT = frozenset(
    {
        "Throttling",
        "Throttling.User",
        "Throttling.Api",
        "Throttling.AK",
        "ServiceUnavailable",
        "InternalError",
        "isp.SYSTEM_ERROR",
        "isp.GATEWAY_ERROR",
        "isv.SYSTEM_ERROR",
    }
)
#: retrying cannot help: the next channel takes over (unknown codes are treated the same)
PERMANENT = frozenset(
    {
        "isv.MOBILE_NUMBER_ILLEGAL",
        "isv.MOBILE_COUNT_OVER_LIMIT",
        "isv.BUSINESS_LIMIT_CONTROL",  # per-number flow control (minute/hour/day)
        "isv.DAY_LIMIT_CONTROL",
        "isv.MONTH_LIMIT_CONTROL",
        "isv.TEMPLATE_MISSING_PARAMETERS",
        "isv.INVALID_PARAMETERS",
        "isv.PARAM_LENGTH_LIMIT",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isv.SMS_SIGNATURE_ILLEGAL",
        "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
        "isv.SMS_CONTENT_ILLEGAL",
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.OUT_OF_SERVICE",
        "isv.PRODUCT_UN_SUBSCRIPT",
        "isv.PRODUCT_UNSUBSCRIBE",
        "isv.ACCOUNT_NOT_EXISTS",
        "isv.ACCOUNT_ABNORMAL",
        "isp.RAM_PERMISSION_DENY",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "InvalidTimeStamp.Expired",
        "SignatureNonceUsed",
        "MissingParameter",
        "InvalidParameter",
    }
)

_OPTIONS = (
    "access_key_id",
    "access_key_id_env",
    "access_key_id_file",
    "access_key_secret_file",
    "access_key_secret_env",
    "region",
    "endpoint",
    "sms_endpoint",
    "voice_endpoint",
    "timeout",
    "sms_sign_name",
    "sms_template",
    "sms_notice_template",
    "sms_params",
    "called_show_number",
    "ivr_start_code",
    "ivr_confirm_code",
    "ivr_params",
    "ivr_timeout_ms",
    "tts_code",
    "tts_params",
    "play_times",
    "callback_token_file",
    "callback_token_env",
)
_DEFAULT_PARAMS = {"content": "text"}


# ---- the documented RPC signature (pure) ---------------------------------------------------


def percent_encode(value: str) -> str:
    """UTF-8 percent-encoding: only A-Z a-z 0-9 - _ . ~ stay as they are; space is %20."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    """Parameters sorted by name, each name and value percent-encoded, joined with &."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&`` + the percent-encoded canonical query (Signature itself excluded)."""
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))."""
    digest = hmac.new(
        (secret + "&").encode(), string_to_sign(method, params).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def signed_body(
    action: str,
    params: Mapping[str, str],
    *,
    access_key_id: str,
    secret: str,
    timestamp: str,
    nonce: str,
    region: str,
) -> str:
    """The form body of a POST: common + action parameters + Signature, percent-encoded."""
    full = {
        "AccessKeyId": access_key_id,
        "Action": action,
        "Format": "JSON",
        "RegionId": region,
        "SignatureMethod": SIGNATURE_METHOD,
        "SignatureNonce": nonce,
        "SignatureVersion": SIGNATURE_VERSION,
        "Timestamp": timestamp,
        "Version": API_VERSION,
        **params,
    }
    full["Signature"] = signature(secret, "POST", full)
    return canonical_query(full)


def classify(status: int, code: str, message: str) -> TransientError | PermanentError:
    """An error answer as the exception ``deliver`` acts on."""
    return c.classify(status, code, message, transient=code in TRANSIENT, permanent=PERMANENT)


# ---- the channel ----------------------------------------------------------------------------


@register("aliyun")
class AliyunChannel(c.CloudChannel):
    """SendSms, IvrCall and SingleCallByTts over one signed-RPC client."""

    provider = "aliyun"
    defaults = ("cn-hangzhou", SMS_ENDPOINT, VOICE_ENDPOINT)

    def __init__(
        self,
        cfg: ChannelConfig,
        *,
        access_key_id: str,
        secret: str,
        token: str | None,
        clock: Clock,
    ) -> None:
        super().__init__(cfg, token=token, clock=clock)
        self._key_id = access_key_id
        self._secret = secret
        self.sign_name = c.maybe_text(cfg, "sms_sign_name")
        self.sms_template = c.maybe_text(cfg, "sms_template")
        self.sms_notice_template = c.maybe_text(cfg, "sms_notice_template") or self.sms_template
        self.sms_params = c.params_map(cfg, "sms_params", _DEFAULT_PARAMS)
        self.show_number = c.maybe_text(cfg, "called_show_number")
        self.ivr_start = c.maybe_text(cfg, "ivr_start_code")
        self.ivr_confirm = c.maybe_text(cfg, "ivr_confirm_code")
        self.ivr_params = c.params_map(cfg, "ivr_params", _DEFAULT_PARAMS)
        self.ivr_timeout_ms = c.int_option(cfg, "ivr_timeout_ms", 0, 0, 60000) or None
        self.tts_code = c.maybe_text(cfg, "tts_code")
        self.tts_params = c.params_map(cfg, "tts_params", _DEFAULT_PARAMS)
        self.play_times = c.int_option(cfg, "play_times", 2, 1, 3)

    @classmethod
    def check(cls, cfg: ChannelConfig) -> None:
        unknown_options(cfg, _OPTIONS)
        c.check_common(cfg, cls.defaults)
        c.id_option(cfg, "access_key_id")
        c.secret_option(cfg, "access_key_secret")
        if "sms" in cfg.kinds:
            c.text_option(cfg, "sms_sign_name")
            c.text_option(cfg, "sms_template")
        if "voice" in cfg.kinds:
            for key in ("called_show_number", "ivr_start_code", "ivr_confirm_code"):
                c.text_option(cfg, key)
        for key in ("sms_params", "ivr_params", "tts_params"):
            c.params_map(cfg, key, _DEFAULT_PARAMS)
        for key in ("sms_notice_template", "tts_code"):
            c.maybe_text(cfg, key)
        c.int_option(cfg, "ivr_timeout_ms", 0, 0, 60000)
        c.int_option(cfg, "play_times", 2, 1, 3)

    @classmethod
    def from_config(cls, cfg: ChannelConfig, *, clock: Clock) -> Self:
        return cls(
            cfg,
            access_key_id=c.read_id_option(cfg, "access_key_id"),
            secret=c.read_secret_option(cfg, "access_key_secret"),
            token=c.callback_token(cfg),
            clock=clock,
        )

    # ---- sending ----------------------------------------------------------------------------

    def request(self, msg: Outbound) -> tuple[str, str, dict[str, str]]:
        """(endpoint, Action, action parameters) for ``msg`` — before signing."""
        number = c.national(msg.to)
        if number is None:
            raise PermanentError(f"{self.name}: only mainland numbers (+86) can be reached")
        voice = msg.kind == "voice"
        if msg.kind == "sms":
            template = self.sms_template if msg.purpose == "call" else self.sms_notice_template
            assert self.sign_name is not None and template is not None  # check() made sure
            return (
                self.sms_endpoint,
                "SendSms",
                {
                    "PhoneNumbers": number,
                    "SignName": self.sign_name,
                    "TemplateCode": template,
                    "TemplateParam": self._params(msg, self.sms_params, voice=False),
                    "OutId": msg.id,
                },
            )
        if not voice:
            raise PermanentError(f"{self.name}: cannot carry {msg.kind}")
        if msg.purpose == "call":
            assert self.show_number and self.ivr_start and self.ivr_confirm
            params = {
                "CalledShowNumber": self.show_number,
                "CalledNumber": number,
                "StartCode": self.ivr_start,
                "StartTtsParams": self._params(msg, self.ivr_params, voice=True),
                "MenuKeyMap.1.Key": "1",
                "MenuKeyMap.1.Code": self.ivr_confirm,
                "PlayTimes": str(self.play_times),
                "OutId": msg.id,
            }
            if self.ivr_timeout_ms:
                params["Timeout"] = str(self.ivr_timeout_ms)
            return self.voice_endpoint, "IvrCall", params
        if self.tts_code is None:
            raise PermanentError(f"{self.name}: no tts_code for voice notices ({msg.purpose})")
        params = {
            "CalledNumber": number,
            "TtsCode": self.tts_code,
            "TtsParam": self._params(msg, self.tts_params, voice=True),
            "PlayTimes": str(self.play_times),
            "OutId": msg.id,
        }
        if self.show_number:
            params["CalledShowNumber"] = self.show_number
        return self.voice_endpoint, "SingleCallByTts", params

    @staticmethod
    def _params(msg: Outbound, mapping: Mapping[str, str], *, voice: bool) -> str:
        values = {name: c.field_value(msg, src, voice=voice) for name, src in mapping.items()}
        return json.dumps(values, ensure_ascii=False, separators=(",", ":"))

    async def send(self, msg: Outbound) -> Sent | None:
        """None when accepted: the receipts name the message by our id (``OutId``)."""
        endpoint, action, params = self.request(msg)
        body = signed_body(
            action,
            params,
            access_key_id=self._key_id,
            secret=self._secret,
            timestamp=self._clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            nonce=uuid.uuid4().hex,
            region=self.region,
        )
        status, text = await self._http.request(
            "POST",
            endpoint + "/",
            data=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        answer: dict[str, Any] = c.json_object(text)
        code = str(answer.get("Code") or "")
        if status == 200 and code == "OK":
            return None
        message = str(answer.get("Message") or c.short(text))
        raise c.named(self.name, action, classify(status, code or f"HTTP{status}", message))
