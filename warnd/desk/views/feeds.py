"""Feed alarms as the store keeps them: for the ``warnd status`` banner and the wall page.

``warnd.edges.alarms`` records each alarm of the feed watch (a warning that did not arrive, a feed
gone silent) as an ``event`` row without a warning (type ``feed_alarm``), and its end as
``feed_alarm_cleared``. ``feed_alarms(source)`` folds them into the alarms open now (or all of
them): plain values, read with plain SQL, so it works while the daemon is down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from warnd.desk.views import Timestamps
from warnd.desk.views.reader import Source

RAISED = "feed_alarm"
CLEARED = "feed_alarm_cleared"


@dataclass(frozen=True, slots=True)
class FeedAlarm:
    """One alarm: ``kind`` ``missing`` (a warning no source delivered) or ``stale`` (a feed
    that stopped answering); ``subject`` is the warning's identifier or the feed's name."""

    id: int
    key: str
    kind: str
    feed: str
    subject: str
    text: str
    raised_at: datetime
    since: datetime | None
    sent: bool
    cleared_at: datetime | None = None
    title: str | None = None

    @property
    def open(self) -> bool:
        return self.cleared_at is None


def _data(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if value else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


async def feed_alarms(source: Source, *, include_cleared: bool = False) -> tuple[FeedAlarm, ...]:
    """The open feed alarms, oldest first (with ``include_cleared``: every alarm ever raised)."""
    rows = await source.fetch(
        "SELECT id, type, at, data FROM event"
        " WHERE warning_id IS NULL AND type IN :types ORDER BY id",
        {"types": (RAISED, CLEARED)},
    )
    ts = Timestamps()
    latest: dict[str, FeedAlarm] = {}
    done: list[FeedAlarm] = []
    for row_id, kind, at, raw in rows:
        data = _data(raw)
        key = str(data.get("key", ""))
        when = ts(at)
        assert when is not None
        if kind == RAISED:
            if key in latest:
                done.append(latest.pop(key))  # raised again without a clear: keep the first
            since = data.get("since")
            latest[key] = FeedAlarm(
                id=int(row_id),
                key=str(key),
                kind=str(data.get("kind", key.partition(":")[0])),
                feed=str(data.get("feed", "")),
                subject=str(data.get("subject", key.partition(":")[2])),
                text=str(data.get("text", "")),
                raised_at=when,
                since=ts(since) if since else None,
                sent=data.get("sent_at") is not None,
                title=data.get("title"),
            )
        elif key in latest:
            closed = latest.pop(key)
            done.append(
                FeedAlarm(
                    **{**{f: getattr(closed, f) for f in closed.__slots__}, "cleared_at": when}
                )
            )
    open_ = sorted(latest.values(), key=lambda a: a.id)
    if not include_cleared:
        return tuple(open_)
    return tuple(sorted([*done, *open_], key=lambda a: a.id))


def alarm_json(a: FeedAlarm) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v is not None else None

    return {
        "key": a.key,
        "kind": a.kind,
        "feed": a.feed,
        "subject": a.subject,
        "title": a.title,
        "text": a.text,
        "raised_at": iso(a.raised_at),
        "since": iso(a.since),
        "sent": a.sent,
        "cleared_at": iso(a.cleared_at),
    }
