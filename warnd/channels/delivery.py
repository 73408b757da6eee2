"""Deliver one message through one channel: limits, retries with backoff, a plain result.

Only ``TransientError`` is retried (contracts §5: 429/5xx/timeouts), with exponential backoff
plus jitter, never past the caller's deadline (a call attempt is useless once its ack window is
over) and at most ``Backoff.max_tries`` times. Every try is one request with the same message
``id``, so a gateway can drop duplicates. ``deliver`` never raises for a delivery failure: the
dispatcher reads the ``DeliveryResult`` and moves on (next channel, or the ladder).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from warnd.channels import Channel, Outbound
from warnd.channels.ratelimit import Limiter, Sleep
from warnd.errors import DeliveryError, PermanentError, TransientError

_log = structlog.get_logger("warnd.channels.delivery")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry k (k = 1, 2, ...) waits ``min(maximum, initial * 2**(k-1) + U(0, jitter))`` s."""

    initial: float = 1.0
    maximum: float = 30.0
    jitter: float = 1.0
    max_tries: int = 5

    def wait(self, retry: int, rng: random.Random | None = None) -> float:
        spread: float = (rng or random).uniform(0.0, self.jitter) if self.jitter > 0 else 0.0
        return min(self.maximum, self.initial * 2.0 ** (retry - 1) + spread)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one message fared. ``permanent`` means retrying cannot help (4xx, bad number)."""

    ok: bool
    permanent: bool
    tries: int
    error: str | None
    status: int | None = None


_DELIVERED = DeliveryResult(ok=True, permanent=False, tries=1, error=None)  # frozen: shared


async def deliver(
    channel: Channel,
    msg: Outbound,
    *,
    limiter: Limiter,
    deadline_s: float,
    sleep: Sleep = asyncio.sleep,
    backoff: Backoff = Backoff(),
    now: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> DeliveryResult:
    """Send ``msg``, retrying transient failures while the next wait ends within ``deadline_s``.

    ``deadline_s`` counts from the call; the first try is always made. Every try takes a
    concurrency slot and a rate token from ``limiter``; backoff waits hold neither.
    """
    if msg.kind not in channel.kinds:
        error = f"channel {channel.name} does not carry {msg.kind}"
        return DeliveryResult(ok=False, permanent=True, tries=0, error=error)
    start = now()
    tries = 1
    try:  # the common case, without building a retry loop for every message
        async with limiter.slot():
            await channel.send(msg)
        return _DELIVERED
    except TransientError as exc:
        if backoff.max_tries <= 1 or now() - start + backoff.wait(1, rng) > deadline_s:
            return _failed(channel, msg, exc, tries)
        await sleep(backoff.wait(1, rng))
    except DeliveryError as exc:
        return _failed(channel, msg, exc, tries)
    except Exception as exc:  # a bug in one channel must not stop the dispatcher
        _log.exception("channel crashed", channel=channel.name, id=msg.id)
        return DeliveryResult(False, True, tries, f"{type(exc).__name__}: {exc}")

    def give_up(state: RetryCallState) -> bool:
        if state.attempt_number + 1 >= backoff.max_tries:
            return True
        return now() - start + state.upcoming_sleep > deadline_s

    retrying = AsyncRetrying(
        sleep=cast(Any, sleep),
        retry=retry_if_exception_type(TransientError),
        wait=lambda state: backoff.wait(state.attempt_number + 1, rng),
        stop=give_up,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                tries += 1
                async with limiter.slot():
                    await channel.send(msg)
    except DeliveryError as exc:
        return _failed(channel, msg, exc, tries)
    except Exception as exc:  # a bug in one channel must not stop the dispatcher
        _log.exception("channel crashed", channel=channel.name, id=msg.id)
        return DeliveryResult(False, True, tries, f"{type(exc).__name__}: {exc}")
    return DeliveryResult(ok=True, permanent=False, tries=tries, error=None)


def _failed(channel: Channel, msg: Outbound, exc: DeliveryError, tries: int) -> DeliveryResult:
    permanent = isinstance(exc, PermanentError)
    _log.warning(
        "delivery failed",
        channel=channel.name,
        id=msg.id,
        tries=tries,
        permanent=permanent,
        error=str(exc),
    )
    return DeliveryResult(False, permanent, tries, str(exc), exc.status)
