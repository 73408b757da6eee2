"""The feed-alarm banner of ``warnd status``: a warning that did not arrive, a silent feed.

Data from ``warnd.desk.views.feeds.feed_alarms`` (the same function a wall page calls); shown above
the status so that a duty officer sees it before anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo

from rich.console import Group, RenderableType
from rich.text import Text

from warnd.desk.views.feeds import FeedAlarm


def banner_lines(alarms: Sequence[FeedAlarm], tz: tzinfo) -> list[str]:
    """One line per open alarm (Chinese first; times in the configured zone)."""
    lines = []
    for a in alarms:
        since = (a.since or a.raised_at).astimezone(tz).strftime("%m-%d %H:%M")
        if a.kind == "missing":
            what = f"{a.title}（{a.subject}）" if a.title else a.subject
            lines.append(
                f"预警未送达 warning not delivered: {what}，核对来源 {a.feed}，自 {since} 起"
            )
        else:
            lines.append(f"预警来源无响应 feed silent: {a.feed}，自 {since} 起")
    return lines


def with_banner(body: RenderableType, alarms: Sequence[FeedAlarm], tz: tzinfo) -> RenderableType:
    """``body`` under a red banner listing the open feed alarms (``body`` alone if none)."""
    if not alarms:
        return body
    head = Text(f"⚠ 预警来源告警 feed alarms: {len(alarms)}", style="bold white on red")
    rows = [Text("  " + line, style="bold red") for line in banner_lines(alarms, tz)]
    return Group(head, *rows, Text(""), body)
