"""Phone numbers as the chain dials them: E.164, validated by ``phonenumbers`` (region CN).

``phonenumbers`` is the authority on what is a valid number, but a full parse costs about
40 µs, which is 10 s for a province-scale directory. Nearly every cell is an 11-digit mobile
number, so those are checked against the same CN metadata patterns that ``phonenumbers`` uses
(compiled once); anything else goes through ``phonenumbers`` itself. The fast path only ever
*accepts*: a cell it does not recognise falls back to the full parse, so it can never accept a
number that ``phonenumbers`` rejects (a hypothesis test in tests/test_directory.py checks that
the two agree).
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

_CN = phonenumbers.PhoneMetadata.metadata_for_region("CN")
if _CN is None or _CN.mobile is None or _CN.general_desc is None:  # pragma: no cover
    raise RuntimeError("phonenumbers has no CN metadata")
_MOBILE_PATTERN = _CN.mobile.national_number_pattern
_GENERAL_PATTERN = _CN.general_desc.national_number_pattern
if _MOBILE_PATTERN is None or _GENERAL_PATTERN is None:  # pragma: no cover
    raise RuntimeError("phonenumbers has no CN mobile pattern")

#: the fast path: optional +86, then a national number of 1 and ten digits that matches both
#: the CN general pattern and the CN mobile pattern (what is_valid_number checks for it)
_FAST = re.compile(
    rf"(?:\+86)?(?=1\d{{10}}\Z)(?=(?:{_GENERAL_PATTERN})\Z)((?:{_MOBILE_PATTERN}))", re.ASCII
)
_MOBILE_TYPES = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


def normalise(raw: str) -> str | None:
    """The E.164 form of ``raw`` (``+86`` optional, spaces and dashes allowed), or None."""
    fast = _FAST.fullmatch(raw)
    if fast is None:
        fast = _FAST.fullmatch(raw.replace(" ", "").replace("-", ""))
    if fast is not None:
        return "+86" + fast.group(1)
    return _slow(raw)


@lru_cache(maxsize=4096)
def _slow(raw: str) -> str | None:
    """The full ``phonenumbers`` parse; cached because duty-office lines repeat across rows."""
    text = raw.strip()
    if not text or len(text) > 64:
        return None
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None
    if number.extension or not phonenumbers.is_valid_number(number):
        return None  # an extension cannot be dialled by a voice platform
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_mobile(e164: str) -> bool:
    """True when a normalised number can receive SMS (a CN mobile, or a foreign mobile)."""
    if _FAST.fullmatch(e164):
        return True
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) in _MOBILE_TYPES
