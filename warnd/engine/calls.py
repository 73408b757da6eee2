"""Fires due stages, starts their divisions and moves due calls along the ladder (timer work).

Work is done in batches, each a job of the single writer (one transaction): a batch of
divisions is loaded with one query, each is stepped through the pure ladder, and everything it
produced is written back in bulk, so a crash leaves either all of a batch or none of it. A
stage fires in two steps: its divisions are written with ``start_due`` (one transaction), then
started in batches — by whichever instances share the store — like any other due row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import structlog

from warnd.core.chain import ladder
from warnd.engine import bundles
from warnd.engine.context import Context
from warnd.engine.gcpause import gc_paused
from warnd.engine.records import Stepped, carry_out, event_row
from warnd.store import chain
from warnd.store.records import StageRec, to_state
from warnd.store.tx import Tx

log = structlog.get_logger("warnd.engine")

T = TypeVar("T")

# Divisions started, or due calls advanced, per transaction. Larger transactions write each
# page of the hot tables fewer times (10,000: a fifth less than 2,000), but a batch holds the
# writer and answers arriving meanwhile wait for it: 5,000 keeps that wait near half a second
# on a small machine (docs/performance.md).
BATCH = 5_000
#: divisions started per transaction: a village starts ~4 calls, so about a BATCH of rows; on
#: PostgreSQL instances share a stage batch by batch (a province's village stage: 20 batches)
START_BATCH = 1_250


@dataclass
class Job:
    """Events to apply to one division, in order."""

    division_id: int
    events: list[ladder.Event] = field(default_factory=list)


async def run_jobs(
    ctx: Context, tx: Tx, jobs: list[Job], now: datetime, started: frozenset[int] = frozenset()
) -> int:
    """Step every job's division through the ladder and persist the outcome. Returns attempts.
    ``started``: divisions whose stage's start these jobs are (they leave that queue)."""
    with gc_paused():
        merged: dict[int, list[ladder.Event]] = defaultdict(list)
        for job in jobs:
            merged[job.division_id].extend(job.events)
        if not merged:
            return 0
        loaded = await chain.load_divisions(tx, merged)
        warnings = await chain.warnings_by_id(tx, {row.warning_id for row, _c in loaded.values()})
        rules, people, step = ctx.rules, ctx.people, ladder.step
        batch: list[Stepped] = []
        for division_id, events in merged.items():
            row, calls = loaded[division_id]
            state = to_state(row, calls)
            commands: list[ladder.Command] = []
            for ev in events:
                state, out = step(state, ev, now, rules, people)
                commands.extend(out)
            batch.append(Stepped(row, calls, state, commands))
        if ctx.policy.ack.bundle:  # contracts §8
            more = await bundles.gather(ctx, tx, batch, warnings, now)
            if more:
                started = started | more
        return await carry_out(ctx, tx, batch, warnings, now, started)


async def _each(ctx: Context, job: Callable[[Tx], Awaitable[int | None]]) -> int:
    """Run ``job`` as writer jobs until it reports nothing left (None); total of its counts."""
    done = 0
    while True:
        n = await ctx.store.writer.run(job)
        if n is None:
            return done
        done += n


async def fire_stage(ctx: Context, tx: Tx, stage: StageRec, now: datetime) -> int:
    """A stage's time has come: its divisions are due to start (``start_due``). Returns them."""
    w = await chain.warning(tx, stage.warning_id)
    if w.state != "active":
        chain.end_stage(tx, stage.id, "cancelled", None, [])
        return 0
    if w.expires_at is not None and now >= w.expires_at:
        chain.end_stage(tx, stage.id, "expired", None, [])
        chain.insert_events(
            tx,
            [
                event_row(
                    tx,
                    w,
                    now,
                    "skip",
                    level=stage.level,
                    data={"reason": "warning expired before this stage (预警已过期)"},
                )
            ],
        )
        return 0
    divisions = ctx.directory.overlapping(list(w.area), stage.level)  # type: ignore[arg-type]
    existing = await chain.division_codes(tx, w.id)
    fresh = [d for d in divisions if d.code not in existing]
    ids = await chain.insert_divisions(
        tx,
        [
            (
                w.id, d.code, d.name, d.level, d.code[:6], 0, ladder.STAGE, None, None, None,
                None, None, False, now,
            )
            for d in fresh
        ],
    )  # fmt: skip
    chain.mark_started(tx, [existing[d.code] for d in divisions if d.code in existing], now)
    chain.end_stage(tx, stage.id, "fired", now, [d.code for d in divisions])
    tx.announce()  # instances sharing the store start these divisions with us
    log.info(  # division_level: "level" is the log line's own (info, warning...)
        "stage_fired",
        warning=w.key,
        division_level=stage.level,
        divisions=len(divisions),
        new=len(ids),
    )
    return len(divisions)


async def fire_due_stages(ctx: Context, now: datetime) -> int:
    """Fire every stage due by ``now`` (each in its own transaction). Returns the stages."""

    async def one(tx: Tx) -> int | None:
        stage = await chain.due_stage(tx, now)
        if stage is None:
            return None
        await fire_stage(ctx, tx, stage, now)
        return 1

    return await _each(ctx, one)


async def start_due_divisions(ctx: Context, now: datetime) -> int:
    """Start the calls of every division whose stage has fired, a batch per transaction."""

    async def one(tx: Tx) -> int | None:
        ids = await chain.due_starts(tx, now, START_BATCH)
        if not ids:
            return None
        await run_jobs(ctx, tx, [Job(i, [ladder.Start()]) for i in ids], now, frozenset(ids))
        return len(ids)

    return await _each(ctx, one)


async def advance_due_calls(ctx: Context, now: datetime) -> int:
    """Redial, fail and escalate every call whose timer has come, a batch per transaction."""

    async def one(tx: Tx) -> int | None:
        due = await chain.due_calls(tx, now, BATCH, by_person=bool(ctx.policy.ack.bundle))
        if not due:
            return None
        with gc_paused():  # the batch's jobs are as short-lived as what run_jobs makes
            jobs = [Job(division_id, [ladder.CallDue(key)]) for _id, division_id, key in due]
            await run_jobs(ctx, tx, jobs, now)
        return len(due)

    return await _each(ctx, one)
