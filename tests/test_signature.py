"""Hook signatures (contracts §6), replay protection and masking."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from warnd.core.errors import InputError
from warnd.edges.signature import (
    ReplayGuard,
    SignatureError,
    SignatureFailure,
    mask_phone,
    mask_secret,
    sign,
    verify,
)

SECRET = b"correct horse battery staple"
BODY = '{"from": "+8613812345678", "text": "1 收到"}'.encode()
TS = 1_718_352_000  # 2024-06-14T08:00:00Z


def _reference(secret: bytes, ts: int, body: bytes) -> str:
    """The contract written out independently: HMAC-SHA256 of '<timestamp>.<raw body>'."""
    message = str(ts).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def test_sign_matches_independent_computation() -> None:
    assert sign(SECRET, TS, BODY) == _reference(SECRET, TS, BODY)
    assert sign(SECRET, TS + 1, BODY) != sign(SECRET, TS, BODY)
    assert sign(b"other", TS, BODY) != sign(SECRET, TS, BODY)


def test_verify_accepts_fresh_signed_request() -> None:
    sig = _reference(SECRET, TS, BODY)
    verify(SECRET, str(TS), sig, BODY, now=TS + 10)
    verify(SECRET, f" {TS} ", sig.upper().replace("SHA256=", "sha256="), BODY, now=TS)
    verify(SECRET, str(TS), sig, BODY, now=TS - 30)  # small clock skew is fine


@pytest.mark.parametrize(
    ("ts", "sig", "body", "now", "reason", "field"),
    [
        (None, "good", BODY, TS, SignatureFailure.MISSING, "X-Warnd-Timestamp"),
        ("", "good", BODY, TS, SignatureFailure.MISSING, "X-Warnd-Timestamp"),
        (str(TS), None, BODY, TS, SignatureFailure.MISSING, "X-Warnd-Signature"),
        ("yesterday", "good", BODY, TS, SignatureFailure.MALFORMED, "X-Warnd-Timestamp"),
        (f"{TS}.5", "good", BODY, TS, SignatureFailure.MALFORMED, "X-Warnd-Timestamp"),
        ("-5", "good", BODY, TS, SignatureFailure.MALFORMED, "X-Warnd-Timestamp"),
        (str(TS), "md5=abcd", BODY, TS, SignatureFailure.MALFORMED, "X-Warnd-Signature"),
        (str(TS), "sha256=xyz", BODY, TS, SignatureFailure.MALFORMED, "X-Warnd-Signature"),
        (str(TS), "good", BODY + b" ", TS, SignatureFailure.MISMATCH, "X-Warnd-Signature"),
        (str(TS), "other-secret", BODY, TS, SignatureFailure.MISMATCH, "X-Warnd-Signature"),
        (str(TS), "good", BODY, TS + 301, SignatureFailure.TOO_OLD, "X-Warnd-Timestamp"),
        (str(TS), "good", BODY, TS - 61, SignatureFailure.TOO_NEW, "X-Warnd-Timestamp"),
    ],
)
def test_verify_refuses(
    ts: str | None,
    sig: str | None,
    body: bytes,
    now: float,
    reason: SignatureFailure,
    field: str,
) -> None:
    if sig == "good":
        sig = _reference(SECRET, TS, BODY)
    elif sig == "other-secret":
        sig = _reference(b"not the secret", TS, BODY)
    with pytest.raises(SignatureError) as info:
        verify(SECRET, ts, sig, body, now=now)
    err = info.value
    assert err.reason is reason
    assert err.field == field
    assert isinstance(err, InputError)
    assert "\n" not in str(err) and str(err).startswith(f"{field}: ")


def test_verify_window_is_configurable() -> None:
    sig = _reference(SECRET, TS, BODY)
    verify(SECRET, str(TS), sig, BODY, now=TS + 299)
    with pytest.raises(SignatureError) as info:
        verify(SECRET, str(TS), sig, BODY, now=TS + 100, max_age_s=60)
    assert info.value.reason is SignatureFailure.TOO_OLD


def test_replay_guard_refuses_repeat_within_window() -> None:
    guard = ReplayGuard(300)
    sig = _reference(SECRET, TS, BODY)
    guard.check(TS, sig, now=TS + 1)
    with pytest.raises(SignatureError) as info:
        guard.check(TS, sig, now=TS + 2)
    assert info.value.reason is SignatureFailure.REPLAYED
    with pytest.raises(SignatureError):
        guard.check(TS, sig.upper().replace("SHA256=", "sha256="), now=TS + 3)
    guard.check(TS + 1, _reference(SECRET, TS + 1, BODY), now=TS + 3)  # a new request passes
    assert len(guard) == 2


def test_replay_guard_forgets_old_entries_and_refuses_stale() -> None:
    guard = ReplayGuard(300)
    for i in range(100):
        guard.check(TS + i, f"sha256={i:064x}", now=TS + i)
    assert len(guard) == 100
    guard.check(TS + 1000, "sha256=" + "f" * 64, now=TS + 1000)
    assert len(guard) == 1  # everything older than the window was dropped
    with pytest.raises(SignatureError) as info:
        guard.check(TS, "sha256=" + "0" * 64, now=TS + 1000)
    assert info.value.reason is SignatureFailure.TOO_OLD


def test_replay_guard_is_bounded() -> None:
    guard = ReplayGuard(300, max_entries=10)
    for i in range(50):
        guard.check(TS, f"sha256={i:064x}", now=TS)
    assert len(guard) == 10


def test_masking() -> None:
    assert mask_phone("+8613812345678") == "+86138****5678"
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("12345") == "*2345"
    assert "12345678" not in mask_phone("+8613812345678")
    assert mask_secret("abcdefghijkl") == "ab…(12)"
    assert mask_secret("abc") == "…(3)"
    assert "cdef" not in mask_secret("abcdefghijkl")


def test_replay_guard_forgets_a_request_whose_processing_failed() -> None:
    guard = ReplayGuard(300)
    guard.check(1_000, "sha256=ab", now=1_000)
    with pytest.raises(SignatureError):
        guard.check(1_000, "sha256=ab", now=1_001)
    guard.forget(1_000, "sha256=ab")
    guard.check(1_000, "sha256=ab", now=1_002)  # the sender's retry is accepted once more
    with pytest.raises(SignatureError):
        guard.check(1_000, "sha256=ab", now=1_003)
