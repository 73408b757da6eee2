"""Feed health and the two alarms a silent source deserves: a missing warning, a stale feed.

Pure: it is told what the feeds and check lists answered and when (times from the injected
clock), and says which alarms should be open and which are over. Storing an alarm once,
telling the duty office and the ``warnd status`` banner are ``warnd.edges.alarms``' job.

- **missing** (``missing:<identifier>``): a check list names a warning for an area of the
  directory and no dispatching source delivered it by ``max(issued, first seen) + grace``.
  Over when it is delivered, or once the list no longer names it.
- **stale** (``stale:<feed>``): a dispatching feed whose source has not answered for
  ``stale_after`` (counted from the watch's start when it never answered). Over when it
  answers again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from warnd.edges.feeds import PollReport
from warnd.edges.feeds.crosscheck import CheckItem


@dataclass(frozen=True, slots=True)
class Watched:
    """A feed as the watch sees it; ``stale_after`` None: never stale (check lists)."""

    name: str
    role: str  # "dispatch" | "check"
    priority: int
    stale_after: timedelta | None = None
    grace: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm that should be open. ``subject``: the warning's ref, or the feed's name."""

    key: str
    kind: str  # "missing" | "stale"
    feed: str
    subject: str
    since: datetime
    title: str | None = None  # the warning's title (missing)
    issued: datetime | None = None


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed's health, as ``warnd status``, /healthz and the wall show it."""

    name: str
    role: str
    priority: int
    last_answer_at: datetime | None
    last_ok_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    stale: bool
    listed: int
    newest: str | None


class Watch:
    """What each feed last answered, and what each check list names."""

    def __init__(self, feeds: Sequence[Watched], *, started: datetime) -> None:
        self.feeds = {f.name: f for f in sorted(feeds, key=lambda f: (f.priority, f.name))}
        self.started = started
        self._answered: dict[str, datetime] = {}
        self._ok: dict[str, datetime] = {}
        self._last: dict[str, PollReport] = {}
        self._failures: dict[str, int] = {}
        self._errors: dict[str, str] = {}
        # per check list: ref -> (item, first seen); None until the list was read once
        self._listed: dict[str, dict[str, tuple[CheckItem, datetime]]] = {}

    def polled(self, name: str, report: PollReport, at: datetime) -> None:
        """A poll of ``name`` finished at ``at``."""
        self._last[name] = report
        if report.answered:
            self._answered[name] = at
        if report.error is None:
            self._ok[name] = at
            self._failures[name] = 0
        else:
            self._errors[name] = report.error
            self._failures[name] = self._failures.get(name, 0) + 1

    def checked(self, name: str, items: Iterable[CheckItem], at: datetime) -> None:
        """A check list answered with ``items`` (those for the directory) at ``at``."""
        before = self._listed.get(name, {})
        self._listed[name] = {
            i.ref: (i, before[i.ref][1] if i.ref in before else at) for i in items
        }

    def _stale_since(self, feed: Watched, now: datetime) -> datetime | None:
        if feed.role != "dispatch" or feed.stale_after is None:
            return None
        last = self._answered.get(feed.name, self.started)
        return last if now - last >= feed.stale_after else None

    def due(self, now: datetime) -> list[CheckItem]:
        """Listed entries past their deadline: ask the store whether they were delivered."""
        out: list[CheckItem] = []
        for name, listed in self._listed.items():
            grace = self.feeds[name].grace if name in self.feeds else timedelta(minutes=10)
            for item, seen in listed.values():
                start = max(item.issued, seen) if item.issued is not None else seen
                if now >= start + grace:
                    out.append(item)
        return out

    def alarms(self, now: datetime, delivered: Iterable[str]) -> dict[str, Alarm]:
        """The alarms that should be open at ``now``; ``delivered``: refs known delivered."""
        done = set(delivered)
        out: dict[str, Alarm] = {}
        for item in self.due(now):
            if item.ref in done:
                continue
            key = f"missing:{item.ref}"
            by = next((n for n, listed in self._listed.items() if item.ref in listed), "")
            seen = self._listed[by][item.ref][1] if by else now
            start = max(item.issued, seen) if item.issued is not None else seen
            out.setdefault(key, Alarm(key, "missing", by, item.ref, start, item.title, item.issued))
        for feed in self.feeds.values():
            stale = self._stale_since(feed, now)
            if stale is not None:
                key = f"stale:{feed.name}"
                out[key] = Alarm(key, "stale", feed.name, feed.name, stale)
        return out

    def over(self, now: datetime, open_keys: Iterable[str], delivered: Iterable[str]) -> set[str]:
        """Of the open alarms, those with proof that they are over (never a mere absence)."""
        done = set(delivered)
        out: set[str] = set()
        for key in open_keys:
            kind, _, subject = key.partition(":")
            if kind == "stale":
                feed = self.feeds.get(subject)
                if feed is None or (
                    subject in self._answered and self._stale_since(feed, now) is None
                ):
                    out.add(key)  # it answered since (or is no longer configured)
            elif kind == "missing":
                listed = [subject in items for items in self._listed.values()]
                if subject in done or (listed and not any(listed)):
                    out.add(key)  # delivered, or no list names it any more
        return out

    def listed_items(self) -> list[CheckItem]:
        """Every entry a check list currently names (once each)."""
        out: dict[str, CheckItem] = {}
        for items in self._listed.values():
            for ref, (item, _seen) in items.items():
                out.setdefault(ref, item)
        return list(out.values())

    def health(self, now: datetime) -> list[FeedHealth]:
        """Every feed's health, most trusted first (a plain value for status pages)."""
        out = []
        for feed in self.feeds.values():
            last = self._last.get(feed.name)
            out.append(
                FeedHealth(
                    name=feed.name,
                    role=feed.role,
                    priority=feed.priority,
                    last_answer_at=self._answered.get(feed.name),
                    last_ok_at=self._ok.get(feed.name),
                    last_error=self._errors.get(feed.name),
                    consecutive_failures=self._failures.get(feed.name, 0),
                    stale=self._stale_since(feed, now) is not None,
                    listed=last.listed if last is not None else 0,
                    newest=last.newest if last is not None else None,
                )
            )
        return out


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def health_json(items: Sequence[FeedHealth]) -> list[Mapping[str, object]]:
    """``FeedHealth`` values as JSON-ready dicts (ISO times)."""

    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v is not None else None

    return [
        {
            "name": h.name,
            "role": h.role,
            "priority": h.priority,
            "last_answer_at": iso(h.last_answer_at),
            "last_ok_at": iso(h.last_ok_at),
            "last_error": h.last_error,
            "consecutive_failures": h.consecutive_failures,
            "stale": h.stale,
            "listed": h.listed,
            "newest": h.newest,
        }
        for h in items
    ]
