"""The acknowledgement benchmark's HTTP client, and the bare server it is compared with.

``python bench/ackclient.py client URL SECRET_FILE IDS_FILE TS [--connections 64]``: posts a
signed IVR key press (contracts §6: ``X-Warnd-Timestamp``/``X-Warnd-Signature`` over
``<ts>.<body>``) for every message id in IDS_FILE, as fast as ``--connections`` connections
can; prints one JSON line: requests, answered 200 with ``"ok": true``, seconds, requests/s,
process CPU µs per request.

``python bench/ackclient.py server PORT SECRET_FILE``: a bare aiohttp server that verifies the
same signature (``warnd.edges.signature.verify``, the same replay guard) and answers 200
with a small JSON body — the floor of a signed hook on this machine.

Both run as processes of their own, so that neither shares an event loop (or the GIL) with
the daemon being measured.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from warnd.edges.signature import ReplayGuard, SignatureError, sign, verify


async def client(url: str, secret: bytes, ids: list[str], ts: int, connections: int) -> None:
    bodies = [json.dumps({"id": i, "digits": "1"}).encode() for i in ids]
    ok = 0
    it = iter(bodies)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def worker() -> None:
            nonlocal ok
            for raw in it:
                headers = {
                    "Content-Type": "application/json",
                    "X-Warnd-Timestamp": str(ts),
                    "X-Warnd-Signature": sign(secret, ts, raw),
                }
                async with s.post(url, data=raw, headers=headers) as r:
                    body = await r.read()
                    if r.status == 200 and b'"ok": true' in body:
                        ok += 1

        gc.disable()
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = len(bodies)
    print(
        json.dumps(
            {
                "requests": n,
                "ok": ok,
                "seconds": round(elapsed, 3),
                "per_s": round(n / elapsed, 1),
                "client_cpu_us": round(cpu / n * 1e6, 1),
            }
        ),
        flush=True,
    )


def server(port: int, secret: bytes) -> None:
    guard = ReplayGuard(300)

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers.get("X-Warnd-Timestamp")
        sig = request.headers.get("X-Warnd-Signature")
        try:
            stamp = int(ts or 0)
            verify(secret, ts, sig, raw, now=stamp)
            guard.check(stamp, sig or "", stamp)
        except SignatureError:
            raise web.HTTPUnauthorized() from None
        data = json.loads(raw)
        return web.json_response({"ok": True, "id": data.get("id")})

    async def ready(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hooks/ivr", hook)
    app.router.add_get("/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def main() -> None:
    mode = sys.argv[1]
    if mode == "server":
        server(int(sys.argv[2]), Path(sys.argv[3]).read_bytes().strip())
        return
    url, secret_file, ids_file, ts = sys.argv[2:6]
    connections = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[6] == "--connections" else 64
    ids = Path(ids_file).read_text(encoding="utf-8").split()
    asyncio.run(client(url, Path(secret_file).read_bytes().strip(), ids, int(ts), connections))


if __name__ == "__main__":
    main()
