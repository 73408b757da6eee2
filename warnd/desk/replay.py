"""Live drills (``warnd drill replay``): archived CAP messages through the real daemon.

Preparing is pure (``prepare``): each message of the archive, in ``sent`` order, is rewritten on
its lxml tree as an Exercise, its identifier tagged with the run (``…-drill-<tag>``) so that a
replay never updates, cancels or collides with the real warning it came from and can be run
again; references follow the rewritten identifiers; every time (sent, effective, onset, expires,
reference times) is shifted so that the first message is sent at ``start``. Times are shifted,
not squeezed: the drill runs on a ``ScaledClock`` that compresses *all* chain time — stages,
windows, redials — by ``speed``, so the 631 leads and the spacing of the archive are kept.
``only`` cuts every area down to one county, township or village.

Running (``run``) starts the real ``Daemon`` (store, channels, hooks listener; its feeds are not
polled: a real warning must never run on drill time), hands each message over at its sent time
and wakes the engine at every due time until nothing is left, then summarises this run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from lxml import etree

from warnd.config.policy import Config
from warnd.core import cap
from warnd.core.cap import Alert
from warnd.core.clock import ScaledClock
from warnd.core.division import contains, level_of, normalise
from warnd.core.errors import InputError
from warnd.core.xmlsafe import parse_xml
from warnd.desk.drill import FeedMessage, horizon, summarise
from warnd.desk.views import Timestamps, history
from warnd.edges.daemon import Daemon
from warnd.edges.feeds import FeedItem
from warnd.store import Store
from warnd.store.tx import Tx

#: statuses that become Exercise; System and Draft are never dispatched and stay as they are
DRILLABLE = ("Actual", "Exercise", "Test")
_TIMES = ("effective", "onset", "expires")
_BEFORE_NOTE = ("references", "incidents", "info")

Sleep = Callable[[float], Awaitable[None]]
Progress = Callable[[float, float], None]


@dataclass(frozen=True, slots=True)
class Prepared:
    """One rewritten message, ready to be fed at ``alert.sent`` (virtual time)."""

    raw: bytes
    alert: Alert
    origin: str  # "replay:<archive file>"
    original: str  # the archived message's key (sender,identifier,sent)
    actual: bool  # the archived message was status Actual


@dataclass(frozen=True, slots=True)
class Dropped:
    origin: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    start: datetime
    tag: str
    only: str | None
    messages: tuple[Prepared, ...]
    dropped: tuple[Dropped, ...]

    @property
    def actual(self) -> tuple[str, ...]:
        """Origins of the messages that were real warnings (status Actual) in the archive."""
        return tuple(m.origin for m in self.messages if m.actual)


def drill_identifier(identifier: str, tag: str) -> str:
    """The identifier a message gets in a replay: the original, recognisably tagged."""
    return f"{identifier}-drill-{tag}"


def cap_time(value: datetime) -> str:
    """A CAP time: whole seconds with the offset (``2025-06-14T08:00:00+08:00``)."""
    return value.replace(microsecond=0).isoformat()


def only_code(raw: str) -> str:
    """The ``--only`` code normalised; InputError unless it is a county, township or village."""
    code = normalise(raw)
    if code is None or level_of(code) not in ("county", "township", "village"):
        raise InputError(
            "应为县（6 位）、乡镇（9 位）或村（12 位）区划代码 must be a county, township or "
            "village code",
            field="--only",
            value=raw,
        )
    return code


def prepare(
    feed: Sequence[FeedMessage], start: datetime, tag: str, only: str | None = None
) -> ReplayPlan:
    """Rewrite the archive (already in ``sent`` order) for a drill starting at ``start``."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    start = start.replace(microsecond=0)
    target = only_code(only) if only is not None else None
    if not feed:
        return ReplayPlan(start, tag, target, (), ())
    shift = start - feed[0].alert.sent.replace(microsecond=0)
    kept: set[tuple[str, str]] = set()
    out: list[Prepared] = []
    dropped: list[Dropped] = []
    for m in feed:
        a = m.alert
        origin = f"replay:{m.origin}"
        if target is not None:
            follows = a.msg_type in ("Update", "Cancel") and any(
                (r.sender, r.identifier) in kept for r in a.references
            )
            if not follows and not any(_overlaps(target, g) for g in a.geocodes):
                dropped.append(Dropped(m.origin, f"区域不含 {target} (area outside --only)"))
                continue
        kept.add((a.sender, a.identifier))
        raw = rewrite(m.raw, a, shift=shift, tag=tag, only=target, source=m.origin)
        alert = cap.parse(raw, source=origin)
        out.append(Prepared(raw, alert, origin, a.key, a.status == "Actual"))
    return ReplayPlan(start, tag, target, tuple(out), tuple(dropped))


def _overlaps(target: str, code: str) -> bool:
    return contains(target, code) or contains(code, target)


def rewrite(
    raw: bytes,
    alert: Alert,
    *,
    shift: timedelta,
    tag: str,
    only: str | None = None,
    source: str | None = None,
) -> bytes:
    """One archived message as a drill message (see the module docstring); ``alert`` is its parse.

    Done on the parsed tree, so that whatever else the message says is kept as it was.
    """
    root = parse_xml(raw, source=source)
    ns = etree.QName(root).namespace or ""

    def q(name: str) -> str:
        return f"{{{ns}}}{name}" if ns else name

    def set_text(parent: etree._Element, name: str, value: str) -> None:
        el = parent.find(q(name))
        if el is not None:
            el.text = value

    set_text(root, "identifier", drill_identifier(alert.identifier, tag))
    set_text(root, "sent", cap_time(alert.sent + shift))
    if alert.status in DRILLABLE:
        set_text(root, "status", "Exercise")
    refs = root.find(q("references"))
    if refs is not None and alert.references:
        refs.text = " ".join(
            f"{r.sender},{drill_identifier(r.identifier, tag)},{_shift_text(r.sent, shift)}"
            for r in alert.references
        )
    _add_note(root, q, f"【演练】回放 drill replay of {alert.key}")
    divisions = {(g.value_name, g.value): g.division for a in alert.areas for g in a.geocodes}
    for info in root.findall(q("info")):
        for name in _TIMES:
            el = info.find(q(name))
            if el is not None and el.text and el.text.strip():
                el.text = _shift_text(el.text.strip(), shift)
        if only is not None:
            for area in info.findall(q("area")):
                _restrict(area, q, divisions, only)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _shift_text(text: str, shift: timedelta) -> str:
    """A CAP time moved by ``shift``; text that is no time is kept as it is."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return text
    return cap_time(value + shift) if value.tzinfo is not None else text


def _add_note(root: etree._Element, q: Callable[[str], str], line: str) -> None:
    note = root.find(q("note"))
    if note is not None:
        note.text = f"{(note.text or '').strip()} {line}".strip()
        return
    note = etree.Element(q("note"))
    note.text = line
    later = {q(name) for name in _BEFORE_NOTE}
    after = next((c for c in root if isinstance(c.tag, str) and c.tag in later), None)
    if after is not None:
        after.addprevious(note)
    else:
        root.append(note)


def _restrict(
    area: etree._Element,
    q: Callable[[str], str],
    divisions: dict[tuple[str, str], str | None],
    only: str,
) -> None:
    """A geocode covering ``only`` makes the area exactly ``only``; else keep those inside it.

    Whatever is left outside goes; an area left without geocodes is removed.
    """
    geocodes = area.findall(q("geocode"))
    if not geocodes:
        return

    def code_of(g: etree._Element) -> str | None:
        name = (g.findtext(q("valueName")) or "").strip()
        return divisions.get((name, (g.findtext(q("value")) or "").strip()))

    codes = [code_of(g) for g in geocodes]
    cover = next((g for g, c in zip(geocodes, codes, strict=True) if c and contains(c, only)), None)
    keep = (
        [cover]
        if cover is not None
        else [g for g, c in zip(geocodes, codes, strict=True) if c and contains(only, c)]
    )
    for g in geocodes:
        if g not in keep:
            area.remove(g)
    value = cover.find(q("value")) if cover is not None else None
    if value is not None:
        value.text = only.ljust(12, "0")
    parent = area.getparent()
    if not keep and parent is not None:
        parent.remove(area)


def live_risk(plan: ReplayPlan, config: Config) -> str | None:
    """Why the replay must not run without ``--confirm-live``, or None.

    Real warnings (status Actual) in the archive, sent through channels that reach people
    (any type but ``log``), would wake real people with a real warning's text.
    """
    actual = plan.actual
    live = [f"{c.name} ({c.type})" for c in config.channels.values() if c.type != "log"]
    if not actual or not live:
        return None
    return (
        f"档案中有 {len(actual)} 条真实预警 (status Actual, e.g. {actual[0]})，渠道 "
        f"{', '.join(live)} 会发给真人：确认演练要呼叫真人请加 --confirm-live "
        "(refused: real warnings would reach real people)"
    )


async def real_work(store: Store) -> int:
    """Rows of real (non-drill) warnings still due: a drill clock must never run them."""
    live = "w.drill = :no AND w.state = 'active'"
    queries = (
        "SELECT count(*) FROM stage s JOIN warning w ON w.id = s.warning_id"
        f" WHERE s.state = 'pending' AND {live}",
        'SELECT count(*) FROM "call" c JOIN warning w ON w.id = c.warning_id'
        f" WHERE c.state = 'active' AND {live}",
        "SELECT count(*) FROM outbox WHERE drill = :no AND state IN ('pending', 'sending')",
    )
    return sum([int((await store.fetch(q, {"no": False}))[0][0]) for q in queries])


async def _refuse_real_work(config: Config) -> None:
    store = await Store.open(config.store_url)
    try:
        busy = await real_work(store)
    finally:
        await store.close()
    if busy:
        raise InputError(
            f"库中还有 {busy} 项真实预警的待办（阶段、呼叫或消息）：演练时钟会把它们加速执行；"
            "请等真实预警结束，或在演练配置里用单独的库 (store has real warnings at work)",
            source=str(config.path),
            field="store.url",
        )


async def sleep_until_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Production sleep: real time, cut short by Ctrl-C."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run(
    config: Config,
    plan: ReplayPlan,
    clock: ScaledClock,
    *,
    sleep: Sleep | None = None,
    stop: asyncio.Event | None = None,
    port: int | None = None,
    settle_s: float = 1.0,
    progress: Progress | None = None,
    on_start: Callable[[Daemon], None] | None = None,
) -> dict[str, Any]:
    """Run the plan through the real daemon on ``clock``; return the run's report.

    ``clock`` should be created paused at ``plan.start``: it begins once the daemon is up
    (``on_start(daemon)`` is called then, e.g. to learn the listener's port).
    ``sleep(real_seconds)`` waits for real time to pass (tests advance a fake ``clock`` source
    instead). ``stop`` ends the run early: this run's pending stages, calls and messages are
    cancelled so that a daemon started later on the same store never carries on a drill.
    Refuses (InputError) when the store still has real warnings at work: the drill daemon
    would run them on drill time.
    """
    await _refuse_real_work(config)
    stop = stop or asyncio.Event()
    sleep = sleep or (lambda s: sleep_until_stopped(stop, s))
    daemon = Daemon(config, clock=clock, scheduler=False, port=port)
    outcomes: Counter[str] = Counter()
    pending = list(plan.messages)
    end = horizon([m.alert for m in pending], config.policy) or plan.start
    total = max(1.0, (end - plan.start).total_seconds())
    try:
        await daemon.start()
        assert daemon.engine is not None
        engine = daemon.engine
        if on_start is not None:
            on_start(daemon)
        clock.begin()
        idle_rounds = 0
        while not stop.is_set():
            now = clock.now()
            while pending and pending[0].alert.sent <= now:
                m = pending.pop(0)
                outcomes[str((await daemon.ingest(FeedItem(m.raw, m.origin))).outcome)] += 1
            await daemon.wake()
            # A slow gateway: the chain's timers must not wait for it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(daemon.settle()), timeout=settle_s)
            if progress is not None:
                progress(min((clock.now() - plan.start).total_seconds(), total * 0.99), total)
            due = [t for t in (pending[0].alert.sent if pending else None,) if t is not None]
            nxt = await engine.next_due()
            if nxt is not None:
                due.append(nxt)
            if not due:
                break  # every message fed, nothing left to do
            delay = clock.real_delay(min(due))
            # Overdue twice running with nothing moving (a lease held by a stuck send): wait a bit.
            idle_rounds = idle_rounds + 1 if delay <= 0 else 0
            if delay > 0 or idle_rounds > 1:
                await sleep(max(delay, 0.05))
        interrupted = stop.is_set()
        ids = await _warning_ids(daemon, plan)
        if interrupted:
            await _abort(daemon, ids, clock.now())
        else:
            await _finish(daemon, ids, clock.now())
        if progress is not None and not interrupted:
            progress(total, total)
        result = await _report(daemon, plan, ids, clock, config)
        result["replay"].update(
            {"interrupted": interrupted, "messages": dict(outcomes), "fed": sum(outcomes.values())}
        )
        return result
    finally:
        await daemon.stop()


async def _warning_ids(daemon: Daemon, plan: ReplayPlan) -> list[int]:
    assert daemon.store is not None
    identifiers = [m.alert.identifier for m in plan.messages]
    if not identifiers:
        return []
    rows = await daemon.store.fetch(
        "SELECT DISTINCT warning_id FROM message WHERE identifier IN :ids", {"ids": identifiers}
    )
    return sorted(int(r[0]) for r in rows if r[0] is not None)


async def _abort(daemon: Daemon, ids: list[int], now: datetime) -> None:
    """Stop this run's chain where it stands (Ctrl-C): nothing of it stays due."""
    assert daemon.store is not None
    if not ids:
        return

    async def job(tx: Tx) -> None:
        at = tx.bts(now)
        for sql, args in (
            (
                "UPDATE stage SET state = 'cancelled'"
                " WHERE state = 'pending' AND warning_id IN {ids}",
                (),
            ),
            (
                "UPDATE \"call\" SET state = 'cancelled', next_due_at = NULL, ended_at = ?"
                " WHERE state = 'active' AND warning_id IN {ids}",
                (at,),
            ),
            (
                "UPDATE outbox SET state = 'cancelled', claimed_by = NULL"
                " WHERE state IN ('pending', 'sending') AND warning_id IN {ids}",
                (),
            ),
            (
                "UPDATE division SET stopped = ?, start_due = NULL WHERE warning_id IN {ids}",
                (True,),
            ),
            (
                "UPDATE \"warning\" SET state = 'cancelled', note = ?, updated_at = ?"
                " WHERE state = 'active' AND id IN {ids}",
                ("演练中止 drill replay interrupted", at),
            ),
        ):
            await tx.execute_in(sql, ids, *args)

    await daemon.store.writer.run(job)


class _Warning(NamedTuple):
    id: int
    key: str
    state: str
    drill: bool


class _Stage(NamedTuple):
    warning_id: int
    level: str
    due_at: datetime | None
    fired_at: datetime | None
    state: str


#: the state of a replayed warning once its run is over (``warnd status``: 已结束)
ENDED = "ended"


async def _finish(daemon: Daemon, ids: list[int], now: datetime) -> None:
    """A run that went to its end: nothing of it is due any more, so its warnings are over.

    Without this they stay ``active`` until their (drill-time, hence far) expiry, and
    ``warnd status`` would show the drill as 进行中 long after it ended. Their records (calls,
    answers, the not-woken list) are kept as they are.
    """
    assert daemon.store is not None
    if not ids:
        return

    async def job(tx: Tx) -> None:
        await tx.execute_in(
            'UPDATE "warning" SET state = ?, note = ?, updated_at = ?'
            " WHERE state = 'active' AND id IN {ids}",
            ids,
            ENDED,
            "演练回放结束 drill replay finished",
            tx.bts(now),
        )

    await daemon.store.writer.run(job)


async def _report(
    daemon: Daemon, plan: ReplayPlan, ids: list[int], clock: ScaledClock, config: Config
) -> dict[str, Any]:
    """This run's records: the simulate report's shape, plus the stages and the run itself."""
    store = daemon.store
    assert store is not None
    tz = config.tz
    ts = Timestamps()
    w_rows = await store.fetch(
        'SELECT id, key, state, drill FROM "warning" WHERE id IN :ids ORDER BY id', {"ids": ids}
    )
    warnings = [_Warning(int(r[0]), r[1], r[2], bool(r[3])) for r in w_rows]
    stages = [
        _Stage(int(r[0]), r[1], ts(r[2]), ts(r[3]), r[4])
        for r in await store.fetch(
            "SELECT warning_id, level, due_at, fired_at, state FROM stage"
            " WHERE warning_id IN :ids ORDER BY warning_id, idx",
            {"ids": ids},
        )
    ]
    outbox = await store.fetch(
        "SELECT purpose, state, count(*) FROM outbox WHERE warning_id IN :ids"
        " GROUP BY purpose, state",
        {"ids": ids},
    )
    events = await history.events(store, tz, ids)
    keys = {w.id: w.key for w in warnings}

    def iso(t: datetime | None) -> str | None:
        return t.astimezone(tz).isoformat() if t is not None else None

    summary = summarise(events, warnings)
    sent: dict[str, dict[str, int]] = {}
    for purpose, state, n in outbox:
        sent.setdefault(str(state), {})[str(purpose)] = int(n)
    summary["outbox"] = sent
    return {
        "replay": {
            "tag": plan.tag,
            "start": iso(plan.start),
            "ended_at": iso(clock.now()),
            "speed": clock.speed,
            "real_seconds": round(clock.real_elapsed(), 3),
            "only": plan.only,
            "dropped": [{"file": d.origin, "reason": d.reason} for d in plan.dropped],
            "warnings": [w.key for w in warnings],
        },
        "stages": [
            {
                "warning": keys.get(st.warning_id),
                "level": st.level,
                "due": iso(st.due_at),
                "fired_at": iso(st.fired_at),
                "state": st.state,
                "real_at": iso(clock.wall(st.fired_at)) if st.fired_at else None,
            }
            for st in stages
        ],
        "summary": summary,
        "events": events,
    }
