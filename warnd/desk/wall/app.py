"""The wall's routes on the daemon's listener: ``GET /wall``, ``/wall/data``, its CSS and script.

Read-only and not open to the world: the page and its data need the wall's token, given once
in the URL (``/wall?token=…``, which also sets an HttpOnly cookie so that the browser's address
bar and reloads no longer carry it) or in that cookie. Anything else is a 401 that shows
nothing; refusals are logged at most once a minute with their count.

The figures (``warnd.desk.wall.data``) are computed at most once per half refresh interval
(at least 1 s) however many screens ask, and one computation at a time: a room of walls, or a
valid token in a loop, costs the daemon one read of the status path per interval.

The page and its script and style come from ``static/`` (package data), are served from here
with a Content-Security-Policy that allows nothing but this origin: the duty room may have no
internet, and a headline from a feed is text, never markup.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from warnd.core.clock import Clock
from warnd.desk.wall.config import WallConfig
from warnd.desk.wall.data import FeedHealth, Names, feed_health, wall_data

if TYPE_CHECKING:
    from warnd.desk.views.reader import Source
    from warnd.engine import Engine
    from warnd.store import Store

log = structlog.get_logger("warnd.wall")

COOKIE = "warnd_wall"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SAFE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_TYPES = {"html": "text/html", "css": "text/css", "js": "text/javascript"}
_REFUSED = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>值班墙</title></head><body style="font-family:sans-serif;margin:3em">
<h1>需要值班墙口令</h1><p>请用管理员提供的值班墙地址（含 <code>?token=</code>）打开本页。</p>
<p>Wall token required: open the wall address you were given.</p></body></html>"""


def _asset(name: str) -> bytes:
    return (resources.files("warnd.desk.wall") / "static" / name).read_bytes()


class Refusals:
    """Counts refused requests; one log line a minute at most (a scan must not flood)."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self.count = 0
        self._logged_at: float | None = None

    def refused(self, request: web.Request) -> None:
        self.count += 1
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= self.every_s:
            self._logged_at = now
            log.warning("wall_refused", path=request.path, refused_so_far=self.count)


class Wall:
    """The wall of one daemon: its token, its data source and its cache."""

    def __init__(
        self,
        config: WallConfig,
        source: Source | Store,
        clock: Clock,
        tz: ZoneInfo,
        *,
        names: Names | None = None,
        feeds: Callable[[], Awaitable[Sequence[FeedHealth]]] | None = None,
    ) -> None:
        self.config = config
        self.token = config.token()
        self._cookie = hashlib.sha256(b"warnd-wall\0" + self.token.encode()).hexdigest()
        self.source = source
        self.clock = clock
        self.tz = tz
        self.names = names
        self.feeds = feeds
        self.refresh_s = config.refresh.total_seconds()
        self.ttl_s = max(1.0, self.refresh_s / 2)
        self.refusals = Refusals()
        self.seq = 0
        self._lock = asyncio.Lock()
        self._cached: tuple[float, int, bytes] | None = None
        self._assets = {n: _asset(n) for n in ("wall.html", "wall.css", "wall.js")}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/wall", self.page),
            web.get("/wall/data", self.data),
            web.get("/wall/wall.css", self.asset),
            web.get("/wall/wall.js", self.asset),
        ]

    # ---- access -------------------------------------------------------------------------

    def _allowed(self, request: web.Request) -> bool:
        given = request.query.get("token")
        if given is not None:
            return hmac.compare_digest(given.encode(), self.token.encode())
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self._cookie.encode())

    def _keep(self, request: web.Request, resp: web.StreamResponse) -> None:
        """A valid token in the URL becomes a cookie for the wall's paths."""
        if "token" in request.query:
            resp.set_cookie(
                COOKIE,
                self._cookie,
                path="/wall",
                max_age=400 * 86400,
                httponly=True,
                samesite="Strict",
                secure=request.secure,
            )

    # ---- handlers -----------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            self.refusals.refused(request)
            return web.Response(text=_REFUSED, status=401, content_type="text/html", headers=SAFE)
        resp = web.Response(
            body=self._assets["wall.html"],
            content_type="text/html",
            charset="utf-8",
            headers={**SAFE, "Content-Security-Policy": CSP},
        )
        self._keep(request, resp)
        return resp

    async def asset(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1]
        return web.Response(
            body=self._assets[name],
            content_type=_TYPES[name.rsplit(".", 1)[1]],
            charset="utf-8",
            headers={**SAFE, "Cache-Control": "no-cache"},
        )

    async def data(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            self.refusals.refused(request)
            return web.json_response({"error": "wall token required"}, status=401, headers=SAFE)
        status, body = await self.snapshot()
        # the server's clock now, for the page's clock and countdowns (the figures may be from
        # the cache, up to half a refresh interval old)
        served = {"X-Warnd-Now": str(int(self.clock.now().timestamp() * 1000))}
        resp = web.Response(
            body=body, status=status, content_type="application/json", headers=SAFE | served
        )
        self._keep(request, resp)
        return resp

    async def snapshot(self) -> tuple[int, bytes]:
        """The current figures as a JSON body, from the cache while it is fresh."""
        async with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
                return cached[1], cached[2]
            status, body = 200, b""
            try:
                body = json.dumps(await self.figures(), ensure_ascii=False).encode()
            except Exception as exc:  # the store is busy or down: say so, keep the daemon up
                log.warning("wall_data_failed", error=f"{type(exc).__name__}: {exc}")
                status = 503
                body = json.dumps({"error": f"读取数据失败 {type(exc).__name__}"}).encode()
            self._cached = (time.monotonic(), status, body)
            return status, body

    async def figures(self) -> dict[str, Any]:
        feeds = await self.feeds() if self.feeds is not None else ()
        out = await wall_data(
            self.source,
            self.clock.now(),
            self.tz,
            names=self.names,
            mask=self.config.mask_phones,
            feeds=feeds,
        )
        self.seq += 1
        return out | {"seq": self.seq, "refresh_s": self.refresh_s, "title": self.config.title}


def directory_names(engine: Engine) -> Names:
    """Names from the daemon's loaded directory (reloaded on SIGHUP: looked up at each call)."""

    def names(ids: Iterable[str]) -> Mapping[str, str]:
        directory = engine.ctx.directory
        return {i: c.name for i in ids if (c := directory.contact(i)) is not None and c.name}

    return names


def daemon_routes(
    config: WallConfig,
    store: Store,
    engine: Engine,
    health: Callable[[], Awaitable[Mapping[str, Any]]],
) -> list[web.RouteDef]:
    """The wall on a running daemon: its store, clock, zone, directory and feed health."""

    async def feeds() -> list[FeedHealth]:
        return feed_health(await health())

    wall = Wall(
        config,
        store,
        engine.ctx.clock,
        engine.ctx.tz,
        names=directory_names(engine),
        feeds=feeds,
    )
    return wall.routes()
