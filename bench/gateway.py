"""A minimal SMS/voice gateway fake for benchmarks: accepts POSTs, counts them, answers 200.

Run as its own process (``python bench/gateway.py PORT``) so that the process being measured
does not share its event loop. ``GET /stats`` returns the counts.
"""

from __future__ import annotations

import sys

from aiohttp import web

received = {"requests": 0, "ids": 0}
seen: set[str] = set()


async def send(request: web.Request) -> web.Response:
    body = await request.json()
    received["requests"] += 1
    if body.get("id") not in seen:
        seen.add(body.get("id"))
        received["ids"] += 1
    return web.json_response({"ok": True})


async def stats(_request: web.Request) -> web.Response:
    return web.json_response(received)


def main() -> None:
    app = web.Application()
    app.router.add_post("/send", send)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
