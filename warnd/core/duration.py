"""Durations as operators write them: ``90s``, ``5m``, ``6h``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style text; raise ``ValueError`` with the text on anything else.

    Units must appear at most once and in d, h, m, s order, so a typo such as ``5m5m`` or ``30s1h``
    is refused rather than silently summed.
    """
    raw = text.strip().lower() if isinstance(text, str) else text
    if not isinstance(raw, str) or not raw or not _WHOLE.fullmatch(raw):
        raise ValueError(f"not a duration like 90s, 5m, 6h or 1h30m: {text!r}")
    parts = _PART.findall(raw)
    order = [unit for _, unit in parts]
    if order != sorted(set(order), key="dhms".index):
        raise ValueError(f"units must appear once each, largest first: {text!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def format_duration(value: timedelta) -> str:
    """Render a duration the way ``parse_duration`` reads it (``-`` prefix when negative)."""
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total == 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        if total >= size:
            out.append(f"{total // size}{unit}")
            total %= size
    return sign + "".join(out)
