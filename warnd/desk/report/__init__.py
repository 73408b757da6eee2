"""The after-action report (复盘报告): one model built from the chain's events.

A warning in the store and a ``drill simulate`` report file give the same history — the
events of contracts §4 — so both are turned into a ``Report`` by the same ``build``; only the
facts around the events differ in where they come from (``warnd.desk.report.load``: the store's
rows, or the drill file and the contacts directory). Renderings: ``warnd.desk.report.text`` (JSON,
CSV for Excel, the terminal) and ``warnd.desk.report.html`` (a self-contained page with charts).

Definitions (docs/operations.md): a division is *reached* at the first acknowledgement on its
behalf (any rung); it is *in time* when that is no later than its level's 631 deadline
(``warnd.core.deadline``, the rule ``warnd contacts audit`` budgets by too); *time to acknowledge*
runs from the first attempt of the call that was answered; *persons* of a level are the A
persons its stage called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from warnd.core.chain import rungs
from warnd.core.chain.rungs import STAGE
from warnd.core.deadline import deadlines
from warnd.core.division import LEVEL_ZH as LEVEL_ZH  # where it was before: still importable
from warnd.core.notice import DRILL_MARK
from warnd.desk.views import level_key

SOURCE_ZH = {
    "ivr": "语音按键",
    "sms": "短信回复",
    "link": "链接确认",
    "officer": "值班员",
    "simulated": "模拟",
}
#: progress(done, total): for a progress bar while a large report is built
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class StageFact:
    level: str
    lead: timedelta
    due_at: datetime | None = None
    fired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """What the events do not say about a warning: its onset and its timetable."""

    key: str
    headline: str | None = None
    severity: str | None = None
    drill: bool = False
    state: str | None = None
    reason: str | None = None
    onset: datetime | None = None
    onset_kind: str | None = None  # onset|effective|sent|estimated
    stages: tuple[StageFact, ...] = ()


@dataclass(frozen=True, slots=True)
class DivisionOutcome:
    code: str
    name: str
    level: str
    first_attempt_at: datetime | None
    deadline: datetime | None
    reached_at: datetime | None
    reached_by: str | None
    reached_rung: str | None
    reached_source: str | None
    attempts: int
    redials: int
    escalations: tuple[str, ...]
    not_woken_at: datetime | None
    resolved_by: str | None = None
    onset: datetime | None = None
    #: attempts that went out in one message with other warnings' (contracts §8)
    bundled: int = 0

    @property
    def in_time(self) -> bool | None:
        """Reached by the 631 deadline (None: no deadline known)."""
        if self.deadline is None:
            return None
        return self.reached_at is not None and self.reached_at <= self.deadline

    @property
    def before_onset(self) -> timedelta | None:
        if self.onset is None or self.reached_at is None:
            return None
        return self.onset - self.reached_at


@dataclass(frozen=True, slots=True)
class Unanswered:
    """A person who was called at a post and never answered."""

    code: str
    division_name: str
    level: str
    rung: str
    contact_id: str
    phone: str
    attempts: int
    division_reached: bool
    name: str | None = None

    @property
    def rank(self) -> str:
        return rungs.rank_of(self.rung)


@dataclass(frozen=True, slots=True)
class LevelSummary:
    level: str
    due_at: datetime | None  # the 631 time the level is warned (T − lead)
    deadline: datetime | None
    divisions: int
    reached: int
    in_time: int
    persons: int  # A persons the stage called
    persons_acknowledged: int
    attempts: int
    redials: int
    escalations: Mapping[str, int]
    not_woken: int
    ack_seconds: tuple[float, ...]  # every acknowledgement on behalf of the level
    bundled: int = 0  # attempts sent in one message with other warnings' (contracts §8)

    @property
    def ack_rate(self) -> float | None:
        return self.persons_acknowledged / self.persons if self.persons else None

    @property
    def reach_rate(self) -> float | None:
        return self.reached / self.divisions if self.divisions else None


@dataclass(frozen=True, slots=True)
class WarningReport:
    facts: Facts
    levels: tuple[LevelSummary, ...]
    divisions: tuple[DivisionOutcome, ...]
    unanswered: tuple[Unanswered, ...]
    channels: Mapping[str, Mapping[str, int]]
    updates: int = 0
    lifts: int = 0
    skipped: str | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def ack_seconds(self) -> tuple[float, ...]:
        return tuple(sorted(s for lv in self.levels for s in lv.ack_seconds))


@dataclass(frozen=True, slots=True)
class Report:
    source: str  # store|drill
    origin: str  # the warning key asked for, or the drill file
    tz: ZoneInfo
    warnings: tuple[WarningReport, ...] = field(default=())

    @property
    def drill(self) -> bool:
        return self.source == "drill" or any(w.facts.drill for w in self.warnings)


# ---- building -----------------------------------------------------------------------------


def as_time(value: Any) -> datetime:
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def estimate_facts(
    key: str, events: Sequence[Mapping[str, Any]], leads: Mapping[str, timedelta]
) -> Facts:
    """Facts for a drill file that carries none (an older one: ``drill simulate`` writes its
    warnings' facts): T from the stage times and the policy's leads, marked ``estimated``.

    A stage fires at T − lead unless the warning came late, when it fires on arrival (later),
    so when the levels fired at different times the smallest ``first stage attempt + lead`` is
    T. When two or more levels fired at one instant, the warning arrived late for them, which
    is what a warning without an onset does: T is that instant, its sent time (a drill delivers
    each message at its sent time), by the rule of ``warnd.core.deadline.reference_time``.
    """
    first: dict[str, datetime] = {}
    for e in events:
        if e["type"] == "notify" and e.get("rung") == STAGE and e.get("attempt") == 1:
            lv = str(e.get("level"))
            if lv in leads and lv not in first:
                first[lv] = as_time(e["at"])
    candidates = [first[lv] + leads[lv] for lv in first]
    onset = min(candidates) if candidates else None
    if len(first) > 1 and len(set(first.values())) == 1:
        onset = next(iter(first.values()))
    stages = tuple(
        StageFact(lv, lead, _due(onset, lead, first.get(lv)), first.get(lv))
        for lv, lead in sorted(leads.items(), key=lambda x: -x[1])
    )
    return Facts(key, drill=True, onset=onset, onset_kind="estimated", stages=stages)


def _due(onset: datetime | None, lead: timedelta, fired: datetime | None) -> datetime | None:
    """When the stage was due, as the engine stores it: T − lead, or on arrival when later."""
    if onset is None:
        return fired
    return max(onset - lead, fired) if fired is not None else onset - lead


def build(
    events: Iterable[Mapping[str, Any]],
    facts: Mapping[str, Facts],
    *,
    source: str,
    origin: str,
    tz: ZoneInfo,
    phones: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
    division_names: Mapping[str, str] | None = None,
    channels: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
    resolved: Mapping[str, Mapping[str, str | None]] | None = None,
    progress: Progress | None = None,
    total: int = 0,
) -> Report:
    """The report of every warning the events belong to, in order of first event."""
    per: dict[str, _Acc] = {}
    for i, e in enumerate(events):
        key = e["warning"]
        acc = per.get(key)
        if acc is None:
            acc = per[key] = _Acc(facts.get(key) or Facts(key))
        acc.add(e)
        if progress is not None and i % 20000 == 0:
            progress(i, total)
    out = tuple(
        acc.finish(
            phones or {},
            names or {},
            division_names or {},
            (channels or {}).get(key, {}),
            (resolved or {}).get(key, {}),
        )
        for key, acc in per.items()
    )
    if progress is not None:
        progress(total, total)
    return Report(source, origin, tz, out)


class _Div:
    __slots__ = (
        "attempts",
        "bundled",
        "code",
        "escalations",
        "first",
        "level",
        "not_woken",
        "reached",
        "redials",
    )

    def __init__(self, code: str, level: str) -> None:
        self.code, self.level = code, level
        self.first: datetime | None = None
        self.reached: tuple[datetime, str | None, str | None, str | None] | None = None
        self.attempts = self.redials = self.bundled = 0
        self.escalations: list[str] = []
        self.not_woken: datetime | None = None


class _Acc:
    """Folds one warning's events, in time order."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.divs: dict[str, _Div] = {}
        self.starts: dict[tuple[str, str, str], datetime] = {}  # open call → first attempt
        self.calls: dict[tuple[str, str, str], list[Any]] = {}  # → [attempts, answered]
        self.ack_seconds: dict[str, list[float]] = {}
        self.stage_people: dict[str, set[str]] = {}
        self.stage_acked: dict[str, set[str]] = {}
        self.updates = self.lifts = 0
        self.skipped: str | None = None
        self.first_at: datetime | None = None
        self.last_at: datetime | None = None
        self.times: dict[Any, datetime] = {}

    def _div(self, e: Mapping[str, Any]) -> _Div:
        code = e["division"]
        d = self.divs.get(code)
        if d is None:
            d = self.divs[code] = _Div(code, e.get("level") or "?")
        return d

    def add(self, e: Mapping[str, Any]) -> None:
        t, raw = e["type"], e["at"]
        at = self.times.get(raw)
        if at is None:
            at = self.times[raw] = as_time(raw)
        if self.first_at is None:
            self.first_at = at
        self.last_at = at
        if t == "notify":
            d = self._div(e)
            rung, cid, n = e.get("rung") or STAGE, e["contact_id"], int(e.get("attempt") or 1)
            k = (d.code, rung, cid)
            d.attempts += 1
            if e.get("bundle"):
                d.bundled += 1
            if n == 1:
                self.starts[k] = at
                if d.first is None and rung == STAGE:
                    d.first = at
                if rung == STAGE:
                    self.stage_people.setdefault(d.level, set()).add(cid)
            else:
                d.redials += 1
            self.calls.setdefault(k, [0, False])[0] += 1
        elif t == "ack":
            d = self._div(e)
            rung, cid = e.get("rung") or STAGE, e["contact_id"]
            k = (d.code, rung, cid)
            start = self.starts.get(k)
            if start is not None:
                self.ack_seconds.setdefault(d.level, []).append((at - start).total_seconds())
            self.calls.setdefault(k, [0, False])[1] = True
            if rung == STAGE:
                self.stage_acked.setdefault(d.level, set()).add(cid)
            if d.reached is None:
                d.reached = (at, cid, rung, e.get("source"))
        elif t == "escalate":
            d = self._div(e)
            if e.get("rung") and e["rung"] not in d.escalations:
                d.escalations.append(e["rung"])
        elif t == "unreached":
            d = self._div(e)
            if d.not_woken is None:
                d.not_woken = at
        elif t == "update":
            self.updates += 1
        elif t == "cancel":
            self.lifts += 1
        elif t == "skip" and e.get("level") is None:
            self.skipped = e.get("reason") or "skipped"

    def finish(
        self,
        phones: Mapping[str, str],
        names: Mapping[str, str],
        division_names: Mapping[str, str],
        channels: Mapping[str, Mapping[str, int]],
        resolved: Mapping[str, str | None],
    ) -> WarningReport:
        f = self.facts
        dl = deadlines(f.onset, [(s.level, s.lead) for s in f.stages])
        divisions = self._outcomes(dl, division_names, resolved)
        return WarningReport(
            facts=f,
            levels=self._levels(divisions, dl),
            divisions=divisions,
            unanswered=self._unanswered(divisions, phones, names),
            channels=channels,
            updates=self.updates,
            lifts=self.lifts,
            skipped=self.skipped,
            first_at=self.first_at,
            last_at=self.last_at,
        )

    def _outcomes(
        self,
        dl: Mapping[str, datetime],
        division_names: Mapping[str, str],
        resolved: Mapping[str, str | None],
    ) -> tuple[DivisionOutcome, ...]:
        """Every division the events name, by level and code."""
        onset = self.facts.onset
        order = rungs.names()
        return tuple(
            sorted(
                (
                    DivisionOutcome(
                        code=d.code,
                        name=division_names.get(d.code, d.code),
                        level=d.level,
                        first_attempt_at=d.first,
                        deadline=dl.get(d.level),
                        reached_at=d.reached[0] if d.reached else None,
                        reached_by=d.reached[1] if d.reached else None,
                        reached_rung=d.reached[2] if d.reached else None,
                        reached_source=d.reached[3] if d.reached else None,
                        attempts=d.attempts,
                        redials=d.redials,
                        escalations=tuple(r for r in order if r in d.escalations),
                        not_woken_at=d.not_woken,
                        resolved_by=resolved.get(d.code),
                        onset=onset,
                        bundled=d.bundled,
                    )
                    for d in self.divs.values()
                ),
                key=lambda x: (level_key(x.level), x.code),
            )
        )

    def _unanswered(
        self,
        divisions: Sequence[DivisionOutcome],
        phones: Mapping[str, str],
        names: Mapping[str, str],
    ) -> tuple[Unanswered, ...]:
        """Every call nobody answered, by level, division, rung and person."""
        by_code = {d.code: d for d in divisions}
        return tuple(
            sorted(
                (
                    Unanswered(
                        code=code,
                        division_name=by_code[code].name,
                        level=by_code[code].level,
                        rung=rung,
                        contact_id=cid,
                        phone=phones.get(cid, ""),
                        attempts=n,
                        division_reached=by_code[code].reached_at is not None,
                        name=names.get(cid),
                    )
                    for (code, rung, cid), (n, answered) in self.calls.items()
                    if not answered
                ),
                key=lambda u: (level_key(u.level), u.code, rungs.order(u.rung), u.contact_id),
            )
        )

    def _levels(
        self, divisions: Sequence[DivisionOutcome], dl: Mapping[str, datetime]
    ) -> tuple[LevelSummary, ...]:
        """One summary per level that has divisions or a stage."""
        due = {s.level: s.due_at for s in self.facts.stages}
        levels = []
        for lv in sorted({d.level for d in divisions} | set(due), key=level_key):
            ds = [d for d in divisions if d.level == lv]
            esc: dict[str, int] = {}
            for d in ds:
                for r in d.escalations:
                    esc[r] = esc.get(r, 0) + 1
            levels.append(
                LevelSummary(
                    level=lv,
                    due_at=due.get(lv),
                    deadline=dl.get(lv),
                    divisions=len(ds),
                    reached=sum(1 for d in ds if d.reached_at is not None),
                    in_time=sum(1 for d in ds if d.in_time),
                    persons=len(self.stage_people.get(lv, ())),
                    persons_acknowledged=len(self.stage_acked.get(lv, ())),
                    attempts=sum(d.attempts for d in ds),
                    redials=sum(d.redials for d in ds),
                    escalations=esc,
                    not_woken=sum(1 for d in ds if d.not_woken_at is not None),
                    ack_seconds=tuple(sorted(self.ack_seconds.get(lv, ()))),
                    bundled=sum(d.bundled for d in ds),
                )
            )
        return tuple(levels)


# ---- shared formatting --------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (q in 0..100)."""
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 100))
    return values[int(min(rank, len(values))) - 1]


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 60:.1f}"


def hm(delta: timedelta | None) -> str:
    """``5h57m`` / ``-12m`` for a signed duration."""
    if delta is None:
        return "—"
    total = (
        int(delta.total_seconds() // 60)
        if delta >= timedelta(0)
        else -int(-delta.total_seconds() // 60)
    )
    sign = "-" if total < 0 else ""
    total = abs(total)
    h, m = divmod(total, 60)
    return f"{sign}{h}h{m:02d}m" if h else f"{sign}{m}m"


def when(t: datetime | None, tz: ZoneInfo) -> str:
    return t.astimezone(tz).strftime("%m-%d %H:%M") if t else "—"


def iso(t: datetime | None, tz: ZoneInfo) -> str | None:
    return t.astimezone(tz).isoformat() if t else None


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def channel_rates(
    channels: Mapping[str, Mapping[str, int]],
) -> list[tuple[str, int, int, int, int]]:
    """(channel, total, sent, failed, other) per channel, most used first."""
    rows = []
    for name, states in channels.items():
        total = sum(states.values())
        sent, failed = states.get("sent", 0), states.get("failed", 0)
        rows.append((name, total, sent, failed, total - sent - failed))
    return sorted(rows, key=lambda r: -r[1])


def title(w: WarningReport) -> str:
    mark = DRILL_MARK if w.facts.drill else ""
    return f"{mark}{w.facts.headline or w.facts.key}"
