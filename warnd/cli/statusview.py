"""What ``warnd status`` and ``warnd unreached`` print: rich tables and stable JSON.

Pure functions of the views and the current time. Tables are ordered by urgency (not woken,
overdue, still being called, done); overdue rows are red, answered ones green. Times on the
day of ``now`` are shown as ``HH:MM``, others with their date. JSON keys: docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from warnd.core.chain import rungs
from warnd.core.notice import DRILL_MARK
from warnd.desk import views
from warnd.desk.report import LEVEL_ZH, SOURCE_ZH
from warnd.desk.views import display

STATE_ZH = {
    "active": "进行中",
    "skipped": "未调度",
    "cancelled": "已解除",
    "expired": "已过期",
    "ended": "已结束",  # a replayed drill whose run is over (warnd.desk.replay)
}
CALL_ZH = {"active": "呼叫中", "acked": "已应答", "failed": "未应答", "cancelled": "已停止"}


@dataclass(frozen=True, slots=True)
class Fmt:
    """Times for people: in the configured zone, short on the current day."""

    tz: ZoneInfo
    now: datetime

    def iso(self, t: datetime | None) -> str | None:
        return t.astimezone(self.tz).isoformat() if t else None

    def t(self, t: datetime | None) -> str:
        if t is None:
            return "—"
        local = t.astimezone(self.tz)
        same = local.date() == self.now.astimezone(self.tz).date()
        return local.strftime("%H:%M" if same else "%m-%d %H:%M")

    def secs(self, d: timedelta | None) -> int | None:
        return None if d is None else int(d.total_seconds())


Cell = str | tuple[str, str]  # text, or (text, style)


def grid(head: Sequence[str], rows: Sequence[tuple[Sequence[Cell], str]]) -> Text:
    """A plain aligned table: a bold header, a rule, one line per row with its style.

    Rich's ``Table`` costs about 2 ms a row; a duty officer's list of a province-wide warning
    is thousands of rows, so the long lists are drawn as padded lines (CJK-aware widths).
    """
    widths = [cell_len(h) for h in head]
    for cells, _style in rows:
        for i, c in enumerate(cells):
            widths[i] = max(widths[i], cell_len(c if isinstance(c, str) else c[0]))
    out = Text()
    out.append(
        "  ".join(h + " " * (w - cell_len(h)) for h, w in zip(head, widths, strict=True)).rstrip(),
        style="bold",
    )
    out.append("\n" + "─" * (sum(widths) + 2 * (len(widths) - 1)) + "\n")
    for cells, style in rows:
        line = Text(style=style)
        for i, c in enumerate(cells):
            text, cstyle = (c, "") if isinstance(c, str) else c
            line.append(text, style=cstyle or None)
            if i < len(cells) - 1:
                line.append(" " * (widths[i] - cell_len(text) + 2))
        line.rstrip()
        out.append_text(line)
        out.append("\n")
    out.rstrip()
    return out


# ---- JSON ---------------------------------------------------------------------------------


def warning_json(w: views.WarningView, f: Fmt, level: str | None = None) -> dict[str, Any]:
    nxt = w.next_stage()
    return {
        "key": w.key,
        "sender": w.sender,
        "headline": w.headline,
        "event": w.event,
        "severity": w.severity,
        "drill": w.drill,
        "state": w.state,
        "reason": w.reason,
        "onset": f.iso(w.onset),
        "onset_kind": w.onset_kind,
        "expires": f.iso(w.expires_at),
        "arrived_at": f.iso(w.arrived_at),
        "time_to_onset_s": f.secs(w.time_to_onset(f.now)),
        "next_stage": None
        if nxt is None
        else {"level": nxt.level, "due": f.iso(nxt.due_at), "in_s": f.secs(nxt.due_at - f.now)},
        "levels": [
            {
                "level": lv.level,
                "stage_state": lv.stage.state if lv.stage else None,
                "due": f.iso(lv.stage.due_at) if lv.stage else None,
                "fired_at": f.iso(lv.stage.fired_at) if lv.stage else None,
                "deadline": f.iso(lv.stage.deadline) if lv.stage else None,
                **lv.counts.as_dict(),
            }
            for lv in w.levels
            if level is None or lv.level == level
        ],
        "totals": w.totals.as_dict(),
    }


def summary_json(ws: list[views.WarningView], f: Fmt, level: str | None) -> dict[str, Any]:
    real, drill = views.Counts(), views.Counts()
    for w in ws:
        if w.drill:
            drill = drill + w.totals
        else:
            real = real + w.totals
    return {
        "now": f.iso(f.now),
        "warnings": [warning_json(w, f, level) for w in ws],
        "totals": {"real": real.as_dict(), "drill": drill.as_dict()},
    }


def _person_json(p: views.PersonView, f: Fmt) -> dict[str, Any]:
    return {
        "contact_id": p.contact_id,
        "name": p.name,
        "rank": p.rank,
        "rung": p.rung,
        "phone": p.phone,
        "attempts": p.attempts,
        "state": p.state,
        "started_at": f.iso(p.started_at),
        "last_attempt_at": f.iso(p.last_attempt_at),
        "last_channel": p.last_channel,
        "last_delivery": p.last_delivery,
        "bundled": p.bundled,
        "next_attempt_at": f.iso(p.next_due_at),
        "acknowledged_at": f.iso(p.acknowledged_at),
        "ack_source": p.ack_source,
        "ack_by": p.ack_by,
        "ack_note": p.ack_note,
    }


def detail_json(d: views.Detail, f: Fmt) -> dict[str, Any]:
    return {
        "now": f.iso(f.now),
        "warning": warning_json(d.warning, f),
        "divisions": [
            {
                "code": dv.code,
                "name": dv.name,
                "level": dv.level,
                "rung": dv.rung,
                "deadline": f.iso(dv.deadline),
                "overdue": dv.overdue(f.now),
                "reached_at": f.iso(dv.reached_at),
                "reached_by": dv.reached_by,
                "reached_source": dv.reached_source,
                "not_woken_at": f.iso(dv.not_woken_at),
                "resolved_at": f.iso(dv.resolved_at),
                "resolved_by": dv.resolved_by,
                "resolved_note": dv.resolved_note,
                "stopped": dv.stopped,
                "escalations": list(dv.escalations),
                "persons": [_person_json(p, f) for p in dv.persons],
            }
            for dv in d.divisions
        ],
    }


def entry_json(e: views.NotWoken, f: Fmt, names: dict[str, str]) -> dict[str, Any]:
    return {
        "warning": e.warning_key,
        "headline": e.headline,
        "drill": e.drill,
        "warning_state": e.warning_state,
        "division": e.code,
        "division_name": e.name,
        "level": e.level,
        "since": f.iso(e.since),
        "waiting_s": f.secs(f.now - e.since),
        "reached_at": f.iso(e.reached_at),
        "reached_by": e.reached_by,
        "reached_source": e.reached_source,
        "resolved": e.resolved,
        "resolved_at": f.iso(e.resolved_at),
        "resolved_by": e.resolved_by,
        "resolved_note": e.resolved_note,
        "to_call": [
            {
                "rung": c.rung,
                "rank": c.rank,
                "contact_id": c.contact_id,
                "name": names.get(c.contact_id),
                "phone": c.phone,
                "state": c.state,
                "acknowledged_at": f.iso(c.acknowledged_at),
            }
            for c in e.to_call
        ],
    }


def unreached_json(entries: list[views.NotWoken], f: Fmt, names: dict[str, str]) -> dict[str, Any]:
    return {
        "now": f.iso(f.now),
        "entries": [entry_json(e, f, names) for e in entries],
        "counts": {
            "real": sum(1 for e in entries if not e.drill),
            "drill": sum(1 for e in entries if e.drill),
        },
    }


# ---- terminal -----------------------------------------------------------------------------


def _title(w: views.WarningView, f: Fmt) -> Text:
    head = Text()
    if w.drill:
        head.append(DRILL_MARK, style="bold magenta")
    head.append(w.headline or w.key, style="bold")
    head.append(f"  {w.key}", style="dim")
    head.append(f"\n  {STATE_ZH.get(w.state, w.state)}  {w.severity or '—'}  发生 {f.t(w.onset)}")
    left = w.time_to_onset(f.now)
    if left is not None:
        head.append(f"（{display.relative(left)}）")
    nxt = w.next_stage()
    if nxt is not None:
        ahead = nxt.due_at - f.now
        head.append(
            f"  下一阶段 {LEVEL_ZH.get(nxt.level, nxt.level)} {f.t(nxt.due_at)}"
            + (f"（{display.span(ahead)}后）" if ahead >= timedelta(0) else "（已到时）")
        )
    if w.reason:
        head.append(f"\n  {w.reason}", style="yellow")
    return head


def _levels_table(w: views.WarningView, f: Fmt, level: str | None) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
    for h in (
        "层级",
        "631时间",
        "时限",
        "区划叫应",
        "人员应答",
        "重拨中",
        "已升级",
        "未叫醒",
        "逾期",
    ):
        t.add_column(h, justify="left" if h in ("层级", "631时间", "时限") else "right")
    for lv in w.levels:
        if level is not None and lv.level != level:
            continue
        c, st = lv.counts, lv.stage
        done = c.divisions and c.reached == c.divisions
        t.add_row(
            LEVEL_ZH.get(lv.level, lv.level),
            (f.t(st.due_at) + (" 待发" if st.state == "pending" else "")) if st else "—",
            f.t(st.deadline) if st else "—",
            Text(f"{c.reached}/{c.divisions}", style="green" if done else ""),
            f"{c.persons_acknowledged}/{c.persons_notified}",
            Text(str(c.redialling), style="yellow" if c.redialling else ""),
            str(c.escalated),
            Text(str(c.not_woken), style="bold red" if c.not_woken else ""),
            Text(str(c.overdue), style="bold red" if c.overdue else ""),
        )
    return t


def summary_view(ws: list[views.WarningView], f: Fmt, level: str | None) -> RenderableType:
    parts: list[RenderableType] = [Text(f"预警叫应进度 status  {f.t(f.now)}", style="bold")]
    if not ws:
        parts.append(Text("当前没有进行中的预警 no active warnings（--all 查看全部）"))
        return Group(*parts)
    real = [w for w in ws if not w.drill]
    drills = [w for w in ws if w.drill]
    for w in real + drills:  # drills after the real ones, never mixed into their totals
        parts += [Text(""), _title(w, f), _levels_table(w, f, level)]
    r = views.Counts()
    for w in real:
        r = r + w.totals
    line = (
        f"真实预警 {len(real)} 个：区划 {r.reached}/{r.divisions} 已叫应，"
        f"人员 {r.persons_acknowledged}/{r.persons_notified} 已应答，"
        f"未叫醒 {r.not_woken}，逾期 {r.overdue}"
    )
    if drills:
        line += f"；演练 {len(drills)} 个（不计入 not counted）"
    parts.append(Text(line, style="bold"))
    return Group(*parts)


def _urgency(dv: views.DivisionView, now: datetime) -> int:
    if dv.on_list:
        return 0
    if dv.overdue(now):
        return 1
    if dv.reached_at is None and not dv.stopped:
        return 2
    return 3


def _division_state(dv: views.DivisionView, f: Fmt) -> tuple[str, str]:
    if dv.on_list:
        return f"未叫醒 {f.t(dv.not_woken_at)}", "bold red"
    if dv.overdue(f.now):
        return "逾期未叫应", "red"
    if dv.reached_at is not None:
        return f"已叫应 {f.t(dv.reached_at)}", "green"
    if dv.resolved_at is not None:
        return f"已处置 {dv.resolved_by or ''}".strip(), "green"
    if dv.stopped:
        return "已停止", "dim"
    return "叫应中", "yellow"


def _answer(p: views.PersonView, f: Fmt) -> str:
    if not p.acknowledged:
        return CALL_ZH.get(p.state, p.state)
    how = SOURCE_ZH.get(p.ack_source or "", p.ack_source or "")
    return f"{f.t(p.acknowledged_at)} {how} {p.ack_by or ''}".strip()


def _last(p: views.PersonView, f: Fmt) -> str:
    last = f.t(p.last_attempt_at)
    if p.bundled:  # contracts §8: one message with other warnings' calls
        last += " 合并"
    if p.last_channel:
        return f"{last} {p.last_channel}"
    return f"{last} 发送失败" if p.last_delivery == "failed" else last


def detail_view(d: views.Detail, f: Fmt) -> RenderableType:
    """Every division of ``d`` (most urgent first), a line per person."""
    w = d.warning
    parts: list[RenderableType] = [_title(w, f), _levels_table(w, f, None)]
    rows: list[tuple[Sequence[Cell], str]] = []
    order = sorted(
        d.divisions, key=lambda x: (_urgency(x, f.now), views.level_key(x.level), x.code)
    )
    for dv in order:
        dstate, dstyle = _division_state(dv, f)
        esc = "→".join(rungs.zh(r) for r in dv.escalations)
        where = f"{LEVEL_ZH.get(dv.level, dv.level)} {dv.name} {dv.code}"
        if not dv.persons:
            rows.append(([where, (dstate, dstyle), "—", "无人可呼叫", "", "", "", "", esc], ""))
        late = dv.on_list or dv.overdue(f.now)
        for i, p in enumerate(dv.persons):
            first = i == 0
            cells: list[Cell] = [
                where if first else "",
                (dstate, dstyle) if first else "",
                rungs.zh(p.rung),
                p.name or p.contact_id,
                display.phone(p.phone),
                str(p.attempts),
                _last(p, f),
                _answer(p, f),
                esc if first else "",
            ]
            rows.append((cells, "green" if p.acknowledged else "red" if late else ""))
    head = ("区划", "状态", "角色", "联系人", "电话", "次数", "最后呼叫", "应答", "升级")
    if rows:
        parts += [Text(""), grid(head, rows)]
    if len(d.divisions) < d.total:
        parts.append(
            Text(
                f"显示最紧急的 {len(d.divisions)}/{d.total} 个区划；--limit 0 显示全部，"
                "--pending/--unreached/--level 筛选，--json 导出全部",
                style="dim",
            )
        )
    elif not d.divisions:
        parts.append(Text("没有符合条件的区划 nothing matches"))
    return Group(*parts)


def unreached_view(
    entries: list[views.NotWoken], f: Fmt, names: dict[str, str], limit: int = 0
) -> RenderableType:
    """The list, a block per entry: where, since when, state, then a line per number."""
    head = Text(f"未叫醒名单 not woken  {f.t(f.now)}", style="bold")
    if not entries:
        return Group(head, Text("没有待处置的未叫醒条目 nothing to resolve（--all 查看已处置）"))
    shown = entries[:limit] if limit > 0 else entries
    rows: list[tuple[Sequence[Cell], str]] = []
    for i, e in enumerate(shown, 1):
        if e.resolved:
            state = (f"已处置 {e.resolved_by or ''} {e.resolved_note or ''}".strip(), "green")
        elif e.reached_at is not None:
            state = (f"值班室已确认 {f.t(e.reached_at)}，待处置", "yellow")
        else:
            state = ("待处置", "bold red")
        key = (DRILL_MARK + e.warning_key, "magenta") if e.drill else e.warning_key
        first: list[Cell] = [
            str(i),
            key,
            f"{LEVEL_ZH.get(e.level, e.level)} {e.name} {e.code}",
            f"{f.t(e.since)}（{display.ago(f.now - e.since, drill=e.drill)}）",
            state,
        ]
        numbers = [
            [
                f"{rungs.zh(c.rung)} {names.get(c.contact_id) or c.contact_id}",
                (display.phone(c.phone), "bold"),
                ("已应答", "green") if c.acknowledged_at else "",
            ]
            for c in e.to_call
        ] or [[("（无可拨号码 nobody on file）", "red"), "", ""]]
        for n, cells in enumerate(numbers):
            rows.append(([*(first if n == 0 else [""] * 5), *cells], ""))
    table = grid(("#", "预警", "区划", "列入时间", "状态", "应拨打 call", "电话", ""), rows)
    real = sum(1 for e in entries if not e.drill)
    more = ""
    if len(shown) < len(entries):
        more = f"显示 {len(shown)}/{len(entries)} 条（--limit 0 全部，--county 按县）。"
    foot = Text(
        f"{more}真实 {real} 条，演练 {len(entries) - real} 条。处置后记录："
        "warnd ack 预警 --division 区划代码 --by 姓名 --note 说明",
        style="dim",
    )
    return Group(head, table, foot)
