"""The report as one self-contained HTML page: inline CSS and inline SVG charts, no scripts.

It is mailed around and opened on office PCs without internet access, so nothing is fetched:
no JavaScript, no CDN, no web fonts. Two charts per warning: the time-to-acknowledge
histogram (stacked by level) and the reach timeline — the share of each level's divisions
reached over time, against the 631 times (T − lead), the deadlines and the onset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from warnd.core.chain import rungs
from warnd.desk.report import (
    LEVEL_ZH,
    SOURCE_ZH,
    Report,
    WarningReport,
    channel_rates,
    minutes,
    percentile,
    rate,
    when,
)
from warnd.desk.report.text import histogram
from warnd.desk.views import display

COLOURS = {"county": "#1f5fa8", "township": "#e07b00", "village": "#2e9e44"}
_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;margin:24px;
color:#1d232b;background:#fff;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:2px solid #ccd}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#556;font-size:13px}
.drill{color:#b0126e;font-weight:bold}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border:1px solid #ccd;padding:3px 8px;text-align:right}th{background:#eef1f6}
td.l,th.l{text-align:left}tr.bad td{background:#fde8e8}tr.late td{background:#fff4d6}
.charts{display:flex;flex-wrap:wrap;gap:18px}figure{margin:0}
figcaption{font-size:13px;color:#334;text-align:center}
svg text{font-size:11px;fill:#334}.ok{color:#1b7a30}.no{color:#c0172a;font-weight:bold}
"""


def render_html(report: Report, *, limit: int = 500) -> str:
    """The whole page as text (UTF-8)."""
    tz = report.tz
    mark = '<span class="drill">【演练】</span>' if report.drill else ""
    src = "演练报告文件 drill report file" if report.source == "drill" else "值守库 store"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>复盘报告 {escape(report.origin)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{mark}复盘报告 after-action report</h1>",
        f'<p class="meta">来源 source: {src} — {escape(report.origin)}；时区 {escape(str(tz))}</p>',
    ]
    for wr in report.warnings:
        parts.append(_warning(wr, tz, limit))
    parts.append("</body></html>")
    return "\n".join(parts)


def _warning(wr: WarningReport, tz: ZoneInfo, limit: int) -> str:
    f = wr.facts
    out = [f'<section class="warning" id="w-{escape(f.key)}">']
    drill = '<span class="drill">【演练】</span>' if f.drill else ""
    out.append(f"<h2>{drill}{escape(f.headline or f.key)}</h2>")
    kind = {"estimated": "（按阶段时间推算 estimated）", "effective": "（生效时间）"}
    kind["sent"] = "（发布时间）"
    out.append(
        f'<p class="meta">预警 {escape(f.key)}；级别 {escape(f.severity or "—")}；'
        f"发生 onset {escape(when(f.onset, tz))}{kind.get(f.onset_kind or '', '')}；"
        f"更新通知 {wr.updates}；解除通知 {wr.lifts}</p>"
    )
    if wr.skipped:
        out.append(f'<p class="no">未调度 skipped: {escape(wr.skipped)}</p>')
    out.append(_levels(wr, tz))
    out.append('<div class="charts">')
    out.append(
        f"<figure>{ack_histogram(wr)}<figcaption>应答用时分布 time to acknowledge"
        "（首次呼叫至应答，分钟）</figcaption></figure>"
    )
    out.append(
        f"<figure>{reach_timeline(wr, tz)}<figcaption>叫应进度与631时限 reach timeline"
        "（相对发生时间，小时）</figcaption></figure>"
    )
    out.append("</div>")
    out.append(_channels(wr))
    out.append(_late(wr, tz, limit))
    out.append(_unanswered(wr, limit))
    out.append("</section>")
    return "\n".join(out)


def _table(head: Sequence[str], rows: Sequence[str], *, left: int = 1, cls: str = "") -> str:
    ths = "".join(
        f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(head)
    )
    body = "".join(rows)
    return f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>'


def _tds(cells: Sequence[object], left: int = 1, cls: str = "") -> str:
    tds = "".join(
        f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(cells)
    )
    return f'<tr class="{cls}">{tds}</tr>'


def _levels(wr: WarningReport, tz: ZoneInfo) -> str:
    ladder = rungs.escalations()
    rows = []
    for lv in wr.levels:
        ok = "ok" if lv.in_time == lv.divisions else "no"
        rows.append(
            _tds(
                [
                    LEVEL_ZH.get(lv.level, lv.level),
                    escape(when(lv.due_at, tz)),
                    escape(when(lv.deadline, tz)),
                    f'<span class="{ok}">{lv.in_time}/{lv.divisions}</span>',
                    lv.reached,
                    f"{rate(lv.ack_rate)} ({lv.persons_acknowledged}/{lv.persons})",
                    minutes(percentile(lv.ack_seconds, 50)),
                    minutes(percentile(lv.ack_seconds, 90)),
                    lv.attempts,
                    lv.redials,
                    "/".join(str(lv.escalations.get(r.name, 0)) for r in ladder),
                    f'<span class="{"no" if lv.not_woken else ""}">{lv.not_woken}</span>',
                ]
            )
        )
    head = [
        "层级",
        "631时间",
        "时限",
        "按时叫应/区划",
        "已叫应",
        "A角应答率",
        "用时中位(分)",
        "用时90%(分)",
        "呼叫",
        "重拨",
        "升级 " + "/".join(r.zh for r in ladder),
        "未叫醒",
    ]
    return "<h3>各级叫应 per level</h3>" + _table(head, rows, cls="levels")


def _channels(wr: WarningReport) -> str:
    if not wr.channels:
        return '<h3>渠道 channels</h3><p class="meta">无渠道记录（模拟演练不经渠道发送）</p>'
    rows = [
        _tds([escape(c), n, s, fl, o, rate(s / n if n else None)])
        for c, n, s, fl, o in channel_rates(wr.channels)
    ]
    head = ["渠道 channel", "消息", "成功", "失败", "其他", "成功率"]
    return "<h3>渠道成功率 channels</h3>" + _table(head, rows, cls="channels")


def _late(wr: WarningReport, tz: ZoneInfo, limit: int) -> str:
    late = [d for d in wr.divisions if d.in_time is False or d.reached_at is None]
    if not late:
        return '<h3>未按时叫应的区划</h3><p class="ok">全部按时叫应 all reached in time</p>'
    rows = [
        _tds(
            [
                LEVEL_ZH.get(d.level, d.level),
                f"{escape(d.name)} {escape(d.code)}",
                escape(when(d.deadline, tz)),
                escape(when(d.reached_at, tz)),
                escape(display.before_onset(d.before_onset)),
                escape(" ".join(rungs.zh(r) for r in d.escalations)),
                escape(when(d.not_woken_at, tz)),
                escape(d.resolved_by or ""),
            ],
            left=2,
            cls="bad" if d.reached_at is None else "late",
        )
        for d in late[:limit]
    ]
    head = ["层级", "区划", "时限", "叫应时间", "距发生", "升级", "未叫醒", "处置人"]
    more = f'<p class="meta">另有 {len(late) - limit} 个，见 CSV</p>' if len(late) > limit else ""
    return (
        f"<h3>未按时叫应的区划 not reached in time ({len(late)})</h3>"
        + _table(head, rows, left=2, cls="late")
        + more
    )


def _unanswered(wr: WarningReport, limit: int) -> str:
    if not wr.unanswered:
        return '<h3>未应答人员</h3><p class="ok">无 none</p>'
    rows = [
        _tds(
            [
                LEVEL_ZH.get(u.level, u.level),
                f"{escape(u.division_name)} {escape(u.code)}",
                rungs.zh(u.rung),
                escape(u.name or u.contact_id),
                f'<a href="tel:{escape(u.phone)}">{escape(display.phone(u.phone))}</a>'
                if u.phone
                else "",
                u.attempts,
                "是" if u.division_reached else '<span class="no">否</span>',
            ],
            left=5,
        )
        for u in wr.unanswered[:limit]
    ]
    head = ["层级", "区划", "环节", "姓名/联系人", "电话", "呼叫次数", "区划已叫应"]
    extra = len(wr.unanswered) - limit
    more = f'<p class="meta">另有 {extra} 人，见 CSV</p>' if extra > 0 else ""
    return (
        f"<h3>未应答人员 persons who never answered ({len(wr.unanswered)})</h3>"
        + _table(head, rows, left=5, cls="unanswered")
        + more
    )


# ---- charts -------------------------------------------------------------------------------

W, H = 560, 300
ML, MR, MT, MB = 48, 16, 28, 40


def _ticks(top: float, most: int = 5) -> tuple[float, int]:
    """(step, count) of whole-number ticks from 0 that cover ``top`` in at most ``most`` steps."""
    step = 1.0
    while True:
        for m in (1, 2, 5):
            if top <= m * step * most:
                n = max(1, int(-(-top // (m * step))))
                return m * step, n
        step *= 10


def _legend(levels: Sequence[str], x: float) -> str:
    out = []
    for i, lv in enumerate(levels):
        lx = x + i * 70
        out.append(
            f'<rect x="{lx}" y="8" width="10" height="10" fill="{COLOURS.get(lv, "#777")}"/>'
            f'<text x="{lx + 14}" y="17">{LEVEL_ZH.get(lv, lv)}</text>'
        )
    return "".join(out)


def ack_histogram(wr: WarningReport) -> str:
    """Bars per minute of time to acknowledge, stacked by level (the last bar: 15 min and over)."""
    bins = 16
    levels = [lv.level for lv in wr.levels if lv.ack_seconds]
    counts = {lv.level: histogram(lv.ack_seconds, bins=bins) for lv in wr.levels}
    totals = [sum(counts[lv][i] for lv in levels) for i in range(bins)]
    tick, n_ticks = _ticks(max(totals, default=0))
    top = tick * n_ticks
    pw, ph = W - ML - MR, H - MT - MB
    bw = pw / bins
    out = [
        f'<svg class="chart ack-histogram" xmlns="http://www.w3.org/2000/svg" width="{W}" '
        f'height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="time to acknowledge">',
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fbfcfe"/>',
    ]
    for k in range(n_ticks + 1):
        y = MT + ph - ph * k / n_ticks
        out.append(f'<line x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" stroke="#e3e6ee"/>')
        out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{tick * k:g}</text>')
    for i in range(bins):
        x, base = ML + i * bw, float(MT + ph)
        for lv in levels:
            n = counts[lv][i]
            if not n:
                continue
            h = ph * n / top
            base -= h
            out.append(
                f'<rect class="bar" data-level="{lv}" data-bin="{i}" data-count="{n}" '
                f'x="{x + 2:.1f}" y="{base:.1f}" width="{bw - 4:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS.get(lv, "#777")}"><title>{LEVEL_ZH.get(lv, lv)} {i}–{i + 1} 分钟: '
                f"{n}</title></rect>"
            )
        if totals[i]:
            out.append(
                f'<text x="{x + bw / 2:.1f}" y="{base - 3:.1f}" text-anchor="middle">'
                f"{totals[i]}</text>"
            )
        if i % 2 == 0 or i == bins - 1:
            label = f"{i}" if i < bins - 1 else f"{i}+"
            out.append(
                f'<text x="{x + bw / 2:.1f}" y="{MT + ph + 14}" text-anchor="middle">{label}</text>'
            )
    out.append(
        f'<line x1="{ML}" y1="{MT + ph}" x2="{W - MR}" y2="{MT + ph}" stroke="#556"/>'
        f'<text x="{ML + pw / 2}" y="{H - 6}" text-anchor="middle">分钟 minutes</text>'
    )
    if not levels:
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">无应答 no answers</text>')
    out.append(_legend(levels, ML + 8))
    out.append("</svg>")
    return "".join(out)


class _Frame:
    """The reach timeline's axes: hours from ``origin`` across [lo, hi], share 0..1 upwards."""

    def __init__(self, origin: datetime, lo: float, hi: float) -> None:
        self.origin, self.lo, self.hi = origin, lo, hi
        self.pw, self.ph = W - ML - MR, H - MT - MB

    def hours(self, t: datetime) -> float:
        return (t - self.origin).total_seconds() / 3600

    def x(self, h: float) -> float:
        return ML + self.pw * (h - self.lo) / (self.hi - self.lo)

    def y(self, share: float) -> float:
        return MT + self.ph * (1 - share)


def reach_timeline(wr: WarningReport, tz: ZoneInfo) -> str:
    """Share of each level's divisions reached over time; 631 times, deadlines and the onset."""
    del tz
    f = wr.facts
    origin = f.onset or wr.first_at
    out = [
        f'<svg class="chart reach-timeline" xmlns="http://www.w3.org/2000/svg" width="{W}" '
        f'height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="reach timeline">',
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fbfcfe"/>',
    ]
    if origin is None:
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">无记录 no events</text>')
        return "".join(out) + "</svg>"
    fr = _Frame(origin, 0.0, 1.0)
    marks = [fr.hours(s.due_at) for s in f.stages if s.due_at]
    marks += [fr.hours(lv.deadline) for lv in wr.levels if lv.deadline]
    times = [fr.hours(d.reached_at) for d in wr.divisions if d.reached_at]
    times += [fr.hours(d.first_attempt_at) for d in wr.divisions if d.first_attempt_at]
    fr.lo = math.floor(min([*marks, *times, 0.0]) - 0.25)
    fr.hi = math.ceil(max([*times, 0.0]) + 0.25)
    out += _grid(fr)
    out += _timetable_marks(wr, fr)
    out += _reach_lines(wr, fr)
    out.append(
        f'<line x1="{ML}" y1="{MT + fr.ph}" x2="{W - MR}" y2="{MT + fr.ph}" stroke="#556"/>'
        f'<text x="{ML + fr.pw / 2}" y="{H - 6}" text-anchor="middle">'
        f"{'相对发生时间（小时）hours to onset' if f.onset else '相对首个事件（小时）'}</text>"
    )
    out.append(_legend([lv.level for lv in wr.levels], ML + 8))
    out.append("</svg>")
    return "".join(out)


def _grid(fr: _Frame) -> list[str]:
    """Share lines every 25 %, hour labels every 1 (or 2) hours."""
    out = []
    for k in range(5):
        yy = fr.y(k / 4)
        out.append(f'<line x1="{ML}" y1="{yy:.1f}" x2="{W - MR}" y2="{yy:.1f}" stroke="#e3e6ee"/>')
        out.append(f'<text x="{ML - 6}" y="{yy + 4:.1f}" text-anchor="end">{k * 25}%</text>')
    step = 1 if fr.hi - fr.lo <= 12 else 2
    h = fr.lo
    while h <= fr.hi:
        out.append(
            f'<text x="{fr.x(h):.1f}" y="{MT + fr.ph + 14}" text-anchor="middle">{h:g}</text>'
        )
        h += step
    return out


def _timetable_marks(wr: WarningReport, fr: _Frame) -> list[str]:
    """Each stage's 631 time (dashed), each level's deadline (a tick) and the onset (red)."""
    f, ph = wr.facts, fr.ph
    out = []
    for n, s in enumerate(f.stages):
        if s.due_at is None:
            continue
        xx = fr.x(fr.hours(s.due_at))
        c = COLOURS.get(s.level, "#777")
        out.append(
            f'<line class="due" data-level="{s.level}" x1="{xx:.1f}" y1="{MT}" x2="{xx:.1f}" '
            f'y2="{MT + ph}" stroke="{c}" stroke-dasharray="4 3"/>'
            f'<text x="{xx + 3:.1f}" y="{MT + 10 + 12 * n}" fill="{c}">'
            f"{LEVEL_ZH.get(s.level, s.level)} −{s.lead.total_seconds() / 3600:g}h</text>"
        )
    for lv in wr.levels:
        if lv.deadline is None:
            continue
        xx = fr.x(fr.hours(lv.deadline))
        c = COLOURS.get(lv.level, "#777")
        out.append(
            f'<line class="deadline" data-level="{lv.level}" x1="{xx:.1f}" y1="{MT + ph}" '
            f'x2="{xx:.1f}" y2="{MT + ph - 14}" stroke="{c}" stroke-width="3"/>'
            f'<text x="{xx - 3:.1f}" y="{MT + ph - 4}" text-anchor="end" fill="{c}">'
            f"{LEVEL_ZH.get(lv.level, lv.level)}时限</text>"
        )
    if f.onset is not None:
        xx = fr.x(0.0)
        out.append(
            f'<line class="onset" x1="{xx:.1f}" y1="{MT}" x2="{xx:.1f}" y2="{MT + ph}" '
            'stroke="#c0172a" stroke-width="2"/>'
            f'<text x="{xx + 3:.1f}" y="{MT + 10 + 12 * len(f.stages)}" fill="#c0172a">'
            "发生 onset</text>"
        )
    return out


def _reach_lines(wr: WarningReport, fr: _Frame) -> list[str]:
    """Per level, a step line: the share of its divisions reached, from its first attempt."""
    out = []
    for lv in wr.levels:
        mine = [d for d in wr.divisions if d.level == lv.level]
        reached = sorted(fr.hours(d.reached_at) for d in mine if d.reached_at)
        if not lv.divisions:
            continue
        firsts = [fr.hours(d.first_attempt_at) for d in mine if d.first_attempt_at]
        start = min(firsts) if firsts else None
        if start is None and not reached:
            continue
        pts = [(fr.x(start if start is not None else reached[0]), fr.y(0))]
        for i, t in enumerate(reached):
            pts.append((fr.x(t), pts[-1][1]))
            pts.append((fr.x(t), fr.y((i + 1) / lv.divisions)))
        end = max(fr.hi, reached[-1] if reached else fr.hi)
        pts.append((fr.x(end), pts[-1][1]))
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(
            f'<polyline class="reach" data-level="{lv.level}" data-reached="{len(reached)}" '
            f'data-divisions="{lv.divisions}" points="{path}" fill="none" '
            f'stroke="{COLOURS.get(lv.level, "#777")}" stroke-width="2"/>'
        )
    return out


__all__ = ["SOURCE_ZH", "ack_histogram", "reach_timeline", "render_html"]
