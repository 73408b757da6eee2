"""The pre-season audit (``warnd contacts audit``): can every post be reached in time?

``contacts check`` finds broken rows; the audit asks, per division (post), what the duty office
asks before the flood season: is there an A and a B, are their numbers valid and distinct, does
the parent have an A (the superior rung), does the county have a duty row (the last rung), and
does the worst-case ladder still end before the level's 631 deadline.

Worst case (contracts §3): every person stays silent, so each rung that has somebody to call
runs all of its attempts and fails one window after the last: ``attempts × window`` per rung.
The rungs are the stage call (the division's A persons), then the policy's ladder — backup (its
B persons), superior (the A persons of the nearest enclosing division that has any), duty (the
county's duty office); a rung with nobody to call is skipped at once and costs nothing.

    worst = attempts × window × (rungs that have people)    passes when  worst < budget(level)

A level's budget is the time from its stage to its 631 deadline, the rule ``warnd report`` and
``warnd status`` judge by (``warnd.core.deadline``): its lead minus the lead of the next stage of
the policy's timetable, the last stage its whole lead (to onset). With the 631 defaults
(6h/3h/1h) the county has 3 h, a township 2 h, a village 1 h; at 5m × 3 per rung and the ladder
backup → superior → duty a village with a B has four rungs: 4 × 15 min = 60 min, which does not
end inside its 1 hour: the audit says so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from warnd.config.policy import Policy
from warnd.core.chain import rungs
from warnd.core.chain.rungs import STAGE
from warnd.core.deadline import Window, windows
from warnd.core.directory import Directory, Problem
from warnd.core.division import DIRECTORY_LEVELS, normalise
from warnd.core.division import LEVEL_ZH as LEVEL_ZH  # where it was before: still importable
from warnd.core.duration import format_duration

#: problems of ``contacts check`` that make a post's numbers fail
PHONE_KINDS = frozenset({"bad_phone", "duplicate_phone", "landline"})
FORMULA = (
    "worst = attempts × window × rungs that have people (stage, backup, superior, duty);"
    " a post passes when worst < its level's budget to the 631 deadline: the level's lead"
    " minus the next stage's lead (the last stage: its lead, to onset)"
)


@dataclass(frozen=True, slots=True)
class PostAudit:
    """One division's audit; ``None`` marks a check that does not apply."""

    code: str
    name: str
    level: str
    a: int
    b: int
    phones_ok: bool
    parent: str | None  # the immediate parent's code (townships, villages)
    parent_a: bool | None
    county_duty: bool
    rungs: tuple[str, ...]  # the rungs that have somebody to call, in ladder order
    worst: timedelta
    window: Window | None  # the level's stretch of the timetable; None: no stage for it
    problems: tuple[str, ...]

    @property
    def lead(self) -> timedelta | None:
        return None if self.window is None else self.window.lead

    @property
    def budget(self) -> timedelta | None:
        """From the level's stage to its 631 deadline."""
        return None if self.window is None else self.window.budget

    @property
    def ladder_ok(self) -> bool | None:
        return None if self.budget is None else self.worst < self.budget

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "name": self.name,
            "level": self.level,
            "ok": self.ok,
            "a": self.a,
            "b": self.b,
            "phones_ok": self.phones_ok,
            "parent": self.parent,
            "parent_a": self.parent_a,
            "county_duty": self.county_duty,
            "rungs": list(self.rungs),
            "worst": format_duration(self.worst),
            "worst_s": int(self.worst.total_seconds()),
            "lead": _text(self.lead),
            "lead_s": _secs(self.lead),
            "budget": _text(self.budget),
            "budget_s": _secs(self.budget),
            "deadline_before_onset": _text(self.window.until) if self.window else None,
            "ladder_ok": self.ladder_ok,
            "problems": list(self.problems),
        }


def _text(d: timedelta | None) -> str | None:
    return None if d is None else format_duration(d)


def _secs(d: timedelta | None) -> int | None:
    return None if d is None else int(d.total_seconds())


def budget_text(window: Window) -> str:
    """The budget of a level and where it comes from, for people (Chinese)."""
    zh = LEVEL_ZH.get(window.level, window.level)
    lead = format_duration(window.lead)
    if window.next_level is None:
        how = f"{zh}级提前量 {lead}，到发生时间"
    else:
        nxt = LEVEL_ZH.get(window.next_level, window.next_level)
        how = f"{zh}级提前量 {lead} − {nxt}级提前量 {format_duration(window.until)}"
    return f"{zh}级 631 时限 {format_duration(window.budget)}（{how}）"


def worst_case(rungs: int, policy: Policy) -> timedelta:
    """How long the ladder runs when nobody answers: ``attempts × window`` per rung."""
    return policy.ack.window * policy.ack.attempts * rungs


def row_codes(path: str | Path) -> dict[tuple[str, int], str]:
    """(file, line) → division code of every CSV row, to put a checker problem on its post.

    Files are listed and lines counted exactly as ``warnd.core.directory.load`` does.
    """
    p = Path(path)
    files = (
        sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".csv")
        if p.is_dir()
        else [p]
    )
    out: dict[tuple[str, int], str] = {}
    for f in files:
        try:
            text = f.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError):
            continue  # the checker has said why already
        rows = csv.reader(io.StringIO(text, newline=""))
        end, column = 0, -1
        try:
            for row in rows:
                line, end = end + 1, rows.line_num
                if column < 0:
                    header = [c.strip().lower() for c in row]
                    if "division_code" in header:
                        column = header.index("division_code")
                    continue
                code = normalise(row[column]) if column < len(row) else None
                if code is not None:
                    out[(str(f), line)] = code
        except csv.Error:
            continue
    return out


def audit(
    directory: Directory,
    policy: Policy,
    problems: Iterable[Problem] = (),
    codes: Mapping[tuple[str, int], str] | None = None,
) -> tuple[list[PostAudit], list[Problem]]:
    """Every division's audit, sorted by code, and the checker problems no post could take.

    ``problems``/``codes`` come from ``warnd.core.directory.load`` and ``row_codes``: a row dropped
    for a bad number still counts against its post.
    """
    phone_trouble: dict[str, int] = {}
    unplaced: list[Problem] = []
    for p in problems:
        code = (codes or {}).get((p.source, p.line or 0))
        if code is None or directory.division(code) is None:
            unplaced.append(p)  # no post to hold it: a bad code, or every row of it dropped
        elif p.kind in PHONE_KINDS:
            phone_trouble[code] = phone_trouble.get(code, 0) + 1
    timetable = windows((s.level, s.lead) for s in policy.stages)
    posts: list[PostAudit] = []
    for div in directory.divisions():
        code, level = div.code, div.level
        a = len(directory.persons(code, "A"))
        b = len(directory.persons(code, "B"))
        parent = code[: len(code) - 3] if level != "county" else None
        parent_a = bool(directory.persons(parent, "A")) if parent is not None else None
        county = code[:6]
        county_duty = bool(directory.persons(county, "duty"))
        called = tuple(r for r in (STAGE, *policy.ladder) if rungs.for_rung(directory, code, r))
        worst = worst_case(len(called), policy)
        window = timetable.get(level)
        found: list[str] = []
        if not a:
            found.append("没有 A 角")
        if not b:
            found.append("没有 B 角")
        if phone_trouble.get(code):
            found.append(f"号码无效或重复 {phone_trouble[code]} 处（见 contacts check）")
        if parent is not None and not parent_a:
            zh = LEVEL_ZH.get("township" if len(parent) == 9 else "county", "")
            known = directory.division(parent) is not None
            found.append(
                f"上级{zh} {parent} 没有 A 角" if known else f"上级{zh} {parent} 不在通讯录中"
            )
        if not county_duty:
            found.append(f"县 {county} 没有值班室 (duty)")
        if window is not None and worst >= window.budget:
            found.append(
                f"最坏叫应 {format_duration(worst)}（{len(called)} 级 × {policy.ack.attempts} 次"
                f" × {format_duration(policy.ack.window)}）不短于{budget_text(window)}"
            )
        posts.append(
            PostAudit(
                code,
                div.name,
                level,
                a,
                b,
                not phone_trouble.get(code),
                parent,
                parent_a,
                county_duty,
                called,
                worst,
                window,
                tuple(found),
            )
        )
    return posts, unplaced


@dataclass(frozen=True, slots=True)
class Fix:
    """What to change in ``[ack]`` so that every post's worst-case ladder fits its budget.

    Each is enough on its own (the other value kept): ``window`` the longest answer window, a
    whole number of minutes when one fits, ``attempts`` the most attempts (None: no number of
    attempts fits at this window). ``levels`` are the levels whose posts fail now.
    """

    window: timedelta | None
    attempts: int | None
    levels: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "window": _text(self.window),
            "window_s": _secs(self.window),
            "attempts": self.attempts,
            "levels": list(self.levels),
        }


def ladder_fix(posts: Iterable[PostAudit], policy: Policy) -> Fix | None:
    """The ``[ack]`` values that make every ladder fit (None when every ladder fits already).

    A post passes when ``attempts × window × rungs < budget``; the binding post of each level
    is the one with the most rungs.
    """
    posts = list(posts)
    failing = tuple(dict.fromkeys(p.level for p in posts if p.ladder_ok is False))
    if not failing:
        return None
    binding: dict[str, tuple[int, int]] = {}  # level → (most rungs, budget in seconds)
    for p in posts:
        if p.budget is None or not p.rungs:
            continue
        count, budget = len(p.rungs), int(p.budget.total_seconds())
        if p.level not in binding or count > binding[p.level][0]:
            binding[p.level] = (count, budget)
    attempts, window = policy.ack.attempts, int(policy.ack.window.total_seconds())
    # the largest whole n with n × k < budget is ceil(budget / k) − 1
    longest = min(-(-budget // (attempts * count)) - 1 for count, budget in binding.values())
    most = min(-(-budget // (window * count)) - 1 for count, budget in binding.values())
    if longest >= 60:
        longest -= longest % 60  # a window people write: whole minutes
    return Fix(
        timedelta(seconds=longest) if longest >= 1 else None,
        most if most >= 1 else None,
        failing,
    )


def fix_text(fix: Fix, policy: Policy) -> str:
    """The fix for people (Chinese first), each way on its own, as the config file spells it."""
    levels = "、".join(LEVEL_ZH.get(lv, lv) for lv in fix.levels)
    ways = []
    if fix.window is not None:
        ways.append(
            f'[ack] window = "{format_duration(fix.window)}"'
            f"（现为 {format_duration(policy.ack.window)}）"
        )
    if fix.attempts is not None:
        ways.append(f"[ack] attempts = {fix.attempts}（现为 {policy.ack.attempts}）")
    if not ways:
        return f"{levels}级的叫应链放不进 631 时限：请减少 [escalation] ladder 的梯级或加长提前量"
    return f"{levels}级最坏叫应超时。改法（任选其一）：" + "；或 ".join(ways)


def counts(posts: Iterable[PostAudit]) -> dict[str, dict[str, int]]:
    """Posts and failures per level (and in all)."""
    out = {level: {"posts": 0, "failed": 0} for level in (*DIRECTORY_LEVELS, "all")}
    for post in posts:
        for key in (post.level, "all"):
            out[key]["posts"] += 1
            out[key]["failed"] += not post.ok
    return out
