"""Deliver one message through one channel: limits, retries with backoff, a plain result.

Only ``TransientError`` is retried (contracts §5: 429/5xx/timeouts), with exponential backoff
plus jitter, never past the caller's deadline (a call attempt is useless once its ack window is
over) and at most ``Backoff.max_tries`` times. Every try is one request with the same message
``id``, so a gateway can drop duplicates. ``deliver`` never raises for a delivery failure: the
dispatcher reads the ``DeliveryResult`` and moves on (next channel, or the ladder).

Every failed request is counted (``warnd_delivery_failures_total{channel,kind,permanent}``) and
logged — ``delivery_retry`` for a try that will be retried, ``delivery failed`` for the last —
at most 20 lines per channel every 10 s; the lines left out are summed in the ``suppressed``
field of a later line (``logs.LimitedLog``: a gateway down at province scale is a few lines).
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

from warnd.core.errors import DeliveryError, PermanentError, TransientError
from warnd.edges import logs, metrics
from warnd.edges.channels import Channel, Outbound, Sent
from warnd.edges.channels.ratelimit import Limiter, Sleep

_log = structlog.get_logger("warnd.channels.delivery")
_LINES = logs.LimitedLog(_log, burst=20, per=10.0)  # per channel


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
    sent: Sent | None = None  # the provider's reference, when its channel returned one


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
            sent = await channel.send(msg)
        return _DELIVERED if sent is None else DeliveryResult(True, False, 1, None, sent=sent)
    except TransientError as exc:
        wait = backoff.wait(1, rng)
        if backoff.max_tries <= 1 or now() - start + wait > deadline_s:
            return _failed(channel, msg, exc, tries)
        _retrying(channel, msg, exc, tries, wait)
        await sleep(wait)
    except DeliveryError as exc:
        return _failed(channel, msg, exc, tries)
    except Exception as exc:  # a bug in one channel must not stop the dispatcher
        _log.exception("channel crashed", channel=channel.name, id=msg.id)
        return DeliveryResult(False, True, tries, f"{type(exc).__name__}: {exc}")

    def give_up(state: RetryCallState) -> bool:
        if state.attempt_number + 1 >= backoff.max_tries:
            return True
        return now() - start + state.upcoming_sleep > deadline_s

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, DeliveryError):
            _retrying(channel, msg, exc, tries, state.upcoming_sleep)

    retrying = AsyncRetrying(
        sleep=cast(Any, sleep),
        retry=retry_if_exception_type(TransientError),
        wait=lambda state: backoff.wait(state.attempt_number + 1, rng),
        stop=give_up,
        reraise=True,
        before_sleep=before_sleep,
    )
    try:
        async for attempt in retrying:
            with attempt:
                tries += 1
                async with limiter.slot():
                    sent = await channel.send(msg)
    except DeliveryError as exc:
        return _failed(channel, msg, exc, tries)
    except Exception as exc:  # a bug in one channel must not stop the dispatcher
        _log.exception("channel crashed", channel=channel.name, id=msg.id)
        return DeliveryResult(False, True, tries, f"{type(exc).__name__}: {exc}")
    return DeliveryResult(ok=True, permanent=False, tries=tries, error=None, sent=sent)


def _retrying(channel: Channel, msg: Outbound, exc: DeliveryError, tries: int, wait: float) -> None:
    """One failed try that will be retried: counted, and logged unless throttled."""
    metrics.DELIVERY_FAILURES.labels(channel.name, msg.kind, "false").inc()
    _LINES.warning(
        channel.name,
        "delivery_retry",
        channel=channel.name,
        kind=msg.kind,
        id=msg.id,
        tries=tries,
        wait_s=round(wait, 2),
        error=str(exc),
    )


def _failed(channel: Channel, msg: Outbound, exc: DeliveryError, tries: int) -> DeliveryResult:
    permanent = isinstance(exc, PermanentError)
    metrics.DELIVERY_FAILURES.labels(channel.name, msg.kind, str(permanent).lower()).inc()
    _LINES.warning(
        channel.name,
        "delivery failed",
        channel=channel.name,
        kind=msg.kind,
        id=msg.id,
        tries=tries,
        permanent=permanent,
        error=str(exc),
    )
    return DeliveryResult(False, permanent, tries, str(exc), exc.status)
