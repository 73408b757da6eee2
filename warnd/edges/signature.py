"""Hook signatures, replay protection, tokens and masking (contracts §6).

An acknowledgement hook changes who counts as woken, so it must come from someone holding
the shared secret, and a captured request must not be replayable: the signature covers the
timestamp, old timestamps are refused, and a ``ReplayGuard`` refuses a repeat inside the
window. Pure functions: the current time is always a parameter.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
from enum import StrEnum

from warnd.core.errors import InputError

TIMESTAMP_HEADER = "X-Warnd-Timestamp"
SIGNATURE_HEADER = "X-Warnd-Signature"
PREFIX = "sha256="
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureFailure(StrEnum):
    """Why a hook request was refused (for logs and metrics; the HTTP answer is always 401)."""

    MISSING = "missing"
    MALFORMED = "malformed"
    MISMATCH = "mismatch"
    TOO_OLD = "too_old"
    TOO_NEW = "too_new"
    REPLAYED = "replayed"


class SignatureError(InputError):
    """A hook request that is not authentic, not fresh, or a replay."""

    def __init__(self, reason: SignatureFailure, message: str, *, field: str | None = None):
        self.reason = reason
        super().__init__(message, field=field)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` HMAC-SHA256 under ``secret`` of ``b"<timestamp>." + body``."""
    mac = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256)
    return PREFIX + mac.hexdigest()


def verify(
    secret: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float,
    max_age_s: float = 300,
    max_future_s: float = 60,
) -> None:
    """Check one hook request; raise ``SignatureError`` unless it is authentic and fresh.

    Cheap checks (presence, shape, freshness) come first; the digest is compared in constant
    time. A timestamp a little ahead of ``now`` is allowed for clock skew.
    """
    if timestamp_header is None or not timestamp_header.strip():
        raise SignatureError(SignatureFailure.MISSING, "缺少时间戳 missing", field=TIMESTAMP_HEADER)
    if signature_header is None or not signature_header.strip():
        raise SignatureError(SignatureFailure.MISSING, "缺少签名 missing", field=SIGNATURE_HEADER)
    ts_text = timestamp_header.strip()
    if not _TIMESTAMP.fullmatch(ts_text):
        raise SignatureError(
            SignatureFailure.MALFORMED,
            "时间戳格式错误 not Unix seconds",
            field=TIMESTAMP_HEADER,
        )
    match = _SIGNATURE.fullmatch(signature_header.strip())
    if match is None:
        raise SignatureError(
            SignatureFailure.MALFORMED,
            "签名格式错误 expected sha256=<64 hex digits>",
            field=SIGNATURE_HEADER,
        )
    timestamp = int(ts_text)
    if now - timestamp > max_age_s:
        raise SignatureError(
            SignatureFailure.TOO_OLD,
            f"请求已过期 older than {max_age_s:g} s",
            field=TIMESTAMP_HEADER,
        )
    if timestamp - now > max_future_s:
        raise SignatureError(
            SignatureFailure.TOO_NEW,
            f"时间戳超前 more than {max_future_s:g} s in the future",
            field=TIMESTAMP_HEADER,
        )
    expected = sign(secret, timestamp, body)[len(PREFIX) :]
    if not hmac.compare_digest(expected, match.group(1).lower()):
        raise SignatureError(SignatureFailure.MISMATCH, "签名不符 mismatch", field=SIGNATURE_HEADER)


class ReplayGuard:
    """Refuses a (timestamp, signature) pair seen before within the freshness window.

    Memory stays bounded: entries older than the window are dropped (``verify`` refuses
    those anyway), and beyond ``max_entries`` the oldest go first.
    """

    def __init__(self, max_age_s: float = 300, *, max_entries: int = 100_000) -> None:
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._seen: set[tuple[int, str]] = set()
        self._by_age: list[tuple[int, str]] = []  # min-heap on timestamp

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, timestamp: int, signature: str, now: float) -> None:
        """Remember this request, or raise ``SignatureError`` if it is a repeat or too old."""
        self._prune(now)
        if now - timestamp > self.max_age_s:
            raise SignatureError(
                SignatureFailure.TOO_OLD,
                f"请求已过期 older than {self.max_age_s:g} s",
                field=TIMESTAMP_HEADER,
            )
        key = (timestamp, signature.strip().lower())
        if key in self._seen:
            raise SignatureError(
                SignatureFailure.REPLAYED, "重复请求 replayed request", field=SIGNATURE_HEADER
            )
        self._seen.add(key)
        heapq.heappush(self._by_age, key)
        while len(self._by_age) > self.max_entries:
            self._seen.discard(heapq.heappop(self._by_age))

    def forget(self, timestamp: int, signature: str) -> None:
        """Let a request be retried: its processing failed, so nothing was changed by it."""
        self._seen.discard((timestamp, signature.strip().lower()))

    def _prune(self, now: float) -> None:
        while self._by_age and now - self._by_age[0][0] > self.max_age_s:
            self._seen.discard(heapq.heappop(self._by_age))


def mask_phone(phone: str) -> str:
    """``+8613812345678`` → ``+86138****5678``: enough to tell numbers apart in a log."""
    text = phone.strip()
    if len(text) >= 11:
        return text[:-8] + "****" + text[-4:]
    if len(text) > 4:
        return "*" * (len(text) - 4) + text[-4:]
    return "*" * len(text)


def mask_secret(secret: str) -> str:
    """``ab…(12)``: the first two characters and the length; short secrets show nothing."""
    shown = secret[:2] if len(secret) >= 8 else ""
    return f"{shown}…({len(secret)})"
