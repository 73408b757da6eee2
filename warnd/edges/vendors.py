"""Vendor callbacks: each provider's own receipt and key-press pushes, turned into warnd terms.

Providers push to URLs configured in their consoles. Neither Aliyun's HTTP batch push nor
Tencent Cloud's callbacks are signed, so each channel's callback URLs carry a secret token in
the path (``/hooks/vendor/<channel>/<token>/<event>``, token from ``callback_token_file`` /
``callback_token_env``); a wrong token is answered 403 and nothing changes.

What counts (domain.md): a key press of ``1`` on a call acknowledges the call that attempt
belongs to (``engine.ack_message(id, "ivr")``, deduplicated per message, so a re-pushed report
or the same press via ``/hooks/ivr`` counts once); an SMS reply goes through
``engine.ack_reply``. Everything else — delivered, answered without a key, not answered,
failed — is stored as a receipt (warnd.engine.receipts) and acknowledges nothing, so the
ladder redials after the window as usual.

Parsing is pure (``*_event`` functions: one provider item → ``VendorEvent``); the handlers only
authenticate, parse, store and answer in the format the provider expects.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from warnd.core import phone
from warnd.edges.channels import Sent, WithRoutes
from warnd.edges.signature import mask_phone
from warnd.engine import receipts
from warnd.engine.receipts import ReceiptIn

if TYPE_CHECKING:
    from warnd.engine import Engine

log = structlog.get_logger("warnd.vendors")

MAX_PUSH = 1024 * 1024  # batch pushes hold many reports; larger than the hooks' 64 KiB
Parse = Callable[[Any], tuple[list["VendorEvent"], list[tuple[str, str]]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Aliyun VMS call result codes (运营商回执错误码 / 呼叫状态码, help.aliyun.com 55085, 112804)
_ALIYUN_HEARD = frozenset({"200000", "200001", "200008"})  # heard / hung up early / key timeout
_ALIYUN_NO_ANSWER = frozenset(
    {"200002", "200003", "200005", "200007", "200010", "200011", "200012"}
)
_ALIYUN_ANSWERED_STATE = "200102"  # VoiceCallReport: 被叫接听


@dataclass(frozen=True, slots=True)
class VendorEvent:
    """One report from a provider, in warnd's terms."""

    status: str  # a receipts.STATUSES value
    outbox_id: str | None = None  # warnd's message id, when the provider echoed it
    ref: str | None = None  # the provider's own id (CallId, BizId, SerialNo)
    phone: str | None = None  # E.164, for matching when nothing else identifies the message
    ack: bool = False  # a key press of 1: acknowledge the call
    via: str | None = None  # "<channel>/<kind>" the message went out on (phone matching)
    detail: dict[str, Any] = field(default_factory=dict)


def pressed_one(digits: str | None) -> bool:
    """Whether the keys pressed during a call include 1 (``"21"``: replay, then confirm)."""
    return bool(digits) and "1" in str(digits)


def _e164(number: object, nationcode: object = "86") -> str | None:
    if not isinstance(number, str | int) or not str(number).strip():
        return None
    raw = str(number).strip()
    if not raw.startswith("+") and nationcode and str(nationcode) != "86":
        raw = f"+{nationcode}{raw}"
    return phone.normalise(raw)


def _items(doc: Any) -> list[dict[str, Any]]:
    """Aliyun pushes a JSON array; a single object is accepted too."""
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list) and all(isinstance(i, dict) for i in doc):
        return list(doc)
    raise ValueError("expected a JSON array of objects")


def _str(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return None if value is None or value == "" else str(value)


# ---- Aliyun ---------------------------------------------------------------------------------


def aliyun_voice_event(item: dict[str, Any]) -> VendorEvent | None:
    """VoiceReport (呼叫记录: status_code, dtmf, out_id) or VoiceCallReport (status_time).

    Returns None for intermediate call states that say nothing about the outcome.
    """
    code = _str(item, "status_code") or ""
    out_id, ref = _str(item, "out_id"), _str(item, "call_id")
    number = _e164(item.get("callee") or item.get("called_num"))
    keep = ("status_code", "status_msg", "duration", "dtmf", "call_id", "hangup_direction")
    detail = {k: item[k] for k in keep if item.get(k) not in (None, "")}
    if "status_time" in item and "duration" not in item and "dtmf" not in item:
        if code != _ALIYUN_ANSWERED_STATE:  # 开始呼叫 / 振铃 / 呼叫结束: wait for the report
            return None
        return VendorEvent("answered", out_id, ref, number, detail=detail)
    digits = _str(item, "dtmf") or _str(item, "digits")
    if pressed_one(digits):
        return VendorEvent("keypress", out_id, ref, number, ack=True, detail=detail)
    if digits or code in _ALIYUN_HEARD:
        return VendorEvent("no_key", out_id, ref, number, detail=detail)
    if code in _ALIYUN_NO_ANSWER:
        return VendorEvent("no_answer", out_id, ref, number, detail=detail)
    return VendorEvent("failed", out_id, ref, number, detail=detail)


def aliyun_sms_report_event(item: dict[str, Any]) -> VendorEvent:
    """SmsReport: success, err_code, biz_id, out_id (our message id)."""
    ok = item.get("success") in (True, "true", "True", 1)
    keep = ("err_code", "err_msg", "report_time", "sms_size")
    detail = {k: item[k] for k in keep if item.get(k) not in (None, "")}
    return VendorEvent(
        "delivered" if ok else "undelivered",
        _str(item, "out_id"),
        _str(item, "biz_id"),
        _e164(item.get("phone_number")),
        detail=detail,
    )


def parse_aliyun_voice(doc: Any) -> tuple[list[VendorEvent], list[tuple[str, str]]]:
    events = [e for e in map(aliyun_voice_event, _items(doc)) if e is not None]
    return events, []


def parse_aliyun_sms_report(doc: Any) -> tuple[list[VendorEvent], list[tuple[str, str]]]:
    return [aliyun_sms_report_event(i) for i in _items(doc)], []


def parse_aliyun_sms_up(doc: Any) -> tuple[list[VendorEvent], list[tuple[str, str]]]:
    """SmsUp (上行短信): phone_number, content → an SMS reply."""
    replies = []
    for item in _items(doc):
        number, text = _e164(item.get("phone_number")), _str(item, "content")
        if number and text:
            replies.append((number, text))
    return [], replies


# ---- Tencent Cloud --------------------------------------------------------------------------


def tencent_voice_event(doc: Any, channel: str) -> VendorEvent:
    """voiceprompt_callback (result 0/1/2), voicekey_callback (keypress), voicefailure_callback."""
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    via = f"{channel}/voice"
    for key in ("voicekey_callback", "voiceprompt_callback", "voicefailure_callback"):
        item = doc.get(key)
        if isinstance(item, dict):
            break
    else:
        raise ValueError(
            "expected voiceprompt_callback, voicekey_callback or voicefailure_callback"
        )
    ref = _str(item, "callid")
    number = _e164(item.get("mobile"), item.get("nationcode", "86"))
    detail = {k: v for k, v in item.items() if k not in ("mobile", "nationcode") and v != ""}
    detail["callback"] = key
    if key == "voicekey_callback":
        digits = _str(item, "keypress")
        if pressed_one(digits):
            return VendorEvent("keypress", None, ref, number, ack=True, via=via, detail=detail)
        return VendorEvent("no_key", None, ref, number, via=via, detail=detail)
    if key == "voicefailure_callback":
        return VendorEvent("failed", None, ref, number, via=via, detail=detail)
    result = _str(item, "result")
    status = {"0": "answered", "1": "no_answer"}.get(result or "", "failed")
    return VendorEvent(status, None, ref, number, via=via, detail=detail)


def tencent_sms_status_event(item: dict[str, Any], channel: str) -> VendorEvent:
    """SMS status callback: report_status SUCCESS/FAIL, errmsg, sid (= SerialNo)."""
    ok = _str(item, "report_status") == "SUCCESS"
    keep = ("errmsg", "description", "user_receive_time")
    detail = {k: item[k] for k in keep if item.get(k) not in (None, "")}
    return VendorEvent(
        "delivered" if ok else "undelivered",
        None,
        _str(item, "sid"),
        _e164(item.get("mobile"), item.get("nationcode", "86")),
        via=f"{channel}/sms",
        detail=detail,
    )


def tencent_sms_reply(doc: Any) -> list[tuple[str, str]]:
    """SMS reply callback: mobile, nationcode, text (one object, or a list of them)."""
    out = []
    for item in _items(doc):
        number = _e164(item.get("mobile"), item.get("nationcode", "86"))
        text = _str(item, "text")
        if number and text:
            out.append((number, text))
    return out


# ---- applying events ------------------------------------------------------------------------


async def apply(
    engine: Engine, provider: str, events: Sequence[VendorEvent], replies: Sequence[tuple[str, str]]
) -> int:
    """Store the receipts, acknowledge key presses of 1 and SMS replies; returns acks made."""
    acked = 0
    if events:
        items = [
            ReceiptIn(
                provider=provider,
                status=e.status,
                outbox_id=e.outbox_id,
                ref=e.ref,
                phone=e.phone,
                via=e.via,
                detail=e.detail,
            )
            for e in events
        ]
        matched = await receipts.record(engine.ctx, items)
        for event, message_id in zip(events, matched, strict=True):
            if not event.ack:
                continue
            if message_id is None:
                log.warning("keypress_unmatched", provider=provider, ref=event.ref)
                continue
            result = await engine.ack_message(message_id, "ivr")
            acked += int(result.ok and not result.duplicate)
            log.info("vendor_keypress", provider=provider, message=message_id, ok=result.ok)
    for number, text in replies:
        result = await engine.ack_reply(number, text)
        acked += int(result.ok and not result.duplicate)
        log.info("vendor_sms_reply", provider=provider, from_=mask_phone(number), ok=result.ok)
    return acked


async def _body(request: web.Request) -> Any:
    """The JSON body, read up to ``MAX_PUSH`` (the app's 64 KiB limit is for hooks)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_PUSH:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_PUSH, actual_size=size)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body must be JSON") from None


def _handler(
    engine: Engine,
    *,
    provider: str,
    token: str,
    parse: Parse,
    ok: dict[str, Any],
    failed: dict[str, Any],
) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        given = request.match_info.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("vendor_callback_refused", provider=provider, path_event=request.path[-24:])
            raise web.HTTPForbidden(text="令牌无效 bad callback token")
        doc = await _body(request)
        try:
            events, replies = parse(doc)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        try:
            await apply(engine, provider, events, replies)
        except Exception:  # the store is busy or down: the provider pushes again later
            log.exception("vendor_callback_failed", provider=provider)
            return web.json_response(failed, status=500)
        return web.json_response(ok, dumps=lambda o: json.dumps(o, ensure_ascii=False))

    return handle


def base_path(channel: str) -> str:
    return f"/hooks/vendor/{channel}/{{token}}"


def aliyun_routes(engine: Engine, *, channel: str, token: str) -> list[web.RouteDef]:
    """VoiceReport / VoiceCallReport, SmsReport, SmsUp (HTTP 批量推送), one URL each."""
    ok = {"code": 0, "msg": "接收成功"}
    failed = {"code": 1, "msg": "处理失败，请重试"}

    def make(parse: Parse) -> Handler:
        return _handler(engine, provider="aliyun", token=token, parse=parse, ok=ok, failed=failed)

    voice = make(parse_aliyun_voice)
    base = base_path(channel)
    return [
        web.post(f"{base}/voice-report", voice),
        web.post(f"{base}/voice-call-report", voice),
        web.post(f"{base}/sms-report", make(parse_aliyun_sms_report)),
        web.post(f"{base}/sms-up", make(parse_aliyun_sms_up)),
    ]


def tencent_routes(engine: Engine, *, channel: str, token: str) -> list[web.RouteDef]:
    """Voice event callback (one URL for all voice events), SMS status, SMS reply."""
    ok = {"result": 0, "errmsg": "OK"}
    failed = {"result": 1, "errmsg": "retry"}

    def voice(doc: Any) -> tuple[list[VendorEvent], list[tuple[str, str]]]:
        return [tencent_voice_event(doc, channel)], []

    def sms_status(doc: Any) -> tuple[list[VendorEvent], list[tuple[str, str]]]:
        return [tencent_sms_status_event(i, channel) for i in _items(doc)], []

    def sms_reply(doc: Any) -> tuple[list[VendorEvent], list[tuple[str, str]]]:
        return [], tencent_sms_reply(doc)

    def make(parse: Parse) -> Handler:
        return _handler(engine, provider="tencent", token=token, parse=parse, ok=ok, failed=failed)

    base = base_path(channel)
    return [
        web.post(f"{base}/voice", make(voice)),
        web.post(f"{base}/sms-status", make(sms_status)),
        web.post(f"{base}/sms-reply", make(sms_reply)),
    ]


# ---- what the daemon wires to the channels --------------------------------------------------

_ROUTES: dict[str, Callable[..., list[web.RouteDef]]] = {
    "aliyun": aliyun_routes,
    "tencent": tencent_routes,
}


def channel_routes(engine: Engine, channels: Iterable[object]) -> list[web.RouteDef]:
    """The callback routes of every channel whose provider calls back (``WithRoutes`` with a
    callback token): the channels name their provider, the routes live here."""
    out: list[web.RouteDef] = []
    for ch in channels:
        where = ch.callbacks() if isinstance(ch, WithRoutes) else None
        if where is not None:
            out += _ROUTES[where.provider](engine, channel=where.channel, token=where.token)
    return out


def remember_sent(engine: Engine) -> Callable[[str, Sent], Awaitable[None]]:
    """The dispatcher's ``on_sent``: a provider's reference for a message it took (Tencent's
    CallId) stored as a ``submitted`` receipt, so its callbacks find the message."""

    async def remember(message_id: str, sent: Sent) -> None:
        try:
            await receipts.record(
                engine.ctx,
                [ReceiptIn(sent.provider, "submitted", outbox_id=message_id, ref=sent.ref)],
            )
        except Exception:  # the call is out: a missing record only weakens callback matching
            log.exception("callid_not_recorded", provider=sent.provider, message=message_id)

    return remember
