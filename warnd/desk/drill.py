"""Drills: the real engine on a virtual clock, with simulated responders (contracts §4).

``simulate`` is the same chain as ``warnd serve`` — same store code, same engine, same ladder —
only the clock is a ``ManualClock`` that jumps to the next due row, the channel is a recorder
whose listed persons answer after their ``ack_after``, and the store is a throw-away SQLite file
without fsync (nothing of it outlives the run; the report is the same). The answers due at one
instant go to the engine together, in order (one group commit).
"""

from __future__ import annotations

import csv
import heapq
import io
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from warnd.config.policy import Policy
from warnd.core import cap
from warnd.core.cap import Alert
from warnd.core.clock import ManualClock
from warnd.core.deadline import reference_time
from warnd.core.directory import Directory
from warnd.core.duration import parse_duration
from warnd.core.errors import InputError
from warnd.desk.views import history
from warnd.edges.feeds import FeedItem, Outcome
from warnd.engine import Context, Engine
from warnd.store import Store

NEVER = None
MAX_STEPS = 1_000_000

#: progress(virtual seconds done, estimated virtual seconds in all): for a progress bar
Progress = Callable[[float, float], None]


@dataclass(frozen=True, slots=True)
class FeedMessage:
    alert: Alert
    raw: bytes
    origin: str


def load_feed(paths: list[str | Path]) -> list[FeedMessage]:
    """Every CAP file of the given files/folders, in order of ``sent`` (stable by file name)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(
                sorted(
                    f for f in p.iterdir() if f.is_file() and f.suffix.lower() in (".xml", ".cap")
                )
            )
        elif p.is_file():
            files.append(p)
        else:
            raise InputError("预警文件或目录不存在 (no such feed file or folder)", source=str(p))
    out = []
    for f in files:
        raw = f.read_bytes()
        out.append(FeedMessage(cap.parse(raw, source=str(f)), raw, str(f)))
    out.sort(key=lambda m: m.alert.sent)
    return out


def horizon(alerts: Sequence[Alert], policy: Policy) -> datetime | None:
    """A generous guess at when a drill over ``alerts`` goes quiet (progress bars only).

    The last stage of a message fires at its reference time less the shortest lead (or on
    arrival), and a division's ladder lasts at most every rung's attempts × window after that.
    """
    if not alerts:
        return None
    rungs = 1 + len(policy.ladder)
    ladder = policy.ack.window * policy.ack.attempts * rungs
    shortest = min((s.lead for s in policy.stages), default=timedelta(0))
    return max(
        max(a.sent, reference_time(a.onset, a.effective, a.sent)[0] - shortest) + ladder
        for a in alerts
    )


def load_responders(
    path: str | Path, directory: Directory | None = None
) -> dict[str, timedelta | None]:
    """``contact_id,ack_after`` rows: a duration after the first attempt of each call, or never.

    With ``directory``, a row naming a contact that is not in it is an error: a drill must not
    quietly leave a misspelt responder silent.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"无法读取应答人员 CSV (cannot read responders CSV): {exc}", source=str(p)
        ) from None
    reader = csv.DictReader(io.StringIO(text))
    missing = {"contact_id", "ack_after"} - set(reader.fieldnames or [])
    if missing:
        raise InputError(
            f"表头应为 contact_id,ack_after（缺 {', '.join(sorted(missing))}）"
            " (header must be contact_id,ack_after)",
            source=str(p),
            line=1,
        )
    out: dict[str, timedelta | None] = {}
    for row in reader:
        line = reader.line_num
        cid = (row.get("contact_id") or "").strip()
        raw = (row.get("ack_after") or "").strip()
        if not cid:
            raise InputError(
                "contact_id 为空 (empty contact_id)", source=str(p), line=line, field="contact_id"
            )
        if directory is not None and directory.contact(cid) is None:
            raise InputError(
                "通讯录中没有此联系人 (contact not in the directory)",
                source=str(p),
                line=line,
                field="contact_id",
                value=cid,
            )
        if raw.lower() == "never":
            out[cid] = NEVER
            continue
        try:
            out[cid] = parse_duration(raw)
        except ValueError:
            raise InputError(
                "ack_after 应为时长（如 90s、7m）或 never (a duration or never)",
                source=str(p),
                line=line,
                field="ack_after",
                value=raw,
            ) from None
    return out


class Simulation:
    """Runs feed messages through the engine in virtual time and collects the report."""

    def __init__(
        self,
        engine: Engine,
        clock: ManualClock,
        feed: list[FeedMessage],
        responders: dict[str, timedelta | None],
        progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.progress = progress
        self.clock = clock
        self.feed = feed
        self.responders = responders
        self.acks: list[tuple[datetime, int, str]] = []  # (at, seq, message id)
        self._seq = 0
        self.outcomes: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()

    async def run(self) -> None:
        pending = list(self.feed)
        steps = 0
        start = self.clock.now()
        end = horizon([m.alert for m in self.feed], self.engine.ctx.policy) or start
        total = max(1.0, (end - start).total_seconds())
        while True:
            steps += 1
            if steps > MAX_STEPS:
                raise RuntimeError("drill did not settle")
            now = self.clock.now()
            progressed = True
            while progressed:
                progressed = False
                while pending and pending[0].alert.sent <= now:
                    m = pending.pop(0)
                    res = await _ingest(self.engine, m)
                    self.outcomes[res] += 1
                    progressed = True
                progressed |= await self._due_acks(now)
                report = await self.engine.tick()
                progressed |= report.progressed
                progressed |= await self._send(now)
            nxt = [
                t
                for t in (
                    pending[0].alert.sent if pending else None,
                    self.acks[0][0] if self.acks else None,
                    await self.engine.next_due(),
                )
                if t is not None
            ]
            if self.progress is not None:
                done = (self.clock.now() - start).total_seconds()
                self.progress(total if not nxt else min(done, total * 0.99), total)
            if not nxt:
                return
            target = min(nxt)
            if target > now:
                self.clock.set(target)

    async def _send(self, now: datetime) -> bool:
        claimed = await self.engine.claim(limit=100_000)
        if not claimed:
            return False
        rules = self.engine.ctx.rules
        await self.engine.record([m.sent("drill") for m in claimed])
        for msg in claimed:
            self.sent[msg.purpose] += 1
            if msg.purpose == "call" and msg.attempt == 1 and msg.contact in self.responders:
                after = self.responders[msg.contact]
                if after is not None and after < rules.window * rules.attempts:
                    self._seq += 1
                    heapq.heappush(self.acks, (now + after, self._seq, msg.id))
        return True

    async def _due_acks(self, now: datetime) -> bool:
        """Every answer due by now, in order, in one batch: a person answers only while the
        call is open (an earlier answer of the batch may have closed it)."""
        due: list[str] = []
        while self.acks and self.acks[0][0] <= now:
            due.append(heapq.heappop(self.acks)[2])
        if not due:
            return False
        results = await self.engine.ack_messages(due, "simulated", only_open=True)
        return any(r.ok for r in results)


async def _ingest(engine: Engine, m: FeedMessage) -> str:
    from warnd.engine.ingest import ingest_alert

    res = await ingest_alert(engine.ctx, m.alert, m.raw, m.origin)
    return str(res.outcome)


async def report(store: Store, tz: Any = None) -> dict[str, Any]:
    """The contract's report: events in time order (shown in ``tz``), and a summary."""
    tz = tz or ZoneInfo("Asia/Shanghai")
    events = await history.events(store, tz)
    warnings = [
        _Warning(state, bool(drill))
        for state, drill in await store.fetch('SELECT state, drill FROM "warning" ORDER BY id')
    ]
    return {"events": events, "summary": summarise(events, warnings)}


class _Warning(NamedTuple):
    state: str
    drill: bool


class WarningLike(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def drill(self) -> bool: ...


def summarise(events: list[dict[str, Any]], warnings: Sequence[WarningLike]) -> dict[str, Any]:
    by_type = Counter(e["type"] for e in events)
    notify = [e for e in events if e["type"] == "notify"]
    acks = [e for e in events if e["type"] == "ack"]
    escalations = Counter(e.get("rung") for e in events if e["type"] == "escalate")
    divisions: dict[str, set[str]] = {}
    reached: dict[str, set[str]] = {}
    for e in notify:
        divisions.setdefault(e["level"] or "?", set()).add(f"{e['warning']}/{e['division']}")
    for e in acks:
        reached.setdefault(e["level"] or "?", set()).add(f"{e['warning']}/{e['division']}")
    return {
        "warnings": len(warnings),
        "dispatched": sum(1 for w in warnings if w.state != "skipped"),
        "skipped": sum(1 for w in warnings if w.state == "skipped"),
        "cancelled": sum(1 for w in warnings if w.state == "cancelled"),
        "drill": any(w.drill for w in warnings),
        "events": dict(by_type),
        "attempts": len(notify),
        "persons_notified": len({(e["warning"], e["contact_id"]) for e in notify}),
        "persons_acknowledged": len({(e["warning"], e["contact_id"]) for e in acks}),
        "acknowledgements": len(acks),
        "escalations": {k: v for k, v in escalations.items() if k},
        "unreached": by_type.get("unreached", 0),
        "divisions": {
            level: {"called": len(codes), "reached": len(reached.get(level, set()))}
            for level, codes in sorted(divisions.items())
        },
    }


def engine_for(
    store: Store,
    directory: Directory,
    policy: Policy,
    clock: ManualClock,
    *,
    public_url: str | None = None,
    tz: Any = None,
) -> Engine:
    """The engine a simulation runs: over ``store``, on a clock only the simulation moves (the
    drill and ``warnd.testing.EngineRig`` build it so)."""
    ctx = Context(
        store=store, directory=directory, policy=policy, clock=clock, public_url=public_url
    )
    if tz is not None:
        ctx.tz = tz
    return Engine(ctx)


async def simulate(
    feed_paths: list[str | Path],
    directory: Directory,
    policy: Policy,
    responders_path: str | Path,
    *,
    tz: Any = None,
    public_url: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run a whole drill in virtual time and return the report (nothing is sent)."""
    feed = load_feed(feed_paths)
    responders = load_responders(responders_path, directory)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="warnd-drill-") as tmp:
        store = await Store.open(f"sqlite:///{tmp}/drill.db", durable=False)
        try:
            if not feed:
                return {"events": [], "summary": summarise([], []), "warnings": []}
            clock = ManualClock(feed[0].alert.sent)
            engine = engine_for(store, directory, policy, clock, public_url=public_url, tz=tz)
            ctx = engine.ctx
            sim = Simulation(engine, clock, feed, responders, progress)
            await sim.run()
            result = await report(store, ctx.tz)
            # each warning's T and timetable: `warnd report` judges the file by them, exactly
            # as it judges a stored warning (no estimate from the stage times)
            from warnd.desk.report.load import drill_facts

            result["warnings"] = await drill_facts(store, ctx.tz)
            result["summary"]["messages"] = dict(sim.outcomes)
            result["summary"]["duplicates"] = sim.outcomes.get(str(Outcome.DUPLICATE), 0)
            result["summary"]["sent"] = dict(sim.sent)
            result["summary"]["started_at"] = feed[0].alert.sent.isoformat()
            result["summary"]["ended_at"] = clock.now().isoformat()
            result["summary"]["wall_seconds"] = round(time.perf_counter() - started, 3)
            return result
        finally:
            await store.close()


__all__ = [
    "FeedItem",
    "Simulation",
    "engine_for",
    "horizon",
    "load_feed",
    "load_responders",
    "report",
    "simulate",
]
