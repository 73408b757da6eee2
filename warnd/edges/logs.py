"""Logging: JSON lines for the service (journald), readable console output by hand.

Every state change is one structlog event carrying the warning key, contact and attempt ids;
phone numbers and secrets are masked before they reach a log line: the fields that hold a
number by name, and any number or registered secret inside any other text (a gateway's error
body, a contacts problem, an exception message), because such text comes from elsewhere.

Libraries log through the standard ``logging`` module (aiohttp's "Error handling request",
asyncio's "socket.accept() out of system resource", APScheduler's failed jobs): those records
go through the same masking and renderer, each one JSON line with its traceback as a field,
and a message that repeats is throttled (``Throttle``) so that an attack cannot fill the disk
with log lines (docs/hardening.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from datetime import datetime, tzinfo
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from warnd.edges.signature import mask_phone, mask_secret

_PHONE_KEYS = {"to", "phone", "from_", "from"}
#: E.164 numbers (any country), Chinese mobiles (11 digits from 13..19) and landlines with their
#: area code (0 + 2-3 digits, optional dash, 7-8 digits); not inside longer runs of digits,
#: letters or underscores, so that ids, warning keys, division codes and times stay readable
_NUMBER = re.compile(
    r"(?<![0-9A-Za-z_+])(?:\+\d{8,15}|1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?![0-9A-Za-z_])", re.ASCII
)
_SECRETS: set[str] = set()
_ORDERED: list[str] = []  # longest first: a secret that contains another is masked whole


def conceal(secret: str | bytes) -> None:
    """Mask this secret wherever it would appear in a log line, whatever its length."""
    text = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret
    text = text.strip()
    if text:
        _SECRETS.add(text)
        _ORDERED[:] = sorted(_SECRETS, key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with every phone number and registered secret masked."""
    for secret in _ORDERED:
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
    if depth < 6 and isinstance(value, list | tuple):  # deep enough for a traceback's frames
        return [_scrubbed(v, depth + 1) for v in value]
    if depth < 6 and isinstance(value, dict):
        return {k: _scrubbed(v, depth + 1) for k, v in value.items()}
    return value


_OWN_KEYS = frozenset({"level", "timestamp"})  # written by structlog (a library's event is text)


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


class Throttle:
    """At most ``burst`` lines per key in ``per`` seconds; the rest are counted, not written.

    ``admit(key)`` answers None for a line to drop, else the number of lines dropped for that
    key since the last one written (the caller puts it on the line: ``suppressed=n``). Keys are
    bounded (least recently used go first). The time is injected (monotonic seconds).
    """

    def __init__(
        self,
        burst: int = 20,
        per: float = 10.0,
        *,
        now: Callable[[], float] = time.monotonic,
        keys: int = 1024,
    ) -> None:
        self.burst, self.per, self._now, self._keys = burst, per, now, keys
        self._state: OrderedDict[object, list[float]] = OrderedDict()  # [start, written, dropped]

    def admit(self, key: object) -> int | None:
        now = self._now()
        st = self._state.get(key)
        if st is None or now - st[0] >= self.per:
            dropped = int(st[2]) if st is not None else 0
            self._state[key] = [now, 1.0, 0.0]
            self._state.move_to_end(key)
            while len(self._state) > self._keys:
                self._state.popitem(last=False)
            return dropped
        self._state.move_to_end(key)
        if st[1] < self.burst:
            st[1] += 1
            dropped, st[2] = int(st[2]), 0.0
            return dropped
        st[2] += 1
        return None

    def take(self, key: object) -> int:
        """The lines dropped for ``key`` and not yet reported; they count as reported now."""
        st = self._state.get(key)
        if st is None:
            return 0
        dropped, st[2] = int(st[2]), 0.0
        return dropped


class LimitedLog:
    """Warning lines throttled per key, every line accounted for.

    Lines past the budget are not written; the last of them is written when the period ends,
    with ``suppressed`` = how many like it were left out. So the lines written plus their
    ``suppressed`` counts are exactly the lines asked for (``flush`` writes what is pending).
    """

    def __init__(
        self,
        logger: Any,
        *,
        burst: int = 20,
        per: float = 10.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.throttle = Throttle(burst, per, now=now)
        self._pending: dict[object, tuple[str, dict[str, Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        _LIMITED.add(self)

    def warning(self, key: object, event: str, **fields: Any) -> None:
        dropped = self.throttle.admit(key)
        if dropped is not None:
            self._pending.pop(key, None)
            self._log.warning(event, suppressed=dropped, **fields)
            return
        self._pending[key] = (event, fields)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the next line, or ``flush``, reports it
                return
            self._timer = loop.call_later(self.throttle.per, self.flush)

    def flush(self) -> None:
        """Write the last left-out line of every key, with how many others it stands for."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for key, (event, fields) in pending.items():
            dropped = self.throttle.take(key)
            if dropped:
                self._log.warning(event, suppressed=dropped - 1, **fields)

    def reset(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self.throttle._state.clear()


_LIMITED: weakref.WeakSet[LimitedLog] = weakref.WeakSet()


class _ThrottleRecords(logging.Filter):
    """Library records: a message that repeats (its first line) is throttled per logger."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__()
        self.throttle = throttle

    def filter(self, record: logging.LogRecord) -> bool:
        first = str(record.msg).split("\n", 1)[0][:200]
        dropped = self.throttle.admit((record.name, first))
        if dropped is None:
            return False
        if dropped:
            record.suppressed = dropped  # picked up by structlog's ExtraAdder
        return True


#: a traceback as data (type, message, the innermost frames), never many lines of text; no
#: local variables: they may hold numbers and secrets
_TRACEBACK = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False, max_frames=12, use_rich=False)
)
_STDLIB_HANDLER: logging.Handler | None = None


def _route_stdlib(renderer: Any, json: bool, out: TextIO) -> None:
    """Library records (WARNING and up) through the same masking and renderer as warnd's own."""
    global _STDLIB_HANDLER
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(allow=("suppressed",)),
        _timestamp,
    ]
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.WARNING)
    handler.addFilter(_ThrottleRecords(Throttle(burst=5, per=60.0)))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _TRACEBACK if json else structlog.processors.format_exc_info,
                _mask,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    if _STDLIB_HANDLER is not None:
        root.removeHandler(_STDLIB_HANDLER)
    root.addHandler(handler)
    _STDLIB_HANDLER = handler


def reset() -> None:
    """Detach the library-records handler, forget throttles and concealed secrets (tests
    configure logging many times per process, each with its own event loop and secrets)."""
    global _STDLIB_HANDLER
    if _STDLIB_HANDLER is not None:
        logging.getLogger().removeHandler(_STDLIB_HANDLER)
        _STDLIB_HANDLER = None
    for limited in list(_LIMITED):
        limited.reset()
    _SECRETS.clear()  # a test's secret ("abc") would mask text of every later test's lines
    _ORDERED.clear()


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
    _route_stdlib(renderer, json, out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            _TRACEBACK if json else structlog.processors.format_exc_info,
            _mask,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
