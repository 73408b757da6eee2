"""Acknowledgement intake over HTTP (contracts §6): the hooks' listener app.

Hooks must carry a fresh HMAC signature (401 and nothing changes otherwise; the body never says
which check failed, the log does); confirmation links acknowledge only on POST, because link
scanners and chat previews open links by GET, and only from their own page (a POST whose
``Origin`` is another site is refused: a page elsewhere must not acknowledge for the person).
Requests for links that do not exist are budgeted per client address (``LINK_MISSES``): past
the budget, ``/a/…`` answers 429 without a lookup. ``/healthz`` and ``/metrics`` are on the
monitor listener (``warnd.edges.monitor``). Connection limits: ``warnd.edges.listener``.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiohttp import web
from yarl import URL

from warnd.core import phone
from warnd.core.clock import wall_now
from warnd.edges import logs
from warnd.edges.listener import AddressBudget, client_address
from warnd.edges.signature import ReplayGuard, SignatureError, mask_phone, verify
from warnd.engine import Engine
from warnd.engine.acks import AckResult

log = structlog.get_logger("warnd.ack")

MAX_BODY = 64 * 1024
#: unknown or expired links per client address: 20 at once, then one every 6 s (10 a minute);
#: a person opening their own link never spends any
LINK_MISSES = (20.0, 1 / 6)
UNAUTHORIZED = "签名无效 unauthorized"  # the same body whatever failed: the log says what
ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
SECRET: web.AppKey[bytes] = web.AppKey("secret", bytes)
GUARD: web.AppKey[ReplayGuard] = web.AppKey("guard", ReplayGuard)
ORIGINS: web.AppKey[frozenset[str]] = web.AppKey("origins", frozenset)
PROXIES: web.AppKey[frozenset[str]] = web.AppKey("proxies", frozenset)
MISSES: web.AppKey[AddressBudget] = web.AppKey("misses", AddressBudget)


def make_app(
    engine: Engine,
    secret: bytes,
    *,
    max_age_s: float = 300,
    extra_routes: Iterable[web.RouteDef] = (),
    public_url: str | None = None,
    trusted_proxies: Iterable[str] = (),
    link_misses: AddressBudget | None = None,
) -> web.Application:
    """The hooks listener's app; ``extra_routes`` are channels' vendor callbacks
    (warnd.edges.vendors). More routes may be added to the returned app before it is started."""
    app = web.Application(client_max_size=MAX_BODY)
    logs.conceal(secret)  # never written whole into a log line, whatever carries it
    app[ENGINE] = engine
    app[SECRET] = secret
    app[GUARD] = ReplayGuard(max_age_s)
    app[ORIGINS] = frozenset({URL(public_url).authority.lower()} if public_url else ())
    app[PROXIES] = frozenset(trusted_proxies)
    app[MISSES] = link_misses or AddressBudget(*LINK_MISSES)
    app.router.add_post("/hooks/reply", reply_hook)
    app.router.add_post("/hooks/ivr", ivr_hook)
    app.router.add_get("/a/{token}", link_page)
    app.router.add_post("/a/{token}", link_confirm)
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
        raise web.HTTPUnauthorized(text=UNAUTHORIZED) from None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body must be JSON") from None
    except RecursionError:  # 30,000 nested "[": refused, not a 500
        log.warning("hook_refused", path=request.path, reason="nested_too_deeply")
        raise web.HTTPBadRequest(text="body nested too deeply") from None
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


_SLOW_DOWN = "<h1>尝试过多</h1><p>请稍后再试，或直接回复短信 1、接听语音电话按 1。</p>"


_REFUSALS = logs.LimitedLog(log, burst=5, per=60.0)  # a guessing run: a few lines, not one each


def _refused(reason: str, address: str, **kw: Any) -> None:
    _REFUSALS.warning((reason, address), "link_refused", reason=reason, address=address, **kw)


def _budgeted(request: web.Request) -> str | None:
    """The client's address, or None when it has used up its budget of unknown links."""
    proxies: frozenset[str] = request.app[PROXIES]
    address = client_address(request, proxies)
    if request.app[MISSES].exhausted(address):
        _refused("too_many_unknown_links", address)
        return None
    return address


def _missed(request: web.Request, address: str) -> None:
    request.app[MISSES].spend(address)


def _same_origin(request: web.Request) -> bool:
    """A browser's POST from this site's own page (or from no page: no Origin header, as some
    phones' browsers send). ``Origin: null`` (a sandboxed or file page) is not ours."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") != "cross-site"
    try:
        authority = URL(origin.strip()).authority.lower()
    except ValueError:
        return False
    return bool(authority) and (
        authority == request.host.lower() or authority in request.app[ORIGINS]
    )


async def link_page(request: web.Request) -> web.Response:
    """Show what is to be confirmed; never acknowledges (scanners open links)."""
    address = _budgeted(request)
    if address is None:
        return _page(_SLOW_DOWN, 429)
    token = request.match_info["token"]
    info = await request.app[ENGINE].describe_token(token)
    if info is None:
        _missed(request, address)
        return _page("<h1>链接无效或已过期</h1><p>请直接回复短信 1 或联系值班室。</p>", 404)
    return _page(
        f"<h1>预警叫应确认</h1><p>{html.escape(info)}</p>"
        '<form method="post"><button type="submit">我已收到，确认</button></form>'
    )


async def link_confirm(request: web.Request) -> web.Response:
    await request.read()  # a form button sends next to nothing: over MAX_BODY is a 413
    if not _same_origin(request):
        origin = request.headers.get("Origin", "")[:100]
        proxies: frozenset[str] = request.app[PROXIES]
        _refused("cross_origin", client_address(request, proxies), origin=origin)
        return _page("<h1>未能确认</h1><p>请在短信中的链接页面上点击按钮确认。</p>", 403)
    address = _budgeted(request)
    if address is None:
        return _page(_SLOW_DOWN, 429)
    result = await request.app[ENGINE].ack_token(request.match_info["token"])
    if not result.ok:
        if result.contact_id is None:  # not a link of ours (or expired): counts as a guess
            _missed(request, address)
        return _page(f"<h1>未能确认</h1><p>{html.escape(result.reason)}</p>", 404)
    return _page("<h1>已确认收到</h1><p>谢谢。请按预警要求做好防范和转移避险。</p>")
