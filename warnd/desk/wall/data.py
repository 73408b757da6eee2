"""The wall's figures: what ``warnd status`` and ``warnd unreached`` show, for a screen.

Built only on the duty desk's read path — ``views.warnings`` (the per-level counters of
``warnd status``), ``views.not_woken`` (the list of ``warnd unreached``) and
``views.reach.reach`` (reached in time / late / still being called, by the report's 631
rule) — and on ``warnd.cli.statusview``'s JSON, so that each warning on the wall carries the
very keys and numbers of ``warnd status --json`` (docs/operations.md), plus what a screen
needs: colour band, texts in the configured zone, instants in epoch milliseconds for the
page's countdowns (computed from the server's clock, sent with the data).

Warnings are in urgency order: real before drills; those with divisions on the not-woken list
or past their deadline first; then active before lifted; then by severity; then by the nearest
631 time (next stage, else onset). The not-woken list keeps ``views.not_woken``'s order (real
first, oldest first): the first ``shown`` entries with the totals (a province warning has
thousands; a screen shows a few).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import phonenumbers

from warnd.cli.statusview import STATE_ZH, Fmt, entry_json, warning_json
from warnd.core.cap.model import SEVERITY_RANK
from warnd.core.chain import rungs
from warnd.desk import views
from warnd.desk.report import LEVEL_ZH
from warnd.desk.views.feeds import FeedAlarm, feed_alarms
from warnd.desk.views.reach import Reach, reach
from warnd.desk.views.reader import Source, source
from warnd.desk.views.unreached import not_woken_counts

if TYPE_CHECKING:
    from warnd.store import Store

#: CAP severity → the signal colour of the warning (domain: 蓝 Minor … 红 Extreme)
COLOUR = {"Minor": "blue", "Moderate": "yellow", "Severe": "orange", "Extreme": "red"}
COLOUR_ZH = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色", "grey": "未分级"}
Names = Callable[[Iterable[str]], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed as the wall shows it; ``problem`` is None when it is healthy."""

    name: str
    problem: str | None = None


def feed_health(report: Mapping[str, Any]) -> list[FeedHealth]:
    """The feeds of the daemon's ``health()`` report (``/healthz``): a feed whose last polls
    failed is a problem. The one place that knows where feed health comes from."""
    out = []
    for name, st in (report.get("feeds") or {}).items():
        failures = int(st.get("consecutive_failures") or 0)
        problem = None
        if failures:
            error = _short(str(st.get("last_error") or "未知错误"))
            problem = f"连续 {failures} 次获取失败：{error}"
        elif st.get("stale"):
            problem = "长时间未收到来源应答（已超过 stale_after）"
        out.append(FeedHealth(str(name), problem))
    return out


def alarm_health(alarms: Iterable[FeedAlarm]) -> list[FeedHealth]:
    """Open missing-warning alarms of the feed watch (``warnd.desk.views.feeds``) as banners: a
    warning a check list names that no source delivered is the failure the room must see."""
    return [
        FeedHealth(a.feed or a.subject, _short(a.text or f"预警 {a.subject} 未收到"))
        for a in alarms
        if a.kind == "missing"
    ]


def _short(text: str) -> str:
    return text if len(text) <= 160 else text[:159] + "…"


def shown_phone(number: str, mask: bool = False) -> str:
    """A number as a duty officer dials it: national format (``138 1234 5678``,
    ``0743 652 2110``), a foreign one international. ``mask`` hides the digits between the
    first group (the mobile prefix or the area code) and the last four: ``138 **** 5678``,
    ``0743 *** 2110``."""
    try:
        parsed = phonenumbers.parse(number, "CN")
        fmt = phonenumbers.PhoneNumberFormat
        text = phonenumbers.format_number(
            parsed, fmt.NATIONAL if parsed.country_code == 86 else fmt.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        text = number
    if not mask:
        return text
    head, sep, rest = text.partition(" ")
    if not sep:
        head, rest = text[:3], text[3:]
    digits = sum(c.isdigit() for c in rest)
    out, seen = [], 0
    for c in rest:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - 4 else "*")
        else:
            out.append(c)
    return head + sep + "".join(out)


def _ms(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def _urgency(w: views.WarningView, now: datetime) -> tuple[Any, ...]:
    t = w.totals
    nxt = w.next_stage()
    soonest = nxt.due_at if nxt is not None else w.onset
    return (
        w.drill,
        0 if t.not_woken or t.overdue else 1,
        0 if w.state == "active" else 1,
        -SEVERITY_RANK.get(w.severity or "", 0),
        soonest or now + timedelta(days=3650),
        w.key,
    )


def _warning(w: views.WarningView, f: Fmt, reached: Mapping[tuple[int, str], Reach]) -> Any:
    out = warning_json(w, f)
    colour = COLOUR.get(w.severity or "", "grey")
    nxt = w.next_stage()
    out |= {
        "colour": colour,
        "colour_zh": COLOUR_ZH[colour],
        "state_zh": STATE_ZH.get(w.state, w.state),
        "onset_text": f.t(w.onset),
        "onset_ms": _ms(w.onset),
        "urgent": bool(w.totals.not_woken or w.totals.overdue),
    }
    if nxt is not None:
        out["next_stage"] |= {
            "level_zh": LEVEL_ZH.get(nxt.level, nxt.level),
            "due_text": f.t(nxt.due_at),
            "due_ms": _ms(nxt.due_at),
        }
    stage_of = {lv.level: lv.stage for lv in w.levels}
    for lv in out["levels"]:
        r = reached.get((w.id, lv["level"]), Reach())
        st = stage_of.get(lv["level"])
        lv |= {
            "level_zh": LEVEL_ZH.get(lv["level"], lv["level"]),
            "due_text": f.t(st.due_at) if st else "—",
            "deadline_text": f.t(st.deadline) if st else "—",
            "deadline_passed": bool(st and st.deadline and f.now > st.deadline),
            "reached_in_time": r.in_time,
            "reached_late": r.late,
            "calling": r.calling,
        }
    return out


def _entry(e: views.NotWoken, f: Fmt, names: Mapping[str, str], mask: bool) -> dict[str, Any]:
    out = entry_json(e, f, dict(names))
    out |= {
        "level_zh": LEVEL_ZH.get(e.level, e.level),
        "since_text": f.t(e.since),
        "state_zh": "值班室已确认，待处置" if e.reached_at is not None else "待处置",
    }
    for c in out["to_call"]:
        c["phone"] = shown_phone(c["phone"], mask)
        c["rung_zh"] = rungs.zh(c["rung"])
    return out


def _totals(c: views.Counts, r: Reach) -> dict[str, int]:
    reach_keys = {"reached_in_time": r.in_time, "reached_late": r.late, "calling": r.calling}
    return c.as_dict() | reach_keys


async def wall_data(
    where: Source | Store,
    now: datetime,
    tz: ZoneInfo,
    *,
    names: Names | None = None,
    mask: bool = False,
    feeds: Sequence[FeedHealth] = (),
    shown: int = 40,
) -> dict[str, Any]:
    """Everything the wall shows at ``now``, as JSON-ready values (keys: docs/operations.md)."""
    f = Fmt(tz, now)
    ws = await views.warnings(where, now)
    reached = await reach(where, ws)
    first = await views.not_woken(where, limit=shown)
    real_entries, drill_entries = await not_woken_counts(where)
    feeds = [*feeds, *alarm_health(await feed_alarms(source(where)))]
    who = names([c.contact_id for e in first for c in e.to_call]) if names else {}
    sums = {False: Reach(), True: Reach()}
    for w in ws:
        for lv in w.levels:
            r = reached.get((w.id, lv.level), Reach())
            sums[w.drill] = Reach(*(a + b for a, b in zip(sums[w.drill], r, strict=True)))
    ordered = sorted(ws, key=lambda w: _urgency(w, now))
    real, drill = views.Counts(), views.Counts()
    for w in ws:
        real, drill = (real, drill + w.totals) if w.drill else (real + w.totals, drill)
    offset = now.astimezone(tz).utcoffset() or timedelta(0)
    return {
        "now": f.iso(now),
        "now_ms": _ms(now),
        "utc_offset_s": int(offset.total_seconds()),
        "timezone": tz.key,
        "warnings": [_warning(w, f, reached) for w in ordered],
        "totals": {"real": _totals(real, sums[False]), "drill": _totals(drill, sums[True])},
        "counts": {
            "real": sum(1 for w in ws if not w.drill),
            "drill": sum(1 for w in ws if w.drill),
        },
        "not_woken": {
            "total": real_entries + drill_entries,
            "real": real_entries,
            "drill": drill_entries,
            "entries": [_entry(e, f, who, mask) for e in first],
        },
        "feeds": [{"name": x.name, "ok": x.problem is None, "problem": x.problem} for x in feeds],
        "masked": mask,
    }
