"""Time is injected: the core asks a clock, tests and drills move a manual one.

The chain — plan, ladder, engine, the hooks' freshness check — reads the time only from a
``Clock``; ``SystemClock`` is where it comes from in production. Real time is read elsewhere
only where real time itself is the subject, each behind a seam of its own: file ages and HTTP
freshness in the feeds (``now=time.time``), rate limits and retry delays (``time.monotonic``),
log timestamps (``warnd.edges.logs``), the time half of a message id, the header of ``warnd feeds
check``, and the daemon's APScheduler, which runs on the real clock: ``Daemon._schedule_next``
asks the injected clock how long until the next due row and sets its wake-up that long after
real now.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the current time comes from."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...


def wall_now(clock: Clock) -> datetime:
    """The clock's idea of the wall-clock instant, for protocols outside the chain (signature
    freshness): a drill's scaled clock answers real time, every other clock its own time."""
    wall = getattr(clock, "wall", None)
    return wall() if callable(wall) else clock.now()


class SystemClock:
    """The wall clock, for production: the chain's only source of the real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: for tests and the drill simulator."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> datetime:
        if when < self._now:
            raise ValueError("time does not run backwards")
        self._now = when
        return self._now


class FileClock:
    """A clock read from a file holding an ISO 8601 time: lets a test drive a real daemon process.

    Only ``warnd serve --clock-file`` uses it (crash tests, live rehearsals); the file is re-read
    when it changes. A missing or unreadable file is an error: a daemon must not guess the time.
    Writers should replace the file atomically (write a temporary file, then rename it).
    """

    def __init__(self, path: str) -> None:
        from pathlib import Path

        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._now: datetime | None = None

    def now(self) -> datetime:
        st = self.path.stat()
        # The mtime alone misses a rewrite within the file system's timestamp granularity
        # (a jiffy on many kernels); a rename gives a new inode, a rewrite usually a new size.
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp or self._now is None:
            value = datetime.fromisoformat(self.path.read_text(encoding="utf-8").strip())
            if value.tzinfo is None:
                raise ValueError(f"{self.path}: time without a UTC offset")
            if self._now is not None and value < self._now:
                value = self._now  # never backwards
            self._now, self._stamp = value, stamp
        return self._now


class ScaledClock:
    """Drill time for a live replay: virtual time runs ``speed`` times faster than real time.

    At ``speed`` 60 the 6h/3h/1h chain takes 6/3/1 real minutes and a 5-minute window 5 s.
    ``real`` is a monotonic seconds source (injected in tests, which advance it instead of
    sleeping); ``wall_start`` is the wall-clock instant that corresponds to ``start`` (by
    default, when the clock begins running).
    """

    def __init__(
        self,
        start: datetime,
        speed: float,
        *,
        real: Callable[[], float] = time.monotonic,
        wall_start: datetime | None = None,
        paused: bool = False,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("ScaledClock needs a timezone-aware start")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.start = start
        self.speed = float(speed)
        self._real = real
        self._wall0 = wall_start
        self._real0: float | None = None
        if not paused:
            self.begin()

    def begin(self) -> None:
        """Let time run (a paused clock shows ``start`` until then, e.g. while a daemon starts)."""
        if self._real0 is None:
            self._real0 = self._real()
            if self._wall0 is None:
                self._wall0 = datetime.now(UTC)

    @property
    def wall_start(self) -> datetime | None:
        """The wall-clock instant that corresponds to ``start`` (None while paused)."""
        return self._wall0 if self._real0 is not None else None

    def real_elapsed(self) -> float:
        """Real seconds since the clock began running."""
        return 0.0 if self._real0 is None else max(0.0, self._real() - self._real0)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.real_elapsed() * self.speed)

    def real_delay(self, when: datetime) -> float:
        """Real seconds until the virtual clock shows ``when`` (0.0 when it already has)."""
        return max(0.0, (when - self.now()).total_seconds() / self.speed)

    def wall(self, when: datetime | None = None) -> datetime:
        """The wall-clock instant at which virtual time shows ``when`` (default: now)."""
        virtual = self.now() if when is None else when
        base = self._wall0 if self._wall0 is not None else datetime.now(UTC)
        return base + (virtual - self.start) / self.speed
