"""Per-channel sending limits: a token bucket for the rate, a semaphore for concurrency.

Carriers throttle bulk SMS and gateways cap parallel requests (domain.md), so every send goes
through the channel's ``Limiter``. Time is injected: ``now`` is a monotonic clock in seconds and
``sleep`` the coroutine that waits; tests drive both by hand, so nothing really waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from warnd.edges.channels.config import ChannelConfig, RateLimit

Sleep = Callable[[float], Awaitable[object]]
_EPSILON = 1e-9  # float slack so that sleeping exactly the deficit is enough


class TokenBucket:
    """Grants ``rate.count`` sends per ``rate.per``, refilling continuously; starts full."""

    def __init__(
        self, rate: RateLimit, now: Callable[[], float], *, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.capacity = float(rate.count)
        self.per_second = rate.per_second
        self._now = now
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = now()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._now()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.per_second)
        self._stamp = now

    def try_acquire(self) -> float:
        """Take a token: 0.0 when granted, else the seconds until one will be available."""
        self._refill()
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.per_second

    async def acquire(self) -> None:
        """Wait (only the computed deficit) until a token is granted; first come, first served."""
        async with self._lock:
            while (wait := self.try_acquire()) > 0.0:
                await self._sleep(wait)


class Limiter:
    """A channel's rate limit and concurrency limit, taken together for each send."""

    def __init__(
        self,
        rate: RateLimit | None,
        concurrency: int,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.bucket = TokenBucket(rate, now, sleep=sleep) if rate is not None else None
        self.concurrency = concurrency
        self._semaphore = asyncio.Semaphore(concurrency)

    @classmethod
    def for_channel(
        cls,
        cfg: ChannelConfig,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> Limiter:
        return cls(cfg.rate, cfg.concurrency, now=now, sleep=sleep)

    @classmethod
    def unlimited(cls) -> Limiter:
        """No rate limit and a generous concurrency: for tests and the log channel."""
        return cls(None, 1000)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one concurrency slot, then take a rate token: the token is spent when sending."""
        async with self._semaphore:
            if self.bucket is not None:
                await self.bucket.acquire()
            yield
