"""Logging: JSON lines for the service (journald), readable console output by hand.

Every state change is one structlog event carrying the warning key, contact and attempt ids;
phone numbers and secrets are masked before they reach a log line: the fields that hold a
number by name, and any number or registered secret inside any other text (a gateway's error
body, a contacts problem, an exception message), because such text comes from elsewhere.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from datetime import datetime, tzinfo
from typing import Any, TextIO

import structlog

from warnd.signature import mask_phone, mask_secret

_PHONE_KEYS = {"to", "phone", "from_", "from"}
#: E.164 numbers (any country), Chinese mobiles (11 digits from 13..19) and landlines with their
#: area code (0 + 2-3 digits, optional dash, 7-8 digits); not inside longer runs of digits,
#: letters or underscores, so that ids, warning keys, division codes and times stay readable
_NUMBER = re.compile(
    r"(?<![0-9A-Za-z_+])(?:\+\d{8,15}|1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?![0-9A-Za-z_])", re.ASCII
)
_SECRETS: set[str] = set()


def conceal(secret: str | bytes) -> None:
    """Mask this secret wherever it would appear in a log line (short ones are not tracked)."""
    text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
    text = text.strip()
    if len(text) >= 8:
        _SECRETS.add(text)


def scrub(text: str) -> str:
    """``text`` with every phone number and registered secret masked."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, mask_secret(secret))
    if _NUMBER.search(text) is None:  # the common case: nothing to mask, no new string
        return text
    return _NUMBER.sub(lambda m: mask_phone(m[0]), text)


def _scrubbed(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    if depth < 3 and isinstance(value, list | tuple):
        return [_scrubbed(v, depth + 1) for v in value]
    if depth < 3 and isinstance(value, dict):
        return {k: _scrubbed(v, depth + 1) for k, v in value.items()}
    return value


_OWN_KEYS = frozenset({"event", "level", "timestamp"})  # written by warnd and structlog


def _mask(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if type(value) is str:
            if key in _PHONE_KEYS:
                event[key] = mask_phone(value)
            elif key not in _OWN_KEYS:
                event[key] = scrub(value)
        elif value is not None and not isinstance(value, int | float):
            event[key] = _scrubbed(value)
    return event


#: the zone of log timestamps: the configured one once a config is loaded (None: the machine's)
_ZONE: tzinfo | None = None


def set_timezone(zone: tzinfo | None) -> None:
    """Write log timestamps in ``zone`` (the config's ``timezone``), with its UTC offset."""
    global _ZONE
    _ZONE = zone


def _timestamp(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """ISO 8601 with the offset of the configured zone (``2025-06-14T08:15:00.123+08:00``)."""
    now = datetime.now(_ZONE) if _ZONE is not None else datetime.now().astimezone()
    event["timestamp"] = now.isoformat(timespec="milliseconds")
    return event


def configure(
    *,
    json: bool | None = None,
    level: str = "info",
    file: TextIO | None = None,
    tz: tzinfo | None = None,
) -> None:
    """Set up structlog once per process (stderr unless ``file``); ``json=None``: JSON off a TTY.

    ``tz``: the zone of the timestamps (kept when None, e.g. set earlier by ``set_timezone``).
    """
    if tz is not None:
        set_timezone(tz)
    out = file if file is not None else sys.stderr
    if json is None:
        json = not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            _mask,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
