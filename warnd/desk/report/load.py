"""Where a report's inputs come from: a warning in the store, or a ``drill simulate`` file.

Both end in ``warnd.desk.report.build`` with the same kind of events; this module only gathers the
facts around them. From the store: the warning and its stages, the number each person was
called on, division names, outbox rows by channel and state, resolved not-woken entries, and
the history (``warnd.desk.views.history``). From
a drill file: its events, its ``warnings`` facts when it carries them (else the onset is
estimated from the stage times), names and numbers from the contacts directory when given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from warnd.core.directory import Directory
from warnd.core.errors import InputError
from warnd.desk.report import Facts, Progress, Report, StageFact, as_time, build, estimate_facts
from warnd.desk.views import Timestamps, find, history
from warnd.desk.views.reader import source
from warnd.store import Store


async def from_store(
    store: Store,
    ref: str,
    tz: ZoneInfo,
    *,
    directory: Directory | None = None,
    progress: Progress | None = None,
) -> Report:
    """The report of one warning in the store (key or unique prefix of its identifier)."""
    w = await find(store, ref)
    wid = w.id
    ts = Timestamps()
    s = source(store)
    stages = tuple(
        StageFact(r[0], timedelta(seconds=int(r[1])), ts(r[2]), ts(r[3]))
        for r in await s.fetch(
            "SELECT level, lead_s, due_at, fired_at FROM stage WHERE warning_id = :w ORDER BY idx",
            {"w": wid},
        )
    )
    phones = {
        r[0]: r[1]
        for r in await s.fetch(
            "SELECT DISTINCT contact_id, phone FROM call WHERE warning_id = :w", {"w": wid}
        )
    }
    names: dict[str, str] = {}
    resolved: dict[str, str | None] = {}
    for code, name, by in await s.fetch(
        "SELECT code, name, resolved_by FROM division WHERE warning_id = :w", {"w": wid}
    ):
        names[code] = name
        if by is not None:
            resolved[code] = by
    channels: dict[str, dict[str, int]] = {}
    for channel, state, n in await s.fetch(
        "SELECT channel, state, count(*) FROM outbox WHERE warning_id = :w GROUP BY channel, state",
        {"w": wid},
    ):
        # attempts carried by another warning's message (contracts §8) are no channel's
        name = channel or ("合并 bundled" if state == "bundled" else "-")
        channels.setdefault(name, {})[state] = int(n)
    events = await history.events(s, tz, [wid])
    total = len(events)
    if progress is not None:
        progress(total, total * 2)
    facts = Facts(
        key=w.key,
        headline=w.headline,
        severity=w.severity,
        drill=w.drill,
        state=w.state,
        reason=w.reason,
        onset=w.onset,
        onset_kind=w.onset_kind,
        stages=stages,
    )
    people = _people(directory)
    return build(
        events,
        {w.key: facts},
        source="store",
        origin=w.key,
        tz=tz,
        phones=phones,
        names=people,
        division_names=names,
        channels={w.key: channels},
        resolved={w.key: resolved},
        progress=None if progress is None else (lambda d, t: progress(total + d, 2 * total)),
        total=total,
    )


async def drill_facts(store: Store, tz: ZoneInfo) -> list[dict[str, Any]]:
    """Every warning's facts in the shape a drill file's ``warnings`` list takes.

    ``warnd.desk.drill.report`` can add ``"warnings": await drill_facts(store, tz)`` to the file it
    writes; ``warnd report FILE`` then uses the exact onset and timetable instead of estimating.
    """
    ts = Timestamps()
    s = source(store)
    ws = await s.fetch(
        "SELECT id, key, headline, severity, state, reference_at, reference_kind"
        " FROM warning ORDER BY id"
    )
    stages: dict[int, list[StageFact]] = {}
    for r in await s.fetch(
        "SELECT warning_id, level, lead_s, due_at, fired_at FROM stage ORDER BY idx"
    ):
        fact = StageFact(r[1], timedelta(seconds=int(r[2])), ts(r[3]), ts(r[4]))
        stages.setdefault(int(r[0]), []).append(fact)
    return [
        facts_json(
            Facts(
                key=r[1],
                headline=r[2],
                severity=r[3],
                drill=True,
                state=r[4],
                onset=ts(r[5]),
                onset_kind=r[6],
                stages=tuple(stages.get(int(r[0]), ())),
            ),
            tz,
        )
        for r in ws
    ]


def _people(directory: Directory | None) -> dict[str, str]:
    if directory is None:
        return {}
    return {c.contact_id: c.name for c in directory.contacts() if c.name}


def read_drill(path: Path) -> dict[str, Any]:
    """A drill report file (contracts §4: ``{"events": [...], "summary": {...}}``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise InputError(
            f"无法读取演练报告 (cannot read drill report): {exc.strerror}", source=str(path)
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"不是演练报告：JSON 无效 (not a drill report, invalid JSON: {exc.msg})",
            source=str(path),
            line=exc.lineno,
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise InputError(
            "不是演练报告：没有 events 列表 (not a drill report: no events list)",
            source=str(path),
            field="events",
        )
    for i, e in enumerate(data["events"]):
        if not isinstance(e, dict) or not {"at", "type", "warning"} <= e.keys():
            raise InputError(
                "事件缺少 at/type/warning (event without at/type/warning)",
                source=str(path),
                field=f"events[{i}]",
            )
    return data


def from_drill(
    path: Path,
    tz: ZoneInfo,
    leads: Mapping[str, timedelta],
    *,
    directory: Directory | None = None,
    progress: Progress | None = None,
) -> Report:
    """The report of a ``drill simulate`` run, by the same ``build`` as a stored warning."""
    data = read_drill(path)
    events: list[dict[str, Any]] = data["events"]
    given = {f.key: f for f in (_facts(x) for x in data.get("warnings") or [])}
    by_warning: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_warning.setdefault(e["warning"], []).append(e)
    facts = {
        key: given.get(key) or estimate_facts(key, evs, leads) for key, evs in by_warning.items()
    }
    phones: dict[str, str] = {}
    divisions: dict[str, str] = {}
    if directory is not None:
        phones = {c.contact_id: c.phone for c in directory.contacts()}
        divisions = {d.code: d.name for d in directory.divisions()}
    return build(
        events,
        facts,
        source="drill",
        origin=str(path),
        tz=tz,
        phones=phones,
        names=_people(directory),
        division_names=divisions,
        progress=progress,
        total=len(events),
    )


def _facts(raw: Mapping[str, Any]) -> Facts:
    """Facts as a drill file may carry them (``warnings``: the shape of ``facts_json``)."""
    stages = tuple(
        StageFact(
            s["level"],
            timedelta(seconds=int(s["lead_s"])),
            as_time(s["due"]) if s.get("due") else None,
            as_time(s["fired_at"]) if s.get("fired_at") else None,
        )
        for s in raw.get("stages") or []
    )
    return Facts(
        key=raw["key"],
        headline=raw.get("headline"),
        severity=raw.get("severity"),
        drill=True,
        state=raw.get("state"),
        onset=as_time(raw["onset"]) if raw.get("onset") else None,
        onset_kind=raw.get("onset_kind") or "onset",
        stages=stages,
    )


def facts_json(facts: Facts, tz: ZoneInfo) -> dict[str, Any]:
    """What a drill file's ``warnings`` list would hold for exact deadlines (see docs)."""
    return {
        "key": facts.key,
        "headline": facts.headline,
        "severity": facts.severity,
        "state": facts.state,
        "onset": facts.onset.astimezone(tz).isoformat() if facts.onset else None,
        "onset_kind": facts.onset_kind,
        "stages": [
            {
                "level": s.level,
                "lead_s": int(s.lead.total_seconds()),
                "due": s.due_at.astimezone(tz).isoformat() if s.due_at else None,
                "fired_at": s.fired_at.astimezone(tz).isoformat() if s.fired_at else None,
            }
            for s in facts.stages
        ],
    }
