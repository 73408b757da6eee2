"""The HTTP listeners' edge: connection limits, timeouts, and logs an attack cannot flood.

A duty server's listener is exposed to whoever can reach it. Without limits, 1,100 idle
connections took every file descriptor of a process with systemd's default limit of 1,024:
feed polls and gateway requests failed with "Too many open files" and asyncio wrote a traceback
per refused ``accept()`` (docs/hardening.md). Here:

- every connection passes a ``Gate`` first: a cap per listener and per client address (trusted
  proxies exempt); over the per-address cap it is closed at once; when the listener is full,
  an idle connection (not in the middle of a request) of the address holding the most
  connections makes room for it, its longest idle one — a flood, even from many addresses,
  cannot lock out the platforms' callbacks — else it is closed at once. So the process never
  holds more sockets for its listeners than the cap, which the daemon sizes below the
  open-file limit (``fd_budget``) to keep descriptors for feeds, gateways and the store;
- a connection must send a request's headers within ``header_timeout`` (aiohttp closes a
  connection idle that long, also between requests) and its body within ``body_timeout`` (408);
- refusals are logged as one summary line per listener every ``SUMMARY_S`` seconds, and
  counted (``warnd_listener_refused_total``, ``warnd_listener_idle_closed_total``).

``start_listener`` serves any ``web.Application`` this way (the hooks app, the monitor app);
routes are added to an app before it is started, as usual.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import resource
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from aiohttp import web

from warnd.config.policy import Config
from warnd.core.errors import ConfigError
from warnd.edges import metrics

log = structlog.get_logger("warnd.listener")

BACKLOG = 128  # connections the kernel queues; asyncio accepts up to this many per pass
SUMMARY_S = 10.0
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int
    per_address: int
    header_timeout: float
    body_timeout: float
    exempt: frozenset[str] = frozenset()  # trusted proxies: many clients behind one address


def fd_budget(reserve: int) -> int:
    """File descriptors the listeners may hold: the soft limit, less those open now and
    ``reserve`` kept for everything else (feeds, gateways, the store, a burst of accepts)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: assume a small process
        in_use = 64
    return max(8, soft - in_use - reserve)


class Gate:
    """Admits or refuses the connections of one listener; summarises refusals in the log."""

    def __init__(
        self, name: str, limits: Limits, *, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.limits = limits
        self.open = 0
        self.by_address: Counter[str] = Counter()
        # idle connections by address, idle longest first: who makes room when full
        self._idle: dict[str, OrderedDict[int, _Guarded]] = {}
        self._now = now
        self._refused: Counter[str] = Counter()  # by reason, since the last summary
        self._refused_from: Counter[str] = Counter()
        self._idle_closed = 0
        self._last_summary = -SUMMARY_S
        self._flush: asyncio.TimerHandle | None = None
        self._gauge = metrics.LISTENER_CONNECTIONS.labels(name)

    def admit(self, conn: _Guarded) -> str | None:
        """None if the connection may stay, else why it is refused."""
        address = conn.address
        if (
            self.by_address[address] >= self.limits.per_address
            and address not in self.limits.exempt
        ):
            return self._refuse("per_address", address)
        if self.open >= self.limits.max_connections:
            victim = self._victim()
            if victim is None:
                return self._refuse("listener_full", address)
            self._refuse("evicted_idle", victim.address)
            victim.evict()
        self.open += 1
        self.by_address[address] += 1
        self.idle(conn)
        self._gauge.set(self.open)
        return None

    def _victim(self) -> _Guarded | None:
        """The longest idle connection of the address that holds the most connections."""
        best, most = None, 0
        for address in self._idle:  # at most max_connections addresses
            if self.by_address[address] > most:
                best, most = address, self.by_address[address]
        if best is None:
            return None
        return self._unidle(best, None)

    def _unidle(self, address: str, conn: _Guarded | None) -> _Guarded | None:
        queue = self._idle.get(address)
        if not queue:
            return None
        found = queue.popitem(last=False)[1] if conn is None else queue.pop(id(conn), None)
        if not queue:
            del self._idle[address]
        return found

    def busy(self, conn: _Guarded) -> None:
        """``conn`` is handling a request: not to be closed to make room."""
        self._unidle(conn.address, conn)

    def idle(self, conn: _Guarded) -> None:
        """``conn`` is waiting for a request: last of its address in line to make room."""
        self._idle.setdefault(conn.address, OrderedDict())[id(conn)] = conn

    def release(self, conn: _Guarded, served: bool) -> None:
        self._unidle(conn.address, conn)
        address = conn.address
        self.open -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]
        self._gauge.set(self.open)
        if not served:  # closed before one whole request: timed out, or a flood's socket
            self._idle_closed += 1
            metrics.LISTENER_IDLE.labels(self.name).inc()

    def _refuse(self, reason: str, address: str) -> str:
        metrics.LISTENER_REFUSED.labels(self.name, reason).inc()
        self._refused[reason] += 1
        self._refused_from[address] += 1
        if len(self._refused_from) > 10_000:  # a spoofed-looking spread: keep memory bounded
            self._refused_from = Counter(dict(self._refused_from.most_common(100)))
        if self._now() - self._last_summary >= SUMMARY_S:
            self.summarise()
        elif self._flush is None:  # the rest of this burst: one line when the period ends
            delay = SUMMARY_S - (self._now() - self._last_summary)
            self._flush = asyncio.get_running_loop().call_later(delay, self.summarise)
        return reason

    def summarise(self) -> None:
        """One line: what was refused (and from where) since the last line, and what is open."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._refused:
            return
        self._last_summary = self._now()
        log.warning(
            "listener_refused",
            listener=self.name,
            refused=sum(self._refused.values()),
            reasons=dict(self._refused),
            addresses=dict(self._refused_from.most_common(5)),
            open=self.open,
            idle_closed=self._idle_closed,
            limits={
                "max_connections": self.limits.max_connections,
                "per_address": self.limits.per_address,
            },
        )
        self._refused.clear()
        self._refused_from.clear()
        self._idle_closed = 0

    def close(self) -> None:
        self.summarise()


# ---- the protocol seam: every connection passes the gate first ------------------------------

_CONNECTIONS: dict[int, _Guarded] = {}  # id(aiohttp handler) -> its connection, while open


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: created only for an admitted connection."""

    __slots__ = ("_gate", "_inner", "_make", "_transport", "address", "requests")

    def __init__(self, gate: Gate, make: Callable[[], asyncio.Protocol]) -> None:
        self._gate = gate
        self._make = make
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self.address = "?"
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._transport = cast(asyncio.Transport, transport)
        if self._gate.admit(self) is not None:
            self._transport.abort()  # the descriptor is freed at once; nothing is read
            return
        self._inner = self._make()
        _CONNECTIONS[id(self._inner)] = self
        self._inner.connection_made(transport)

    def busy(self) -> None:
        self.requests += 1
        self._gate.busy(self)

    def idle(self) -> None:
        if self._inner is not None:  # still open
            self._gate.idle(self)

    def evict(self) -> None:
        """Close this connection to make room (its gate has already let go of it)."""
        self._gate.release(self, served=False)
        self._gate = _RELEASED
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            result: bool | None = self._inner.eof_received()
            return result
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        _CONNECTIONS.pop(id(self._inner), None)
        self._gate.release(self, self.requests > 0)
        self._inner.connection_lost(exc)
        self._inner = None


class _Released:
    """The gate of an evicted connection: it was already counted out."""

    def release(self, conn: _Guarded, served: bool) -> None:
        pass

    def busy(self, conn: _Guarded) -> None:
        pass

    def idle(self, conn: _Guarded) -> None:
        pass


_RELEASED: Any = _Released()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass ``gate`` (aiohttp's ``TCPSite`` otherwise)."""

    __slots__ = ("_gate", "_host", "_port", "bound_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: Gate) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port, self._gate = host, port, gate
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Guarded(self._gate, server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        sockets = self._server.sockets
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        await super().stop()
        self._gate.close()


# ---- per request: mark the connection served, bound the body, refuse absurd nesting ---------


def _edge_middleware(body_timeout: float) -> Any:
    @web.middleware
    async def edge(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        conn = _CONNECTIONS.get(id(request.protocol))
        if conn is not None:
            conn.busy()
        expiry = None
        if request.method in _BODY_METHODS and request.body_exists:
            # A body still arriving after ``body_timeout``: the handler's read fails with 408
            # (whichever way it reads: vendor callbacks stream theirs), the connection closes.
            def expire() -> None:
                if not request.content.at_eof():
                    request.content.set_exception(
                        web.HTTPRequestTimeout(text="请求体超时 body too slow")
                    )

            expiry = asyncio.get_running_loop().call_later(body_timeout, expire)
        try:
            return await handler(request)
        except RecursionError:  # e.g. json.loads of 30,000 nested "[": bad input, not a bug
            raise web.HTTPBadRequest(text="嵌套过深 nested too deeply") from None
        finally:
            if expiry is not None:
                expiry.cancel()
            if conn is not None:
                conn.idle()

    return edge


@dataclass
class Listener:
    """A started listener: its runner (``cleanup`` stops it), its gate and its port."""

    name: str
    runner: web.AppRunner
    site: GuardedSite
    gate: Gate

    @property
    def port(self) -> int:
        return self.site.bound_port

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_listener(
    name: str, app: web.Application, host: str, port: int, limits: Limits
) -> Listener:
    """Serve ``app`` on ``host:port`` behind the limits; OSError if the address is unusable."""
    app.middlewares.append(_edge_middleware(limits.body_timeout))
    runner = web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=limits.header_timeout,  # also the first request's: aiohttp ≥ 3.10
        lingering_time=2.0,
    )
    await runner.setup()
    gate = Gate(name, limits)
    site = GuardedSite(runner, host, port, gate)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return Listener(name, runner, site, gate)


#: the monitor listener serves a scraper and a health checker: a few connections suffice
MONITOR_LIMITS = Limits(max_connections=32, per_address=8, header_timeout=10.0, body_timeout=5.0)


async def start_listeners(
    cfg: Config, hooks: web.Application, monitor: web.Application, port: int
) -> list[Listener]:
    """The daemon's two listeners: ``hooks`` on ``[listen]`` (``port``: its port, or 0 in
    tests) and ``monitor`` on ``[monitor]``; ConfigError (one line) if one cannot listen.

    The listeners may hold only the file descriptors left when everything else has its share
    (``fd_budget``): a flood of connections is refused at the listener, while feeds, gateways
    and the store keep working (docs/hardening.md).
    """
    lc = cfg.listen
    concurrency = sum(c.concurrency for c in cfg.channels.values())
    # an accept burst is up to a backlog per listener per loop pass, and the sockets of ~3
    # passes may be open before the refused ones are closed: 4 backlogs, plus everything else
    budget = fd_budget(4 * BACKLOG + 128 + concurrency + 8 * len(cfg.feeds))
    cap = max(1, min(lc.max_connections, budget - MONITOR_LIMITS.max_connections))
    if cap < lc.max_connections:
        log.warning(
            "listener_capped",
            max_connections=cap,
            configured=lc.max_connections,
            reason="open-file limit (LimitNOFILE) too low for listen.max_connections",
        )
    limits = Limits(
        max_connections=cap,
        per_address=lc.max_connections_per_address,
        header_timeout=lc.header_timeout.total_seconds(),
        body_timeout=lc.body_timeout.total_seconds(),
        exempt=frozenset(lc.trusted_proxies),
    )
    started: list[Listener] = []
    for name, app, host, at, lim in (
        ("hooks", hooks, lc.host, port, limits),
        ("monitor", monitor, cfg.monitor.host, cfg.monitor.port, MONITOR_LIMITS),
    ):
        try:
            started.append(await start_listener(name, app, host, at, lim))
        except OSError as exc:  # port taken, address not local: a one-line reason, no trace
            for each in started:
                await each.stop()
            raise ConfigError(
                f"无法监听 cannot listen on {host}:{at}: {exc.strerror or exc}",
                source=str(cfg.path),
                field="listen" if name == "hooks" else "monitor",
            ) from None
    return started


# ---- who is asking: the client's address, and a per-address budget ----------------------------


def client_address(request: web.Request, trusted: Iterable[str] = ()) -> str:
    """The peer, or for a trusted proxy the last address it put in ``X-Forwarded-For``."""
    peer = request.remote or "?"
    if peer in trusted:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return peer
    return peer


class AddressBudget:
    """A token bucket per client address: ``burst`` at once, refilled at ``rate`` per second.

    Memory is bounded (``keys`` addresses, least recently seen dropped). Time is injected.
    """

    def __init__(
        self,
        burst: float,
        rate: float,
        *,
        now: Callable[[], float] = time.monotonic,
        keys: int = 10_000,
    ) -> None:
        self.burst, self.rate, self._now, self._keys = burst, rate, now, keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, address: str) -> float:
        tokens, at = self._buckets.get(address, (self.burst, self._now()))
        return min(self.burst, tokens + (self._now() - at) * self.rate)

    def exhausted(self, address: str) -> bool:
        return self._level(address) < 1.0

    def spend(self, address: str) -> None:
        self._buckets[address] = (self._level(address) - 1.0, self._now())
        self._buckets.move_to_end(address)
        while len(self._buckets) > self._keys:
            self._buckets.popitem(last=False)
