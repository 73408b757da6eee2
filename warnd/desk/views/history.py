"""The chain's history as the drill report's events (contracts §4), read back from the rows.

Each thing that happened is stored once: an attempt or a notice is its ``outbox`` row (``notify``
for a call attempt, ``update``/``cancel`` for a notice), an answer that ended its call its
``ack`` row, and what has no row of its own (``escalate``, ``unreached``, ``skip``) an ``event``
row. ``seq`` orders them at one instant in the order the chain made them; rows kept from before
schema 0003 are ``event`` rows of every type (their outbox and ack rows carry no ``seq``).

One query (``UNION ALL`` of the three, ordered by time then ``seq``), the same SQL on SQLite and
PostgreSQL, through any ``warnd.desk.views.reader.Source``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from warnd.desk.views import Timestamps
from warnd.desk.views.reader import Source, source

if TYPE_CHECKING:
    from warnd.store import Store

_SQL = """
SELECT h.at, h.seq, h.src, h.kind, h.warning, h.contact_id, h.division, h.level,
       h.attempt, h.rung, h.extra, h.late, h.data
FROM (
  SELECT e.at AS at, e.seq AS seq, 'e' AS src, e.type AS kind, w.key AS warning,
         e.contact_id AS contact_id,
         e.division AS division, e.level AS level, CAST(NULL AS integer) AS attempt,
         CAST(NULL AS text) AS rung, CAST(NULL AS text) AS extra,
         CAST(NULL AS boolean) AS late, e.data AS data
  FROM event e JOIN warning w ON w.id = e.warning_id {event_where}
  UNION ALL
  SELECT o.at, o.seq, 'o', o.purpose, w.key, o.contact_id, d.code, d.level,
         o.attempt, o.rung, CASE WHEN o.purpose = 'call' THEN o.bundle ELSE m.severity END,
         CAST(NULL AS boolean), CAST(NULL AS json)
  FROM outbox o JOIN warning w ON w.id = o.warning_id
  LEFT JOIN call c ON c.id = o.call_id
  LEFT JOIN division d ON d.id = c.division_id
  LEFT JOIN message m ON m.id = o.message_id
  WHERE o.seq IS NOT NULL {outbox_where}
  UNION ALL
  SELECT a.received_at, a.seq, 'a', 'ack', w.key, a.contact_id, d.code, d.level,
         CAST(NULL AS integer), c.rung, a.source, a.late, CAST(NULL AS json)
  FROM ack a JOIN warning w ON w.id = a.warning_id
  JOIN call c ON c.id = a.call_id
  JOIN division d ON d.id = a.division_id
  WHERE a.counted AND a.seq IS NOT NULL {ack_where}
) h
ORDER BY h.at, h.seq
"""

_TYPE = {"call": "notify", "update": "update", "lift": "cancel"}


def _sql(filtered: bool) -> str:
    if not filtered:
        return _SQL.format(event_where="", outbox_where="", ack_where="")
    return _SQL.format(
        event_where="WHERE e.warning_id IN :ids",
        outbox_where="AND o.warning_id IN :ids",
        ack_where="AND a.warning_id IN :ids",
    )


async def events(
    where: Source | Store, tz: tzinfo, warning_ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Every history event (of ``warning_ids``, or of every warning), in time order, with times
    shown in ``tz``."""
    s = source(where)
    if warning_ids is not None and not warning_ids:
        return []
    params = None if warning_ids is None else {"ids": list(warning_ids)}
    sql = _sql(warning_ids is not None)
    ts = Timestamps()
    shown: dict[Any, str] = {}
    parsed: dict[Any, dict[str, Any]] = {}  # a fan-out repeats a handful of payloads
    # one str object per distinct value: a province's history repeats each code, person and
    # rung thousands of times, and every row hands over fresh copies
    same: dict[Any, Any] = {}
    one = same.setdefault
    out: list[dict[str, Any]] = []
    stream = getattr(s, "stream", None)  # an open store reads a long history in chunks
    chunks = stream(sql, params) if stream is not None else _once(s, sql, params)
    async for rows in chunks:
        for row in rows:
            out.append(_event(row, tz, ts, shown, parsed, one))
    return out


async def _once(s: Source, sql: str, params: Any) -> AsyncIterator[list[Any]]:
    yield await s.fetch(sql, params)


def _event(
    row: Any,
    tz: tzinfo,
    ts: Timestamps,
    shown: dict[Any, str],
    parsed: dict[Any, dict[str, Any]],
    one: Any,
) -> dict[str, Any]:
    at, _seq, src, kind, warning, contact, division, level, attempt, rung, extra, late, data = row
    warning, contact, division = (
        one(warning, warning),
        one(contact, contact),
        one(division, division),
    )
    level, rung, extra = one(level, level), one(rung, rung), one(extra, extra)
    when = shown.get(at)
    if when is None:
        t = ts(at)
        assert t is not None
        when = shown[at] = t.astimezone(tz).isoformat()
    item: dict[str, Any] = {
        "at": when,
        "type": _TYPE[kind] if src == "o" else kind,
        "warning": warning,
        "contact_id": contact,
        "division": division,
        "level": level,
    }
    if src == "o":
        if kind == "call":
            item["attempt"] = int(attempt)
            item["rung"] = rung
            if extra is not None:  # sent in one message with other calls (contracts §8)
                item["bundle"] = extra
        elif kind == "update":
            item["severity"] = extra
    elif src == "a":
        item["rung"] = rung
        item["source"] = extra
        if late:
            item["late"] = True
    elif data is not None:
        if isinstance(data, str | bytes):
            cached = parsed.get(data)
            if cached is None:
                cached = json.loads(data)
                if len(parsed) < 10000:  # bounded: payloads with ids would not repeat
                    parsed[data] = cached
            data = cached
        if data:
            item.update(data)
    return item
