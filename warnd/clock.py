"""Time is injected: the core asks a clock, tests and drills move a manual one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the current time comes from."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...


class SystemClock:
    """The wall clock, for production. The only place warnd reads the real time."""

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
