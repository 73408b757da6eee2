"""Logging: JSON lines for the service (journald), readable console output by hand.

Every state change is one structlog event carrying the warning key, contact and attempt ids;
phone numbers and secrets are masked before they reach a log line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_PHONE_KEYS = {"to", "phone", "from_", "from"}


def _mask(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    from warnd.signature import mask_phone

    for key in _PHONE_KEYS & event.keys():
        value = event[key]
        if isinstance(value, str):
            event[key] = mask_phone(value)
    return event


def configure(*, json: bool | None = None, level: str = "info") -> None:
    """Set up structlog once per process; ``json=None`` picks JSON when stderr is not a TTY."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _mask,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
