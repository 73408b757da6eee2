"""The words people receive: call, update and lift texts (Chinese, as duty offices send them).

Pure functions of the warning's facts; the engine stores the text with the outbox row so that a
retry sends exactly what the first try sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

DRILL_MARK = "【演练】"

RUNG_LABEL = {"stage": "", "backup": "（B角）", "superior": "（上级叫应）", "duty": "（值班室）"}
LEVEL_LABEL = {"county": "县", "township": "乡镇", "village": "村"}


@dataclass(frozen=True, slots=True)
class WarningFacts:
    key: str
    headline: str
    severity: str | None
    reference_at: datetime | None  # T: onset (or effective/sent)
    reference_kind: str
    drill: bool


@lru_cache(maxsize=1024)  # a fan-out formats the same few instants ~100,000 times
def _when(t: datetime | None, tz: ZoneInfo) -> str:
    if t is None:
        return "时间未定"
    return t.astimezone(tz).strftime("%m月%d日%H:%M")


def _mark(drill: bool) -> str:
    return DRILL_MARK if drill else ""


def call_text(
    w: WarningFacts,
    *,
    division_name: str,
    rung: str,
    attempt: int,
    reply_code: str | None,
    link: str | None,
    tz: ZoneInfo,
    on_behalf_of: str | None = None,
) -> str:
    """An attempt: what, where, when, and how to answer (叫应)."""
    at = _when(w.reference_at, tz)
    if w.reference_kind == "onset":
        when = f"预计{at}开始"
    elif w.reference_kind == "effective":
        when = f"{at}起生效"
    else:
        when = f"{at}发布"
    who = ""
    if rung == "superior" and on_behalf_of:
        who = f"{on_behalf_of}责任人未应答，请您立即联系督促转移避险。"
    elif rung == "duty" and on_behalf_of:
        who = f"{on_behalf_of}未叫醒，请值班员立即处置。"
    answer = "请按1确认"
    if reply_code:
        answer = f"请回复1或{reply_code}确认收到"
    if link:
        answer += f"，或打开 {link} 确认"
    redial = f"（第{attempt}次）" if attempt > 1 else ""
    return (
        f"{_mark(w.drill)}【预警叫应{RUNG_LABEL.get(rung, '')}】{redial}{w.headline}。"
        f"区域：{division_name}。{when}。{who}{answer}。"
    )


def update_text(w: WarningFacts, *, tz: ZoneInfo) -> str:
    when = _when(w.reference_at, tz)
    return f"{_mark(w.drill)}【预警更新】{w.headline}。最新预计{when}开始，请按最新预警做好防范。"


def lift_text(w: WarningFacts, *, tz: ZoneInfo) -> str:
    return f"{_mark(w.drill)}【预警解除】{w.headline}已解除，请知悉。"
