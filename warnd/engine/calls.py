"""Fires due stages and moves due calls along the ladder (the engine's timer work)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from warnd.chain import ladder
from warnd.engine.context import Context, carry_out, phones_for, record_event
from warnd.store import chainrows
from warnd.store.tables import Call, Division, Stage, WarningRow

log = structlog.get_logger("warnd.engine")

BATCH = 500


async def step_division(
    ctx: Context,
    session: AsyncSession,
    w: WarningRow,
    drow: Division,
    calls: list[Call],
    events: list[ladder.Event],
    now: datetime,
) -> int:
    """Apply events to one division inside the caller's transaction; persist and carry out."""
    state = chainrows.to_state(drow, calls)
    commands: list[ladder.Command] = []
    for ev in events:
        state, out = ladder.step(state, ev, now, ctx.rules, ctx.people)
        commands.extend(out)
    phones = {c.contact_id: c.phone for c in calls}
    new_ids = [c.contact_id for c in state.calls if c.contact_id not in phones]
    phones.update(phones_for(ctx, new_ids))
    rows = await chainrows.save(session, drow, calls, state, phones)
    call_ids = {k: c.id for k, c in rows.items() if c.id is not None}
    for cmd in commands:
        if isinstance(cmd, ladder.SendAttempt):
            log.info(
                "attempt_queued",
                warning=w.key,
                division=drow.code,
                contact=cmd.contact_id,
                attempt=cmd.attempt,
                rung=cmd.rung,
            )
        elif cmd.type in ("escalate", "unreached", "ack"):
            log.info(
                cmd.type,
                warning=w.key,
                division=drow.code,
                contact=cmd.contact_id,
                **dict(cmd.data),
            )
    return carry_out(ctx, session, w, drow, commands, call_ids, phones, now)


async def fire_stage(ctx: Context, session: AsyncSession, stage: Stage, now: datetime) -> int:
    """A stage's time has come: start a call to every A person of its divisions."""
    w = await session.get(WarningRow, stage.warning_id)
    assert w is not None
    if w.state != "active":
        stage.state = "cancelled"
        return 0
    if w.expires_at is not None and now >= w.expires_at:
        stage.state = "expired"
        record_event(
            session,
            w,
            now,
            "skip",
            contact_id=None,
            division=None,
            level=stage.level,
            data={"reason": "warning expired before this stage (预警已过期)"},
        )
        return 0
    divisions = ctx.directory.overlapping(list(w.area), stage.level)  # type: ignore[arg-type]
    existing = {
        d.code: d
        for d in (
            await session.execute(select(Division).where(Division.warning_id == w.id))
        ).scalars()
    }
    queued = 0
    for d in divisions:
        drow = existing.get(d.code)
        if drow is None:
            county = ctx.directory.county_of(d.code)
            drow = Division(
                warning_id=w.id,
                code=d.code,
                name=d.name,
                level=d.level,
                county=county.code if county else None,
                round=0,
            )
            session.add(drow)
            await session.flush()
            calls: list[Call] = []
        else:
            drow, calls = await chainrows.load(session, drow.id)  # type: ignore[arg-type]
        queued += await step_division(ctx, session, w, drow, calls, [ladder.Start()], now)
    stage.state = "fired"
    stage.fired_at = now
    stage.divisions = [d.code for d in divisions]
    log.info(
        "stage_fired", warning=w.key, level=stage.level, divisions=len(divisions), attempts=queued
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
                        .where(Stage.state == "pending", Stage.due_at <= now)  # type: ignore[operator]
                        .order_by(Stage.due_at, Stage.id)
                        .limit(1)
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
                (
                    await session.execute(
                        select(Call)
                        .where(Call.state == "active", Call.next_due_at <= now)  # type: ignore[operator]
                        .order_by(Call.next_due_at, Call.id)
                        .limit(BATCH)
                    )
                )
                .scalars()
                .all()
            )
            if not due:
                return handled
            keys: dict[int, list[str]] = defaultdict(list)
            for c in due:
                keys[c.division_id].append(c.key)
            for division_id, call_keys in keys.items():
                drow, calls = await chainrows.load(session, division_id)
                w = await session.get(WarningRow, drow.warning_id)
                assert w is not None
                events: list[ladder.Event] = [ladder.CallDue(k) for k in call_keys]
                await step_division(ctx, session, w, drow, calls, events, now)
            handled += len(due)
