"""Feed readers: where CAP messages come from (a spool folder, an HTTP index or document).

A feed only finds messages and hands each one to ``ingest`` (provided by the daemon: it
parses and stores). The store deduplicates, so a feed may hand over the same message twice
after a crash; what a feed must never do is lose one, so anything that fails is retried on
the next poll. ``poll`` never raises for bad input or network faults: it reports them.

Implementations: ``warnd.edges.feeds.folder.FolderFeed``, ``warnd.edges.feeds.http.HttpFeed``
(also the CMA CAP feed relayed by WMO, with its area pre-filter) and
``warnd.edges.feeds.qweather.QWeatherFeed``;
``warnd.edges.feeds.crosscheck`` reads lists that only check the others (docs/feeds.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One candidate CAP document and where it came from (``incoming:a.xml`` or its URL)."""

    data: bytes
    origin: str


class Outcome(StrEnum):
    """What the store made of one item."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """``reason`` says why an item was rejected (one line); ``key`` names the stored message."""

    outcome: Outcome
    reason: str | None = None
    key: str | None = None


Ingest = Callable[[FeedItem], Awaitable[IngestResult]]


@dataclass(frozen=True, slots=True)
class PollReport:
    """One poll: items handed to ``ingest`` and how they fared; ``error`` is one line or None.

    ``listed`` counts the entries the source listed (index entries, alerts of all points),
    ``skipped`` those left alone because their area cannot concern the directory;
    ``newest`` names the most recent entry listed when the source says; ``answered`` is False
    when the source itself did not answer (the index, every point): what makes a feed stale.
    """

    feed: str
    items: int
    accepted: int
    duplicates: int
    rejected: int
    error: str | None
    listed: int = 0
    skipped: int = 0
    newest: str | None = None
    answered: bool = True


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """Health of a feed for ``/healthz`` and metrics. Times are Unix seconds.

    ``last_answer_at``: the last poll in which the source itself answered (errors on single
    items do not count against it); a feed silent for ``stale_after`` raises an alarm.
    """

    last_ok_at: float | None
    last_error: str | None
    consecutive_failures: int
    last_answer_at: float | None = None


class Feed(Protocol):
    """A source of CAP documents polled by the daemon."""

    name: str

    async def poll(self, ingest: Ingest) -> PollReport: ...

    async def aclose(self) -> None: ...


class Tally:
    """Counts of one poll and its errors, turned into a ``PollReport`` at the end."""

    __slots__ = (
        "accepted",
        "answered",
        "duplicates",
        "errors",
        "feed",
        "items",
        "listed",
        "newest",
        "rejected",
        "skipped",
    )

    def __init__(self, feed: str) -> None:
        self.feed = feed
        self.items = 0
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.errors: list[str] = []
        self.listed = 0
        self.skipped = 0
        self.newest: str | None = None
        self.answered = True

    def count(self, outcome: Outcome) -> None:
        self.items += 1
        if outcome is Outcome.ACCEPTED:
            self.accepted += 1
        elif outcome is Outcome.DUPLICATE:
            self.duplicates += 1
        else:
            self.rejected += 1

    def fail(self, message: str) -> None:
        self.errors.append(one_line(message))

    def report(self) -> PollReport:
        error: str | None = None
        if self.errors:
            error = "; ".join(self.errors[:3])
            if len(self.errors) > 3:
                error += f"; 另有 {len(self.errors) - 3} 个错误 (+{len(self.errors) - 3} more)"
        return PollReport(
            self.feed,
            self.items,
            self.accepted,
            self.duplicates,
            self.rejected,
            error,
            self.listed,
            self.skipped,
            self.newest,
            self.answered,
        )


class StatusTracker:
    """Turns poll reports into a ``FeedStatus``; the time comes from an injected function."""

    __slots__ = ("_failures", "_last_answer_at", "_last_error", "_last_ok_at", "_now")

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._last_ok_at: float | None = None
        self._last_answer_at: float | None = None
        self._last_error: str | None = None
        self._failures = 0

    def record(self, report: PollReport) -> PollReport:
        if report.answered:
            self._last_answer_at = self._now()
        if report.error is None:
            self._last_ok_at = self._now()
            self._failures = 0
        else:
            self._last_error = report.error
            self._failures += 1
        return report

    @property
    def status(self) -> FeedStatus:
        return FeedStatus(self._last_ok_at, self._last_error, self._failures, self._last_answer_at)


def one_line(text: object) -> str:
    """Collapse any message to one line (exceptions from libraries may span several)."""
    return " ".join(str(text).split()) or type(text).__name__


__all__ = [
    "Feed",
    "FeedItem",
    "FeedStatus",
    "Ingest",
    "IngestResult",
    "Outcome",
    "PollReport",
]
