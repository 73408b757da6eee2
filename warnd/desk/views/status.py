"""The queries behind ``warnd status``: warnings with per-level progress, one warning in detail.

Per-level progress is two grouped queries per call of ``warnings`` (divisions, then calls
joined to their division); the detail reads divisions in urgency order and, when a limit is
given, only the calls of the divisions it shows — a terminal shows a few hundred rows of a
100,000-person warning, and reading the other 99,800 would cost most of the second.
Every function reads through a ``warnd.desk.views.reader.Source`` (or an open ``Store``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from warnd.core.chain import rungs
from warnd.core.errors import InputError
from warnd.desk.views import (
    LEVEL_ORDER,
    Counts,
    Detail,
    DivisionView,
    LevelView,
    PersonView,
    StageView,
    Timestamps,
    WarningView,
    deadlines,
    escalations_of,
    level_key,
)
from warnd.desk.views.reader import Source, source

if TYPE_CHECKING:
    from warnd.store import Store

_WARNING_SQL = (
    "SELECT id, key, sender, headline, event, severity, drill, state, reason, reference_at,"
    " reference_kind, expires_at, arrived_at, updated_at FROM warning"
)


def _warning(r: Sequence[Any], ts: Timestamps) -> WarningView:
    return WarningView(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        bool(r[6]),
        r[7],
        r[8],
        ts(r[9]),
        r[10],
        ts(r[11]),
        ts(r[12]),
        ts(r[13]),
    )


async def _stages(
    s: Source, ws: Sequence[WarningView], ts: Timestamps
) -> dict[int, tuple[StageView, ...]]:
    q = (
        "SELECT warning_id, level, lead_s, due_at, state, fired_at FROM stage"
        " WHERE warning_id IN :ids ORDER BY warning_id, idx"
    )
    raw: dict[int, list[Sequence[Any]]] = {}
    for r in await s.fetch(q, {"ids": [w.id for w in ws]}):
        raw.setdefault(int(r[0]), []).append(r)
    onsets = {w.id: w.onset for w in ws}
    out: dict[int, tuple[StageView, ...]] = {}
    for wid, rows in raw.items():
        dl = deadlines(onsets[wid], [(r[1], timedelta(seconds=int(r[2]))) for r in rows])
        out[wid] = tuple(
            StageView(r[1], timedelta(seconds=int(r[2])), ts(r[3]), r[4], ts(r[5]), dl.get(r[1]))  # type: ignore[arg-type]
            for r in rows
        )
    return out


async def _level_counts(
    s: Source, ids: Sequence[int], now: datetime, deadline_of: Mapping[tuple[int, str], Any]
) -> dict[tuple[int, str], Counts]:
    """Per (warning, level): division and person counters, two grouped queries."""
    qd = (
        "SELECT warning_id, level, count(*),"
        " sum(CASE WHEN reached_at IS NOT NULL THEN 1 ELSE 0 END),"
        " sum(CASE WHEN rung <> 'stage' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN unreached_at IS NOT NULL AND resolved_at IS NULL THEN 1 ELSE 0 END),"
        " sum(CASE WHEN reached_at IS NULL AND NOT stopped THEN 1 ELSE 0 END)"
        " FROM division WHERE warning_id IN :ids GROUP BY warning_id, level"
    )
    qp = (
        "SELECT c.warning_id, d.level, count(DISTINCT c.contact_id),"
        " count(DISTINCT CASE WHEN c.state = 'acked' THEN c.contact_id END),"
        " count(DISTINCT CASE WHEN c.state = 'active' AND c.attempts_made > 1"
        " THEN c.contact_id END),"
        " sum(CASE WHEN c.state = 'active' THEN 1 ELSE 0 END)"
        " FROM call c JOIN division d ON d.id = c.division_id"
        " WHERE c.warning_id IN :ids GROUP BY c.warning_id, d.level"
    )
    people = {
        (int(r[0]), r[1]): tuple(int(v or 0) for v in r[2:])
        for r in await s.fetch(qp, {"ids": list(ids)})
    }
    out: dict[tuple[int, str], Counts] = {}
    for r in await s.fetch(qd, {"ids": list(ids)}):
        k = (int(r[0]), r[1])
        divisions, reached, escalated, not_woken, open_ = (int(v or 0) for v in r[2:])
        deadline = deadline_of.get(k)
        overdue = open_ if deadline is not None and now > deadline else 0
        notified, acked, redialling, calls = people.get(k, (0, 0, 0, 0))
        out[k] = Counts(
            divisions, reached, escalated, not_woken, overdue, notified, acked, redialling, calls
        )
    return out


async def _with_progress(
    s: Source, ws: list[WarningView], now: datetime, ts: Timestamps
) -> list[WarningView]:
    if not ws:
        return []
    stages = await _stages(s, ws, ts)
    deadline_of = {(w.id, x.level): x.deadline for w in ws for x in stages.get(w.id, ())}
    counts = await _level_counts(s, [w.id for w in ws], now, deadline_of)
    out = []
    for w in ws:
        st = stages.get(w.id, ())
        names = {lv for (wid, lv) in counts if wid == w.id} | {x.level for x in st}
        by_level = {x.level: x for x in st}  # the last stage of a level stands for it
        levels = tuple(
            LevelView(lv, by_level.get(lv), counts.get((w.id, lv), Counts()))
            for lv in sorted(names, key=level_key)
        )
        out.append(replace(w, stages=st, levels=levels))
    return out


async def warnings(
    where: Source | Store, now: datetime, *, include_all: bool = False
) -> list[WarningView]:
    """Warnings with per-level progress, newest first.

    By default those a duty officer still watches: active and not expired, or with a call still
    open or a not-woken entry still unresolved (a drill replay that has ended is over: not
    shown). ``include_all``: every warning ever ingested.
    """
    s = source(where)
    ts = Timestamps()
    ws = [_warning(r, ts) for r in await s.fetch(_WARNING_SQL + " ORDER BY arrived_at, id")]
    if not include_all:
        busy = {
            int(r[0])
            for r in await s.fetch(
                "SELECT DISTINCT warning_id FROM call WHERE state = 'active'"
                " UNION SELECT DISTINCT warning_id FROM division"
                " WHERE unreached_at IS NOT NULL AND resolved_at IS NULL"
            )
        }
        ws = [
            w
            for w in ws
            if (w.id in busy and w.state != "ended")  # a finished drill replay is over
            or (w.state == "active" and (w.expires_at is None or w.expires_at > now))
        ]
    out = await _with_progress(s, ws, now, ts)
    out.reverse()
    return out


def _like_prefix(ref: str) -> str:
    """A LIKE pattern for keys starting with ``ref`` (``/`` escapes the wildcards)."""
    return ref.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


async def find(where: Source | Store, ref: str) -> WarningView:
    """The warning whose key is ``ref``, or whose key starts with ``ref`` (unique prefix).

    Its facts only (no stages, no progress: ``warning`` adds them).
    """
    s = source(where)
    ts = Timestamps()
    exact = await s.fetch(_WARNING_SQL + " WHERE key = :ref", {"ref": ref})
    if len(exact) == 1:
        return _warning(exact[0], ts)
    like = await s.fetch(
        _WARNING_SQL + " WHERE key LIKE :pattern ESCAPE '/' ORDER BY id LIMIT 6",
        {"pattern": _like_prefix(ref)},
    )
    if len(like) == 1:
        return _warning(like[0], ts)
    if not like:
        raise InputError(f"未找到预警 no warning with key or prefix {ref!r}", field="WARNING")
    keys = ", ".join(r[1] for r in like[:5])
    raise InputError(f"前缀不唯一 prefix {ref!r} matches several warnings: {keys}", field="WARNING")


async def warning(where: Source | Store, ref: str, now: datetime) -> WarningView:
    """One warning (key or unique prefix) with its per-level progress."""
    s = source(where)
    w = await find(s, ref)
    return (await _with_progress(s, [w], now, Timestamps()))[0]


_DIVISION_COLS = (
    "SELECT id, code, name, level, rung, reached_at, reached_by, reached_source, unreached_at,"
    " resolved_at, resolved_by, resolved_note, stopped FROM division d"
)
_CALL_SQL = (
    "SELECT c.id, c.division_id, c.contact_id, c.phone, c.rung, c.start_at, c.attempts_made,"
    " c.next_due_at, c.state, c.acked_at, c.ack_source, o.due_at, o.sent_at, o.channel, o.state,"
    " o.bundle FROM call c LEFT JOIN outbox o ON o.id = c.last_message"
)
_LEVEL_RANK = "CASE d.level " + " ".join(
    f"WHEN '{lv}' THEN {i}" for i, lv in enumerate(LEVEL_ORDER)
)
_LEVEL_RANK += f" ELSE {len(LEVEL_ORDER)} END"


def _division_filter(
    level: str | None, pending: bool, unreached: bool
) -> tuple[str, dict[str, Any]]:
    where, params = " WHERE d.warning_id = :w", {}
    if level is not None:
        where += " AND d.level = :level"
        params["level"] = level
    if unreached:
        where += " AND d.unreached_at IS NOT NULL AND d.resolved_at IS NULL"
    if pending:
        where += (
            " AND EXISTS (SELECT 1 FROM call p WHERE p.division_id = d.id"
            " AND p.state IN ('active', 'failed'))"
        )
    return where, params


async def detail(
    store: Source | Store,
    w: WarningView,
    now: datetime,
    *,
    level: str | None = None,
    pending: bool = False,
    unreached: bool = False,
    limit: int | None = None,
) -> Detail:
    """Per division, per person: what has been tried and who has answered.

    ``level``: only that level; ``pending``: only persons who have not answered (and are not
    stopped), divisions left without any dropped; ``unreached``: only divisions on the not-woken
    list and not yet resolved. ``limit``: the first ``limit`` divisions by urgency (on the
    not-woken list, overdue, still open, done); without it every division, by level and code.
    """
    s = source(store)
    ts = Timestamps()
    where, params = _division_filter(level, pending, unreached)
    params["w"] = w.id
    if limit is not None:
        params["late"] = w.overdue_levels(now)
        order = (
            " ORDER BY CASE WHEN d.unreached_at IS NOT NULL AND d.resolved_at IS NULL THEN 0"
            " WHEN d.reached_at IS NULL AND NOT d.stopped AND d.level IN :late THEN 1"
            " WHEN d.reached_at IS NULL AND NOT d.stopped THEN 2 ELSE 3 END,"
            f" {_LEVEL_RANK}, d.code LIMIT :limit"
        )
        params["limit"] = limit
    else:
        order = f" ORDER BY {_LEVEL_RANK}, d.code"
    drows = await s.fetch(_DIVISION_COLS + where + order, params)
    total = len(drows)
    crows: list[Any] = []
    if limit is not None:
        total = int((await s.fetch("SELECT count(*) FROM division d" + where, params))[0][0])
        ids = [int(r[0]) for r in drows]
        for i in range(0, len(ids), 500):
            q = _CALL_SQL + " WHERE c.division_id IN :ids ORDER BY c.id"
            crows += await s.fetch(q, {"ids": ids[i : i + 500]})
    else:
        sub = "SELECT d.id FROM division d" + where
        sql = _CALL_SQL + f" WHERE c.warning_id = :w AND c.division_id IN ({sub}) ORDER BY c.id"
        crows = await s.fetch(sql, params)
    officer = {
        int(r[0]): (r[1], r[2])
        for r in await s.fetch(
            'SELECT call_id, "by", note FROM ack WHERE warning_id = :w'
            " AND source = 'officer' AND call_id IS NOT NULL ORDER BY id",
            {"w": w.id},
        )
    }
    people, called = _persons(crows, officer, ts)
    out, dropped = _divisions(drows, people, called, w, pending, ts)
    return Detail(w, out, total - dropped)


def _persons(
    crows: Sequence[Any], officer: Mapping[int, tuple[Any, Any]], ts: Timestamps
) -> tuple[dict[int, dict[tuple[str, str], PersonView]], dict[int, set[str]]]:
    """Per division: each person at each rung (their calls folded), and the rungs called."""
    people: dict[int, dict[tuple[str, str], PersonView]] = {}
    called: dict[int, set[str]] = {}
    for r in crows:
        did, cid, rung = r[1], r[2], r[4]
        called.setdefault(did, set()).add(rung)
        mine = people.setdefault(did, {})
        prev = mine.get((cid, rung))
        by, note = officer.get(r[0], (None, None))
        mine[(cid, rung)] = PersonView(  # calls come in id order: the latest round wins
            cid,
            rung,
            rungs.rank_of(rung),
            r[3],
            r[6] + (prev.attempts if prev else 0),
            r[8],
            ts(r[5]),
            ts(r[12]) or ts(r[11]),
            r[13],
            r[14],
            ts(r[7]),
            ts(r[9]),
            r[10],
            by,
            note,
            None,
            r[15] is not None,
        )
    return people, called


def _divisions(
    drows: Sequence[Any],
    people: Mapping[int, Mapping[tuple[str, str], PersonView]],
    called: Mapping[int, set[str]],
    w: WarningView,
    pending: bool,
    ts: Timestamps,
) -> tuple[tuple[DivisionView, ...], int]:
    """The divisions' views, in the order read, and how many ``pending`` left out."""
    dl = {lv.level: (lv.stage.deadline if lv.stage else None) for lv in w.levels}
    out = []
    dropped = 0
    for r in drows:
        persons = sorted(people.get(r[0], {}).values(), key=lambda p: rungs.order(p.rung))
        if pending:
            persons = [p for p in persons if p.pending]
            if not persons:
                dropped += 1
                continue
        not_woken_at = ts(r[8])
        out.append(
            DivisionView(
                r[1],
                r[2],
                r[3],
                r[4],
                ts(r[5]),
                r[6],
                r[7],
                not_woken_at,
                ts(r[9]),
                r[10],
                r[11],
                bool(r[12]),
                dl.get(r[3]),
                escalations_of(called.get(r[0], ()), not_woken_at is not None),
                tuple(persons),
            )
        )
    return tuple(out), dropped
