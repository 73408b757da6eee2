"""A real HTTP gateway for tests: the far end of the ``webhook`` channel (contracts §5).

It listens on 127.0.0.1 (port 0 unless told), records every POST it receives (body, raw bytes,
headers, when it arrived, what it answered) and can misbehave on demand:

- ``fail_next(n, status)``: answer the next ``n`` requests with ``status`` (500, 429, 400, ...);
- ``script(pred, *statuses)``: answer requests whose body matches ``pred`` with the given
  statuses in order (one per matching request), then normally;
- ``share_5xx`` / ``share_429``: answer that share of requests with 503 / 429 (seeded RNG);
- ``latency``: seconds to wait before answering;
- ``hold_after(n)``: answer the first ``n`` requests (counted over the fake's life), then keep
  every later request waiting until ``release()`` — requests are received and recorded but
  never answered, exactly what a sender sees when it dies mid-send;
- ``down()`` / ``up()``: close the listening socket (connection refused) and open it again on
  the same port;
- ``on_count(n, fn)``: call ``fn(receipt)`` the moment request number ``n`` arrives, before it
  is answered (e.g. to SIGKILL the sender at an exact point of a fan-out).

Waiting is always bounded: ``wait_for(count)`` polls the observable count with a timeout.
Used in-process by tests/test_daemon.py and as the gateway of the daemon subprocess in
tests/test_crash.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from warnd.testing import eventually

Predicate = Callable[[dict[str, Any]], bool]

#: the keys of a contracts §5 body; the channel may add more (drill, reply_code, link)
BODY_KEYS = frozenset({"id", "to", "kind", "purpose", "text", "warning", "contact"})


@dataclass
class Receipt:
    """One POST as the gateway saw it."""

    n: int  # 1-based order of arrival
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    virtual: datetime | None  # the test's clock on arrival, when the fake was given one
    status: int | None = None  # what was answered; None while held / never answered
    answered_at: float | None = None
    replayed: bool = False  # ``idempotent``: a repeated id, answered from memory, not delivered

    @property
    def id(self) -> str:
        return str(self.body.get("id"))

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Script:
    pred: Predicate
    statuses: list[int] = field(default_factory=list)


class GatewayFake:
    def __init__(
        self,
        *,
        now: Callable[[], datetime] | None = None,
        path: str = "/send",
        port: int = 0,
        seed: int = 631,
    ) -> None:
        self.path = path
        self.port = port
        self._now = now
        self.receipts: list[Receipt] = []
        self.share_5xx = 0.0
        self.share_429 = 0.0
        self.latency = 0.0
        # As an idempotency-key API: a repeated id gets the first answer again and is not
        # delivered again (contracts §5 allows a gateway to drop repeated ids).
        self.idempotent = False
        self._answers: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._fail_next: list[int] = []
        self._scripts: list[_Script] = []
        self._hold_after: int | None = None
        self._triggers: dict[int, Callable[[Receipt], object]] = {}
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # ---- life cycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
        await self._runner.setup()
        await self.up()
        return self.url

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Stop listening: senders get 'connection refused' until ``up()``."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- failure modes --------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        self._fail_next.extend([status] * n)

    def script(self, pred: Predicate, *statuses: int) -> None:
        self._scripts.append(_Script(pred, list(statuses)))

    def on_count(self, n: int, fn: Callable[[Receipt], object]) -> None:
        self._triggers[n] = fn

    def reset(self) -> None:
        """Forget every failure mode: answer 200 from now on (receipts are kept)."""
        self._fail_next.clear()
        self._scripts.clear()
        self.share_5xx = self.share_429 = self.latency = 0.0

    def hold_after(self, n: int | None) -> None:
        """Answer requests up to number ``n`` (over the fake's life); hold every later one."""
        self._hold_after = n
        if n is not None:
            self._released = asyncio.Event()

    def release(self) -> None:
        """Answer every held request (200) and stop holding."""
        self._hold_after = None
        self._released.set()

    # ---- what was received ----------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.receipts)

    def bodies(self, **match: object) -> list[dict[str, Any]]:
        return [r.body for r in self.receipts if all(r.body.get(k) == v for k, v in match.items())]

    def accepted(self, **match: object) -> list[Receipt]:
        """Receipts answered 2xx, optionally filtered by body fields."""
        return [
            r for r in self.receipts if r.ok and all(r.body.get(k) == v for k, v in match.items())
        ]

    def id_counts(self) -> Counter[str]:
        return Counter(r.id for r in self.receipts)

    def unexpected_repeats(self, allowed: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Ids received again although an earlier receipt of the same id was answered 2xx.

        A repeat after a non-2xx answer (or no answer at all) is a legitimate retry; ids in
        ``allowed`` (e.g. in flight when the sender was killed) may repeat regardless.
        """
        accepted: set[str] = set()
        bad: list[str] = []
        for r in self.receipts:
            if r.id in accepted and r.id not in allowed:
                bad.append(r.id)
            if r.ok:
                accepted.add(r.id)
        return bad

    async def wait_for(self, count: int, timeout: float = 20.0) -> int:
        """Poll until at least ``count`` requests arrived; AssertionError after ``timeout``."""
        await eventually(
            lambda: self.count >= count,
            timeout=timeout,
            every=0.01,
            what=lambda: f"gateway received {self.count} requests, expected {count}",
        )
        return self.count

    # ---- the handler ----------------------------------------------------------------------

    def _status_for(self, body: dict[str, Any]) -> int:
        for s in self._scripts:
            if s.statuses and s.pred(body):
                return s.statuses.pop(0)
        if self._fail_next:
            return self._fail_next.pop(0)
        roll = self._rng.random()
        if roll < self.share_5xx:
            return 503
        if roll < self.share_5xx + self.share_429:
            return 429
        return 200

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        receipt = Receipt(
            n=len(self.receipts) + 1,
            body=body if isinstance(body, dict) else {"_body": body},
            raw=raw,
            headers=dict(request.headers),
            at=time.monotonic(),
            virtual=self._now() if self._now else None,
        )
        self.receipts.append(receipt)
        trigger = self._triggers.pop(receipt.n, None)
        if trigger is not None:
            trigger(receipt)
        if self._hold_after is not None and receipt.n > self._hold_after:
            await self._released.wait()
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.idempotent and receipt.id in self._answers:
            status, receipt.replayed = self._answers[receipt.id], True
        else:
            status = self._answers[receipt.id] = self._status_for(receipt.body)
        receipt.status, receipt.answered_at = status, time.monotonic()
        if 200 <= status < 300:
            return web.json_response({"ok": True, "id": receipt.id})
        return web.json_response({"ok": False, "error": f"fake {status}"}, status=status)
