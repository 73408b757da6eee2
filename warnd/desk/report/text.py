"""The report as text: JSON for scripts, CSV for Excel, a rich table for the terminal."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from warnd.core.chain import rungs
from warnd.desk.report import (
    LEVEL_ZH,
    DivisionOutcome,
    LevelSummary,
    Report,
    WarningReport,
    channel_rates,
    iso,
    minutes,
    percentile,
    rate,
    title,
    when,
)
from warnd.desk.views import display

# ---- JSON ---------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    """The report as stable keys (documented in docs/operations.md)."""
    tz = report.tz
    out = []
    for w in report.warnings:
        f = w.facts
        out.append(
            {
                "key": f.key,
                "headline": f.headline,
                "severity": f.severity,
                "drill": f.drill,
                "state": f.state,
                "skipped": w.skipped,
                "onset": iso(f.onset, tz),
                "onset_kind": f.onset_kind,
                "first_event": iso(w.first_at, tz),
                "last_event": iso(w.last_at, tz),
                "updates": w.updates,
                "lifts": w.lifts,
                "levels": [_level_json(lv, tz) for lv in w.levels],
                "divisions": [_division_json(d, tz) for d in w.divisions],
                "unanswered": [
                    {
                        "division": u.code,
                        "division_name": u.division_name,
                        "level": u.level,
                        "rung": u.rung,
                        "rank": u.rank,
                        "contact_id": u.contact_id,
                        "name": u.name,
                        "phone": u.phone,
                        "attempts": u.attempts,
                        "division_reached": u.division_reached,
                    }
                    for u in w.unanswered
                ],
                "channels": [
                    {"channel": c, "messages": n, "sent": s, "failed": fl, "other": o}
                    for c, n, s, fl, o in channel_rates(w.channels)
                ],
            }
        )
    return {
        "source": report.source,
        "origin": report.origin,
        "drill": report.drill,
        "warnings": out,
    }


def _level_json(lv: LevelSummary, tz: ZoneInfo) -> dict[str, Any]:
    secs = lv.ack_seconds
    out = _level_fields(lv, tz, secs)
    if lv.bundled:  # contracts §8 (absent when nothing was bundled)
        out["bundled"] = lv.bundled
    return out


def _level_fields(lv: LevelSummary, tz: ZoneInfo, secs: tuple[float, ...]) -> dict[str, Any]:
    return {
        "level": lv.level,
        "due": iso(lv.due_at, tz),
        "deadline": iso(lv.deadline, tz),
        "divisions": lv.divisions,
        "reached": lv.reached,
        "reached_in_time": lv.in_time,
        "persons": lv.persons,
        "persons_acknowledged": lv.persons_acknowledged,
        "ack_rate": None if lv.ack_rate is None else round(lv.ack_rate, 4),
        "attempts": lv.attempts,
        "redials": lv.redials,
        "escalations": dict(lv.escalations),
        "not_woken": lv.not_woken,
        "time_to_ack_s": {
            "count": len(secs),
            "p50": percentile(secs, 50),
            "p90": percentile(secs, 90),
            "max": secs[-1] if secs else None,
        },
    }


def _division_json(d: DivisionOutcome, tz: ZoneInfo) -> dict[str, Any]:
    out = _division_fields(d, tz)
    if d.bundled:  # contracts §8 (absent when nothing was bundled)
        out["bundled"] = d.bundled
    return out


def _division_fields(d: DivisionOutcome, tz: ZoneInfo) -> dict[str, Any]:
    before = d.before_onset
    return {
        "code": d.code,
        "name": d.name,
        "level": d.level,
        "first_attempt": iso(d.first_attempt_at, tz),
        "deadline": iso(d.deadline, tz),
        "reached_at": iso(d.reached_at, tz),
        "reached_by": d.reached_by,
        "reached_rung": d.reached_rung,
        "reached_source": d.reached_source,
        "in_time": d.in_time,
        "before_onset_s": None if before is None else int(before.total_seconds()),
        "attempts": d.attempts,
        "redials": d.redials,
        "escalations": list(d.escalations),
        "not_woken_at": iso(d.not_woken_at, tz),
        "resolved_by": d.resolved_by,
    }


# ---- CSV ----------------------------------------------------------------------------------

CSV_DIVISION_HEADER = (
    "预警 warning",
    "演练 drill",
    "层级 level",
    "区划代码 code",
    "区划名称 name",
    "631时限 deadline",
    "首次呼叫 first attempt",
    "叫应时间 reached at",
    "按时 in time",
    "距发生 before onset (min)",
    "叫应人 reached by",
    "叫应环节 rung",
    "方式 source",
    "呼叫次数 attempts",
    "重拨 redials",
    "升级 escalations",
    "未叫醒 not woken at",
    "未应答人员 unanswered",
)


def render_csv(report: Report) -> str:
    """Sections an Excel user reads top to bottom; each starts with a ``【…】`` title row.

    Sections: 各级叫应 levels, 渠道 channels, 未应答 unanswered, 区划 divisions. Returned
    text starts with a UTF-8 BOM (written as ``utf-8`` it opens correctly in Excel).
    """
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\r\n")
    tz = report.tz
    for wr in report.warnings:
        f = wr.facts
        w.writerow(
            ["【预警 warning】", f.key, title(wr), f.severity or "", "演练" if f.drill else "真实"]
        )
        w.writerow(["发生时间 onset", iso(f.onset, tz) or "", f.onset_kind or ""])
        if wr.skipped:
            w.writerow(["未调度 skipped", wr.skipped])
        w.writerow([])
        for section in (_csv_levels, _csv_channels, _csv_unanswered, _csv_divisions):
            section(w, wr, tz)
            w.writerow([])
    return buf.getvalue()


def _csv_levels(w: Any, wr: WarningReport, tz: ZoneInfo) -> None:
    ladder = rungs.escalations()
    w.writerow(["【各级叫应 levels】"])
    w.writerow(
        [
            "预警 warning",
            "层级 level",
            "631时间 due",
            "631时限 deadline",
            "区划 divisions",
            "已叫应 reached",
            "按时叫应 in time",
            "A角人数 persons",
            "A角应答 acknowledged",
            "应答率 ack rate",
            "中位用时(分) p50 min",
            "90%用时(分) p90 min",
            "呼叫 attempts",
            "重拨 redials",
            *(r.column for r in ladder),
            "未叫醒 not woken",
        ]
    )
    for lv in wr.levels:
        w.writerow(
            [
                wr.facts.key,
                lv.level,
                iso(lv.due_at, tz) or "",
                iso(lv.deadline, tz) or "",
                lv.divisions,
                lv.reached,
                lv.in_time,
                lv.persons,
                lv.persons_acknowledged,
                rate(lv.ack_rate),
                minutes(percentile(lv.ack_seconds, 50)),
                minutes(percentile(lv.ack_seconds, 90)),
                lv.attempts,
                lv.redials,
                *(lv.escalations.get(r.name, 0) for r in ladder),
                lv.not_woken,
            ]
        )


def _csv_channels(w: Any, wr: WarningReport, tz: ZoneInfo) -> None:
    del tz
    w.writerow(["【渠道 channels】"])
    w.writerow(
        [
            "预警 warning",
            "渠道 channel",
            "消息 messages",
            "成功 sent",
            "失败 failed",
            "其他 other",
            "成功率 success",
        ]
    )
    for c, n, s, fl, o in channel_rates(wr.channels):
        w.writerow([wr.facts.key, c, n, s, fl, o, rate(s / n if n else None)])


def _csv_unanswered(w: Any, wr: WarningReport, tz: ZoneInfo) -> None:
    del tz
    w.writerow(["【未应答 unanswered】"])
    w.writerow(
        [
            "预警 warning",
            "层级 level",
            "区划代码 code",
            "区划名称 name",
            "环节 rung",
            "角色 rank",
            "联系人 contact_id",
            "姓名 name",
            "电话 phone",
            "呼叫次数 attempts",
            "区划已叫应 division reached",
        ]
    )
    for u in wr.unanswered:
        w.writerow(
            [
                wr.facts.key,
                u.level,
                u.code,
                u.division_name,
                u.rung,
                u.rank,
                u.contact_id,
                u.name or "",
                u.phone,
                u.attempts,
                "是" if u.division_reached else "否",
            ]
        )


def _csv_divisions(w: Any, wr: WarningReport, tz: ZoneInfo) -> None:
    f = wr.facts
    w.writerow(["【区划 divisions】"])
    w.writerow(CSV_DIVISION_HEADER)
    silent: dict[str, list[str]] = {}
    for u in wr.unanswered:
        silent.setdefault(u.code, []).append(f"{u.name or u.contact_id} {u.phone}".strip())
    for d in wr.divisions:
        before = d.before_onset
        w.writerow(
            [
                f.key,
                "是" if f.drill else "否",
                d.level,
                d.code,
                d.name,
                iso(d.deadline, tz) or "",
                iso(d.first_attempt_at, tz) or "",
                iso(d.reached_at, tz) or "",
                {True: "是", False: "否", None: ""}[d.in_time],
                "" if before is None else int(before.total_seconds() // 60),
                d.reached_by or "",
                d.reached_rung or "",
                d.reached_source or "",
                d.attempts,
                d.redials,
                " ".join(d.escalations),
                iso(d.not_woken_at, tz) or "",
                "; ".join(silent.get(d.code, [])),
            ]
        )


# ---- terminal -----------------------------------------------------------------------------


def histogram(seconds: Sequence[float], *, width_s: float = 60.0, bins: int = 16) -> list[int]:
    """Counts per ``width_s`` bin; the last bin takes everything beyond."""
    counts = [0] * bins
    for s in seconds:
        counts[min(int(s // width_s), bins - 1)] += 1
    return counts


def _p50_p90(secs: Sequence[float]) -> str:
    return f"{minutes(percentile(secs, 50))} / {minutes(percentile(secs, 90))}"


def render_terminal(report: Report, console: Any, *, limit: int = 40) -> None:
    """The report for a terminal (rich): levels, time to acknowledge, channels, silent posts."""
    from rich.text import Text

    tz = report.tz
    for wr in report.warnings:
        f = wr.facts
        head = Text(f"复盘报告 after-action report  {title(wr)}", style="bold")
        if f.drill:
            head.stylize("bold magenta", 0, len(head))
        console.print(head)
        kind = {
            "estimated": "（按阶段时间推算）",
            "effective": "（生效时间）",
            "sent": "（发布时间）",
        }
        console.print(
            f"预警 {f.key}  发生 onset {when(f.onset, tz)}{kind.get(f.onset_kind or '', '')}"
            f"  更新通知 {wr.updates}  解除通知 {wr.lifts}"
        )
        if wr.skipped:
            console.print(f"[yellow]未调度 skipped: {wr.skipped}[/]")
        console.print(_terminal_levels(wr, tz))
        bundled = sum(lv.bundled for lv in wr.levels)
        if bundled:  # contracts §8
            console.print(f"合并发送 bundled: {bundled} 次呼叫与其他预警合并为一条消息发出")
        _terminal_histogram(wr, console)
        if wr.channels:
            console.print(_terminal_channels(wr))
        _terminal_late(wr, tz, console, limit)
        _terminal_unanswered(wr, console, limit)
        console.print()


def _table(title: str) -> Any:
    from rich import box
    from rich.table import Table

    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")


def _terminal_levels(wr: WarningReport, tz: ZoneInfo) -> Any:
    from rich.text import Text

    ladder = rungs.escalations()
    t = _table("各级叫应 per level")
    for h in (
        "层级",
        "631时间",
        "时限",
        "按时/区划",
        "已叫应",
        "A角应答率",
        "中位/90%分钟",
        "重拨",
        "升级" + "/".join(r.abbr for r in ladder),
        "未叫醒",
    ):
        t.add_column(h, justify="left" if h == "层级" else "right", no_wrap=True)
    for lv in wr.levels:
        late = lv.in_time < lv.divisions
        t.add_row(
            LEVEL_ZH.get(lv.level, lv.level),
            when(lv.due_at, tz),
            when(lv.deadline, tz),
            Text(f"{lv.in_time}/{lv.divisions}", style="red" if late else "green"),
            str(lv.reached),
            f"{rate(lv.ack_rate)} ({lv.persons_acknowledged}/{lv.persons})",
            _p50_p90(lv.ack_seconds),
            str(lv.redials),
            "/".join(str(lv.escalations.get(r.name, 0)) for r in ladder),
            Text(str(lv.not_woken), style="red" if lv.not_woken else ""),
        )
    return t


def _terminal_histogram(wr: WarningReport, console: Any) -> None:
    secs = wr.ack_seconds
    if not secs:
        return
    counts = histogram(secs)
    top = max(counts) or 1
    console.print("应答用时分布 time to acknowledge (每格1分钟 per minute):")
    for i, n in enumerate(counts):
        if n:
            label = f"{i:>2}-{i + 1:<2}分" if i < len(counts) - 1 else f"{i:>2}+ 分 "
            console.print(f"  {label} {'█' * max(1, round(n * 40 / top))} {n}")


def _terminal_channels(wr: WarningReport) -> Any:
    ct = _table("渠道 channels")
    for h in ("渠道", "消息", "成功", "失败", "其他", "成功率"):
        ct.add_column(h, justify="left" if h == "渠道" else "right")
    for c, n, s, fl, o in channel_rates(wr.channels):
        ct.add_row(c, str(n), str(s), str(fl), str(o), rate(s / n if n else None))
    return ct


def _terminal_late(wr: WarningReport, tz: ZoneInfo, console: Any, limit: int) -> None:
    late_divs = [d for d in wr.divisions if d.in_time is False or d.reached_at is None]
    if not late_divs:
        return
    lt = _table(f"未按时叫应的区划 divisions not reached in time ({len(late_divs)})")
    for h in ("层级", "区划", "时限", "叫应时间", "距发生", "升级", "未叫醒"):
        lt.add_column(h)
    for d in late_divs[:limit]:
        lt.add_row(
            LEVEL_ZH.get(d.level, d.level),
            f"{d.name} {d.code}",
            when(d.deadline, tz),
            when(d.reached_at, tz),
            display.before_onset(d.before_onset),
            " ".join(rungs.zh(r) for r in d.escalations),
            when(d.not_woken_at, tz),
            style="red" if d.reached_at is None else "yellow",
        )
    console.print(lt)
    if len(late_divs) > limit:
        console.print(f"… 另有 {len(late_divs) - limit} 个（--format csv 查看全部）")


def _terminal_unanswered(wr: WarningReport, console: Any, limit: int) -> None:
    if not wr.unanswered:
        return
    ut = _table(f"未应答人员 persons who never answered ({len(wr.unanswered)})")
    for h in ("层级", "区划", "环节", "姓名/联系人", "电话", "呼叫次数", "区划已叫应"):
        ut.add_column(h)
    for u in wr.unanswered[:limit]:
        ut.add_row(
            LEVEL_ZH.get(u.level, u.level),
            f"{u.division_name} {u.code}",
            rungs.zh(u.rung),
            u.name or u.contact_id,
            display.phone(u.phone) if u.phone else "",
            str(u.attempts),
            "是" if u.division_reached else "[red]否[/]",
        )
    console.print(ut)
    if len(wr.unanswered) > limit:
        console.print(f"… 另有 {len(wr.unanswered) - limit} 人（--format csv 查看全部）")
