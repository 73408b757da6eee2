"""Fires due stages and moves due calls along the ladder (the engine's timer work).

Work is done in batches: a batch of divisions is loaded with one query, each is stepped
through the pure ladder, and everything it produced is written back with bulk statements in
the same transaction, so a crash leaves either all of a batch or none of it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from warnd.chain import ladder
from warnd.engine.context import (
    Context,
    carry_out,
    event_row,
    facts,
    gc_paused,
    phones_for,
)
from warnd.store import chainrows
from warnd.store.tables import Call, Division, Stage, WarningRow

log = structlog.get_logger("warnd.engine")

# Due calls per transaction (and divisions per bulk step when a stage fires). Each commit is an
# fsync (synchronous=FULL) and usually a WAL checkpoint, so fewer, larger batches are cheaper;
# but a batch holds the write lock (≈1.5 s at 10,000 on a small machine), and acknowledgements
# arriving meanwhile wait for it.
BATCH = 10_000
_LOGGED = frozenset(("escalate", "unreached", "ack"))
_C = Call.__table__  # type: ignore[attr-defined]
_D = Division.__table__  # type: ignore[attr-defined]


@dataclass
class Job:
    """Events to apply to one division, in order."""

    division_id: int
    events: list[ladder.Event] = field(default_factory=list)


async def run_jobs(ctx: Context, session: AsyncSession, jobs: list[Job], now: datetime) -> int:
    """Step every job's division through the ladder and persist the outcome. Returns attempts."""
    with gc_paused():
        return await _run_jobs(ctx, session, jobs, now)


async def _run_jobs(ctx: Context, session: AsyncSession, jobs: list[Job], now: datetime) -> int:
    merged: dict[int, list[ladder.Event]] = defaultdict(list)
    for job in jobs:
        merged[job.division_id].extend(job.events)
    if not merged:
        return 0
    if not ctx.store.is_sqlite:
        # Lock the divisions (in id order: no deadlock) before reading them, so that an
        # acknowledgement and another instance's timer work never overwrite each other.
        order = sorted(merged)
        for i in range(0, len(order), 1000):
            await session.execute(
                select(_D.c.id)
                .where(_D.c.id.in_(order[i : i + 1000]))
                .order_by(_D.c.id)
                .with_for_update()
            )
    loaded = await chainrows.load_many(session, merged)
    warnings: dict[int, WarningRow] = {}
    rules, people = ctx.rules, ctx.people
    step = ladder.step
    changes = []
    produced: list[tuple[chainrows.DivisionRow, list[ladder.Command], dict[str, str]]] = []
    for division_id, events in merged.items():
        row, calls = loaded[division_id]
        if row.warning_id not in warnings:
            w = await session.get(WarningRow, row.warning_id)
            assert w is not None
            warnings[row.warning_id] = w
        state = chainrows.to_state(row, calls)
        commands: list[ladder.Command] = []
        for ev in events:
            state, out = step(state, ev, now, rules, people)
            commands.extend(out)
        phones = {c.values[1]: c.phone for c in calls}
        missing = [c.contact_id for c in state.calls if c.contact_id not in phones]
        if missing:
            phones.update(phones_for(ctx, missing))
        changes.append((row, calls, state, phones))
        produced.append((row, commands, phones))
    saved = await chainrows.save_many(session, changes)
    ids: dict[int, dict[str, int]] = defaultdict(dict)
    for (did, key), cid in saved.items():
        ids[did][key] = cid
    outbox: list[tuple[Any, ...]] = []
    events_out: list[tuple[Any, ...]] = []
    queued = 0
    said = log.bind()  # one bound logger for the batch, not one per line
    wf = {wid: facts(w) for wid, w in warnings.items()}
    for row, commands, phones in produced:
        w = warnings[row.warning_id]
        queued += carry_out(
            ctx, w, row, commands, ids[row.id], phones, now, outbox, events_out, wf[row.warning_id]
        )
        for cmd in commands:
            if isinstance(cmd, ladder.Record) and cmd.type in _LOGGED:
                said.info(
                    cmd.type,
                    warning=w.key,
                    division=row.code,
                    contact=cmd.contact_id,
                    **{str(k): v for k, v in cmd.data},
                )
    await chainrows.insert_outbox(session, outbox)
    await chainrows.insert_events(session, events_out)
    return queued


async def fire_stage(ctx: Context, session: AsyncSession, stage: Stage, now: datetime) -> int:
    """A stage's time has come: start a call to every A person of its divisions."""
    w = await session.get(WarningRow, stage.warning_id)
    assert w is not None
    if w.state != "active":
        stage.state = "cancelled"
        return 0
    if w.expires_at is not None and now >= w.expires_at:
        stage.state = "expired"
        await chainrows.insert_events(
            session,
            [
                event_row(
                    w,
                    now,
                    "skip",
                    contact_id=None,
                    division=None,
                    level=stage.level,
                    data={"reason": "warning expired before this stage (预警已过期)"},
                )
            ],
        )
        return 0
    divisions = ctx.directory.overlapping(list(w.area), stage.level)  # type: ignore[arg-type]
    existing = dict(
        (await session.execute(select(_D.c.code, _D.c.id).where(_D.c.warning_id == w.id))).all()
    )
    fresh = [d for d in divisions if d.code not in existing]
    new_ids = await chainrows.insert_divisions(
        session,
        [
            {
                "warning_id": w.id,
                "code": d.code,
                "name": d.name,
                "level": d.level,
                "county": d.code[:6],
                "round": 0,
                "rung": ladder.STAGE,
                "rung_started_at": None,
                "reached_at": None,
                "reached_by": None,
                "reached_source": None,
                "unreached_at": None,
                "resolved_at": None,
                "resolved_by": None,
                "resolved_note": None,
                "stopped": False,
            }
            for d in fresh
        ],
    )
    existing.update(new_ids)
    queued = 0
    ids = [existing[d.code] for d in divisions]
    for i in range(0, len(ids), BATCH):
        jobs = [Job(did, [ladder.Start()]) for did in ids[i : i + BATCH]]
        queued += await run_jobs(ctx, session, jobs, now)
    stage.state = "fired"
    stage.fired_at = now
    stage.divisions = [d.code for d in divisions]
    log.info(  # division_level: "level" is the log line's own (info, warning...)
        "stage_fired",
        warning=w.key,
        division_level=stage.level,
        divisions=len(divisions),
        attempts=queued,
    )
    return queued


async def fire_due_stages(ctx: Context, now: datetime) -> int:
    fired = 0
    while True:
        async with ctx.store.write() as session:
            stage = (
                (
                    await session.execute(
                        select(Stage)
                        .where(Stage.state == "pending", Stage.due_at <= now)  # type: ignore[arg-type, operator]
                        .order_by(Stage.due_at, Stage.id)  # type: ignore[arg-type]
                        .limit(1)
                        # instances sharing PostgreSQL: a stage is fired by exactly one
                        .with_for_update(skip_locked=not ctx.store.is_sqlite)
                    )
                )
                .scalars()
                .first()
            )
            if stage is None:
                return fired
            await fire_stage(ctx, session, stage, now)
            fired += 1


async def advance_due_calls(ctx: Context, now: datetime) -> int:
    """Redial, fail and escalate every call whose timer has come, a batch per transaction."""
    handled = 0
    while True:
        async with ctx.store.write() as session:
            due = (
                await session.execute(
                    select(_C.c.id, _C.c.division_id, _C.c.key)
                    .where(_C.c.state == "active", _C.c.next_due_at <= now)
                    .order_by(_C.c.next_due_at, _C.c.id)
                    .limit(BATCH)
                )
            ).all()
            if not due:
                return handled
            if not ctx.store.is_sqlite:
                # Instances sharing PostgreSQL: take the divisions nobody else is stepping
                # right now; the rest are another instance's (SQLite serialises writers).
                mine = set(
                    (
                        await session.execute(
                            select(_D.c.id)
                            .where(_D.c.id.in_(sorted({d.division_id for d in due})))
                            .order_by(_D.c.id)
                            .with_for_update(skip_locked=True)
                        )
                    ).scalars()
                )
                due = [d for d in due if d.division_id in mine]
                if not due:
                    return handled
            with gc_paused():  # the batch's jobs are as short-lived as what run_jobs makes
                jobs = [Job(division_id, [ladder.CallDue(key)]) for _id, division_id, key in due]
                await run_jobs(ctx, session, jobs, now)
            handled += len(due)
