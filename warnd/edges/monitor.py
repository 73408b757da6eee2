"""The monitor listener's app: ``GET /healthz`` (JSON, 200/503) and ``GET /metrics``.

Apart from the hooks' listener (which faces the SMS and voice platforms and people's phones):
its own address, loopback by default (``[monitor]``, docs/deployment.md), because the health
report names feed URLs and errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from warnd.store import Store

log = structlog.get_logger("warnd.monitor")

Report = Callable[[], Awaitable[dict[str, Any]]]
REPORT: web.AppKey[Report] = web.AppKey("report")
STORE: web.AppKey[Callable[[], Store | None]] = web.AppKey("store")
SCRAPE_TIMEOUT_S = 5.0


def make_monitor_app(report: Report, store: Callable[[], Store | None]) -> web.Application:
    app = web.Application(client_max_size=1024)
    app[REPORT] = report
    app[STORE] = store
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def healthz(request: web.Request) -> web.Response:
    report = await request.app[REPORT]()
    return web.json_response(
        report,
        status=200 if report.get("ok") else 503,
        dumps=lambda o: json.dumps(o, ensure_ascii=False, default=str),
    )


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus exposition (text format 0.0.4); the process's own counters even when the
    store does not answer (its families then keep the last values read)."""
    from warnd.edges import metrics

    store = request.app[STORE]()
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT_S):
            body = await metrics.exposition(store)
    except Exception as exc:  # TimeoutError or a store error: the counters still matter
        log.warning("metrics_store_unreadable", error=f"{type(exc).__name__}: {exc}")
        body = await metrics.exposition(None)
    return web.Response(
        body=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
