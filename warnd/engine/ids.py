"""The one generator of message ids, link tokens and reply codes.

All three come from the OS's CSPRNG (``os.urandom``), read 64 KiB at a time: every queued
message needs an id and every new call a reply code (and a link token when links are on), and
three reads of the random source per message were a tenth of the engine's time in a
province-wide fan-out. Used from the event loop's thread only; bytes are never reused.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Container


class _Entropy:
    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        pos = self._pos
        if pos + n > len(self._buf):
            self._buf, pos = os.urandom(self._size), 0
        self._pos = pos + n
        return self._buf[pos : pos + n]

    def below(self, n: int) -> int:
        """Uniform in [0, n) for n ≤ 2**24 (rejection sampling over three bytes)."""
        limit = (1 << 24) - (1 << 24) % n
        while True:
            v = int.from_bytes(self.take(3), "big")
            if v < limit:
                return v % n


_entropy = _Entropy()


def new_message_id() -> str:
    """32 hex digits, unique: a UUID version 7 (RFC 9562), millisecond time first.

    Time-ordered ids land at the end of the outbox's primary-key index instead of at a random
    page of it, which a province-wide fan-out (100,000 rows a tick) notices. The id is no
    secret (hooks are signed; links carry their own token), and 74 random bits keep it unique.
    """
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + _entropy.take(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 4122 variant
    return raw.hex()


def new_link_token() -> str:
    """192 random bits, URL-safe (what ``secrets.token_urlsafe(24)`` makes)."""
    return base64.urlsafe_b64encode(_entropy.take(24)).decode("ascii")


class CodesExhausted(RuntimeError):
    """Every 6-digit code is taken by one person's open calls (never in practice)."""


def new_reply_code(taken: Container[str] = ()) -> str:
    """A short code for SMS replies, not in ``taken`` (the person's other open calls' codes).

    Four digits, uniform over 1000–9999 (the first digit is never 0: some phones and gateways
    drop it); when a person's open calls crowd four digits, five, then six.
    """
    for length in (4, 5, 6):
        low = 10 ** (length - 1)
        for _ in range(32):
            code = str(low + _entropy.below(9 * low))
            if code not in taken:
                return code
    raise CodesExhausted("no free reply code: too many open calls for one person")


def route_message_id(message_id: str, route: int) -> str:
    """The id a channel is given for a message on its ``route``-th route (0: the first).

    The first route carries the message id itself; a fallback route (the SMS after a refused
    voice call) carries ``<id>-<route>``: contracts §5 lets a gateway drop a repeated id, and
    the fallback is another message, not a retry of the first — under the same id a
    deduplicating gateway would swallow exactly the message meant to get through. A retry of
    the same route keeps its id, so every route stays idempotent.
    """
    return message_id if route == 0 else f"{message_id}-{route}"


def message_id_of(sent_id: str) -> str:
    """The outbox id behind an id a channel reported (an IVR press, a vendor callback)."""
    base, dash, route = sent_id.rpartition("-")
    return base if dash and route.isdigit() and 0 < len(route) <= 2 and base else sent_id
