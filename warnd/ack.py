"""Acknowledgement intake over HTTP (contracts §6) and the listener's health page.

Hooks must carry a fresh HMAC signature (401 and nothing changes otherwise); confirmation links
acknowledge only on POST, because link scanners and chat previews open links by GET.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiohttp import web

from warnd import logs, phone
from warnd.clock import wall_now
from warnd.engine import Engine
from warnd.engine.acks import AckResult
from warnd.signature import ReplayGuard, SignatureError, mask_phone, verify

log = structlog.get_logger("warnd.ack")

MAX_BODY = 64 * 1024
ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
SECRET: web.AppKey[bytes] = web.AppKey("secret", bytes)
GUARD: web.AppKey[ReplayGuard] = web.AppKey("guard", ReplayGuard)
HEALTH: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("health")


def make_app(
    engine: Engine,
    secret: bytes,
    health: Callable[[], Awaitable[dict[str, Any]]],
    *,
    max_age_s: float = 300,
    extra_routes: Iterable[web.RouteDef] = (),
) -> web.Application:
    """The listener's app; ``extra_routes`` are channels' vendor callbacks (warnd.vendors)."""
    app = web.Application(client_max_size=MAX_BODY)
    logs.conceal(secret)  # never written whole into a log line, whatever carries it
    app[ENGINE] = engine
    app[SECRET] = secret
    app[GUARD] = ReplayGuard(max_age_s)
    app[HEALTH] = health
    app.router.add_post("/hooks/reply", reply_hook)
    app.router.add_post("/hooks/ivr", ivr_hook)
    app.router.add_get("/a/{token}", link_page)
    app.router.add_post("/a/{token}", link_confirm)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_routes(list(extra_routes))
    return app


async def _signed_json(request: web.Request) -> tuple[dict[str, Any], tuple[int, str]]:
    """The verified JSON body of a hook and its replay key, or an HTTP error (nothing changes).

    The caller forgets the replay key when processing fails, so that the sender's retry of a
    request that changed nothing is not refused as a replay.
    """
    body = await request.read()
    engine = request.app[ENGINE]
    now = wall_now(engine.ctx.clock).timestamp()  # real time even during a sped-up drill
    ts = request.headers.get("X-Warnd-Timestamp")
    sig = request.headers.get("X-Warnd-Signature")
    try:
        verify(request.app[SECRET], ts, sig, body, now=now)
        request.app[GUARD].check(int(ts or 0), sig or "", now)
    except SignatureError as exc:
        log.warning("hook_refused", path=request.path, reason=str(exc.reason))
        raise web.HTTPUnauthorized(text=f"签名无效 bad signature: {exc.reason}") from None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data, (int(ts or 0), sig or "")


@asynccontextmanager
async def _forget_on_failure(request: web.Request, key: tuple[int, str]) -> AsyncIterator[None]:
    try:
        yield
    except web.HTTPException as exc:
        if exc.status >= 500:
            request.app[GUARD].forget(*key)
        raise
    except Exception:
        request.app[GUARD].forget(*key)
        raise


def _answer(result: AckResult) -> web.Response:
    return web.json_response(
        {
            "ok": result.ok,
            "message": result.reason,
            "warning": result.warning,
            "contact": result.contact_id,
            "duplicate": result.duplicate,
        },
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


async def reply_hook(request: web.Request) -> web.Response:
    data, key = await _signed_json(request)
    sender, text = data.get("from"), data.get("text")
    if not isinstance(sender, str) or not isinstance(text, str):
        raise web.HTTPBadRequest(text='expected {"from": "+86…", "text": "1"}')
    number = phone.normalise(sender)
    if number is None:
        raise web.HTTPBadRequest(text="from: not a phone number")
    async with _forget_on_failure(request, key):
        result = await request.app[ENGINE].ack_reply(number, text)
    log.info("sms_reply", from_=mask_phone(number), ok=result.ok, warning=result.warning)
    return _answer(result)


async def ivr_hook(request: web.Request) -> web.Response:
    data, key = await _signed_json(request)
    message_id, digits = data.get("id"), data.get("digits")
    if not isinstance(message_id, str) or not isinstance(digits, str):
        raise web.HTTPBadRequest(text='expected {"id": "...", "digits": "1"}')
    async with _forget_on_failure(request, key):
        result = await request.app[ENGINE].ack_ivr(message_id, digits)
    log.info("ivr_keypress", message=message_id, digits=digits, ok=result.ok)
    return _answer(result)


_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex"><title>预警叫应确认</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:2em auto;padding:0 1em}}
button{{font-size:1.4em;padding:.6em 2em}}</style></head><body>{body}</body></html>"""


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(text=_PAGE.format(body=body), content_type="text/html", status=status)


async def link_page(request: web.Request) -> web.Response:
    """Show what is to be confirmed; never acknowledges (scanners open links)."""
    token = request.match_info["token"]
    info = await request.app[ENGINE].describe_token(token)
    if info is None:
        return _page("<h1>链接无效或已过期</h1><p>请直接回复短信 1 或联系值班室。</p>", 404)
    return _page(
        f"<h1>预警叫应确认</h1><p>{html.escape(info)}</p>"
        '<form method="post"><button type="submit">我已收到，确认</button></form>'
    )


async def link_confirm(request: web.Request) -> web.Response:
    await request.read()  # a form button sends next to nothing: over MAX_BODY is a 413
    result = await request.app[ENGINE].ack_token(request.match_info["token"])
    if not result.ok:
        return _page(f"<h1>未能确认</h1><p>{html.escape(result.reason)}</p>", 404)
    return _page("<h1>已确认收到</h1><p>谢谢。请按预警要求做好防范和转移避险。</p>")


async def healthz(request: web.Request) -> web.Response:
    report = await request.app[HEALTH]()
    return web.json_response(
        report,
        status=200 if report.get("ok") else 503,
        dumps=lambda o: json.dumps(o, ensure_ascii=False, default=str),
    )


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus exposition (text format 0.0.4)."""
    from warnd.metrics import exposition

    body = await exposition(request.app[ENGINE].ctx.store)
    return web.Response(
        body=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
