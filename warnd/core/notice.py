"""The words people receive: call, update and lift texts (Chinese, as duty offices send them).

Pure functions of the warning's facts; the engine stores the text with the outbox row so that a
retry sends exactly what the first try sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from warnd.core.chain import rungs

DRILL_MARK = "【演练】"


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
    """An attempt: what, where, when, and how to answer (叫应).

    ``on_behalf_of`` (the unreached division's name) is said when the rung names the place it
    calls for (``warnd.core.chain.rungs``: ``superior``, ``duty``).
    """
    at = _when(w.reference_at, tz)
    if w.reference_kind == "onset":
        when = f"预计{at}开始"
    elif w.reference_kind == "effective":
        when = f"{at}起生效"
    else:
        when = f"{at}发布"
    spec = rungs.find(rung)
    who = spec.behalf_text(on_behalf_of) if spec is not None and on_behalf_of else ""
    answer = "请按1确认"
    if reply_code:
        answer = f"请回复1或{reply_code}确认收到"
    if link:
        answer += f"，或打开 {link} 确认"
    redial = f"（第{attempt}次）" if attempt > 1 else ""
    return (
        f"{_mark(w.drill)}【预警叫应{spec.tag if spec is not None else ''}】{redial}{w.headline}。"
        f"区域：{division_name}。{when}。{who}{answer}。"
    )


@dataclass(frozen=True, slots=True)
class BundleItem:
    """One call of a bundled message (contracts §8): its warning, place, rung and attempt."""

    w: WarningFacts
    division_name: str
    rung: str
    attempt: int
    on_behalf_of: str | None = None


def bundle_text(
    items: list[BundleItem], *, reply_code: str | None, link: str | None, tz: ZoneInfo
) -> str:
    """One message for a person's attempts on several warnings: each warning (headline, place,
    onset), and how to answer once for all of them."""
    lines = []
    for i, it in enumerate(items, 1):
        w = it.w
        at = _when(w.reference_at, tz)
        when = {"onset": f"预计{at}开始", "effective": f"{at}起生效"}.get(
            w.reference_kind, f"{at}发布"
        )
        spec = rungs.find(it.rung)
        tag = spec.tag if spec is not None else ""
        who = ""
        if spec is not None and it.on_behalf_of:
            who = "，" + spec.behalf_text(it.on_behalf_of).rstrip("。")
        redial = f"（第{it.attempt}次）" if it.attempt > 1 else ""
        lines.append(f"{i}.{tag}{redial}{w.headline}，区域：{it.division_name}，{when}{who}")
    n = len(items)
    answer = f"请按1一次确认全部{n}条"
    if reply_code:
        answer = f"请回复1或{reply_code}一次确认全部{n}条"
    if link:
        answer += f"，或打开 {link} 确认"
    drill = any(it.w.drill for it in items)
    return f"{_mark(drill)}【预警叫应·合并{n}条】" + "；".join(lines) + f"。{answer}。"


def notices_text(texts: list[str]) -> str:
    """Update and lift notices to one person on several warnings, as one message (§8)."""
    return f"【预警通知·合并{len(texts)}条】" + "".join(f"{i}.{t}" for i, t in enumerate(texts, 1))


def update_text(w: WarningFacts, *, tz: ZoneInfo) -> str:
    when = _when(w.reference_at, tz)
    return f"{_mark(w.drill)}【预警更新】{w.headline}。最新预计{when}开始，请按最新预警做好防范。"


def lift_text(w: WarningFacts, *, tz: ZoneInfo) -> str:
    return f"{_mark(w.drill)}【预警解除】{w.headline}已解除，请知悉。"
