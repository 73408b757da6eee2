"""Telling the duty office that a warning did not arrive, or that a feed went silent.

The shell around ``warnd.edges.feeds.watch`` (pure): after every poll and on a timer it asks the
watch which alarms should be open, asks the store which warnings the check lists name were
delivered, and for every alarm that is new:

1. records it once in the store (an ``event`` row with no warning, type ``feed_alarm``;
   ``warnd.desk.views.feeds`` reads them back for the ``warnd status`` banner and the wall);
2. counts it (``warnd_feed_alarms_total{kind}``) and logs ``feed.alarm``;
3. sends it to the configured duty channel (``[feed_alarms]``) under the id
   ``feed-alarm-<row id>``, in a task of its own (a slow channel never holds up the feed
   polls), and marks the row sent. A row not marked sent (the process died, the channel
   failed) is sent again, under the same id, with growing pauses (30 s, 1 m, 2 m … 30 m) for
   up to ``GIVE_UP`` after it was raised: sent once, also across a restart.

An alarm ends only on proof (the warning arrived, the list no longer names it, the feed
answered): then a ``feed_alarm_cleared`` row, a log line and a short notice. This module is
kept out of the engine's hot path: it runs beside the feed polls, in its own transactions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any

import structlog
from sqlalchemy import select
from sqlmodel import col

from warnd.config.feedconfig import FeedAlarmConfig
from warnd.core.cap.dedup import DEFAULT_WINDOW, office_and_event
from warnd.core.clock import Clock, wall_now
from warnd.desk.views.feeds import CLEARED, RAISED, FeedAlarm, feed_alarms
from warnd.desk.views.reader import source
from warnd.edges import metrics
from warnd.edges.feeds import Feed, PollReport
from warnd.edges.feeds.crosscheck import CheckFeed, CheckItem, Delivered, delivered
from warnd.edges.feeds.watch import Alarm, FeedHealth, Watch
from warnd.store import Store
from warnd.store.records import EVENT_INSERT
from warnd.store.tables import Event, Message, WarningRow
from warnd.store.tx import Tx

log = structlog.get_logger("warnd.alarms")

#: a duty message: (message id, text, subject) -> delivered?
Send = Callable[[str, str, str], Awaitable[bool]]
FEEDS_LOCK = "warnd-feeds"
#: how long an unsent alarm row is retried (a channel down for a while must not lose it)
GIVE_UP = timedelta(days=1)
RETRY_FIRST, RETRY_MAX = timedelta(seconds=30), timedelta(minutes=30)
#: how far back delivered messages are looked for (a check list names current warnings)
LOOKBACK = timedelta(days=7)


def _t(value: datetime | None, tz: tzinfo) -> str:
    return value.astimezone(tz).strftime("%m-%d %H:%M") if value is not None else "-"


def alarm_text(alarm: Alarm, tz: tzinfo, *, grace: timedelta, stale_after: timedelta | None) -> str:
    """The message the duty office gets (Chinese first; times in the configured zone)."""
    if alarm.kind == "missing":
        what = alarm.title or alarm.subject
        minutes = int(grace.total_seconds() // 60)
        return (
            f"【值班告警】预警未送达：{what}（{alarm.subject}，发布 {_t(alarm.issued, tz)}）"
            f"已由核对来源「{alarm.feed}」列出，{minutes} 分钟内没有任何调度来源送达，"
            "叫应未启动。请立即人工核实并处置。"
            " Warning listed by the cross-check but not delivered by any source."
        )
    after = int(stale_after.total_seconds() // 60) if stale_after else 0
    return (
        f"【值班告警】预警来源「{alarm.feed}」已超过 {after} 分钟没有响应"
        f"（最后响应 {_t(alarm.since, tz)}），可能漏收预警，请检查来源和网络。"
        " Feed has not answered: warnings may be missed."
    )


def cleared_text(alarm: FeedAlarm, reason: str) -> str:
    if alarm.kind == "missing":
        return f"【值班告警解除】预警 {alarm.title or alarm.subject}：{reason}。"
    return f"【值班告警解除】预警来源「{alarm.feed}」已恢复响应。 Feed answers again."


class FeedAlarms:
    """The feed watch of one daemon (the instance that holds the feed lock)."""

    def __init__(
        self,
        store: Store,
        watch: Watch,
        clock: Clock,
        *,
        send: Send | None,
        tz: tzinfo,
        window: timedelta = DEFAULT_WINDOW,
        spawn: Callable[[Coroutine[Any, Any, None]], Any] | None = None,
    ) -> None:
        self.store = store
        self.watch = watch
        self.clock = clock
        self._send = send
        self.tz = tz
        self.window = window
        self._lock = asyncio.Lock()
        self._spawn = spawn or asyncio.ensure_future
        self._sender: Any = None
        self._again = False
        self._held = False

    def now(self) -> datetime:
        """Feed silence is a fact of the outside world: a drill's scaled clock answers wall
        time here (``warnd.core.clock.wall_now``); every other clock, tests' included, its own."""
        return wall_now(self.clock)

    async def holds_feeds(self) -> bool:
        """Whether this instance polls and watches the feeds (the store's feed lock). A new
        holder's watch starts afresh: the silence before it took over is not the feeds'."""
        held = await self.store.hold_lock(FEEDS_LOCK)
        if held and not self._held:
            self.watch.started = self.now()
        self._held = held
        return held

    def polled(self, feed: Feed, report: PollReport) -> None:
        """Tell the watch what a poll found (a check list: the entries it names)."""
        now = self.now()
        self.watch.polled(feed.name, report, now)
        if isinstance(feed, CheckFeed) and report.answered and feed.items is not None:
            self.watch.checked(feed.name, feed.items, now)

    def health(self) -> list[FeedHealth]:
        """Every feed's health now (plain values: ``/healthz``, the wall page)."""
        return self.watch.health(self.now())

    async def delivered_refs(self, items: Sequence[CheckItem], now: datetime) -> set[str]:
        """Of ``items``, the refs some dispatching source delivered (any message in the store)."""
        if not items:
            return set()
        recent = select(col(WarningRow.id)).where(col(WarningRow.updated_at) >= now - LOOKBACK)
        query = (
            select(
                col(Message.identifier),
                col(Message.sent_utc),
                col(Message.severity),
                col(WarningRow.headline),
                col(WarningRow.event),
            )
            .join(WarningRow, col(WarningRow.id) == col(Message.warning_id))
            .where(col(Message.warning_id).in_(recent))
        )
        async with self.store.read() as s:
            rows = (await s.execute(query)).all()
        messages = []
        for ident, sent, severity, headline, event in rows:
            office, name = office_and_event(headline, event)
            if sent is not None:
                messages.append(Delivered(ident, sent, severity, office, name or None))
        return {i.ref for i in items if delivered(i, messages, self.window)}

    async def tick(self) -> tuple[list[str], list[str]]:
        """Raise the alarms that are due, clear those that are over, resend unsent ones.

        Returns the keys raised and cleared (for tests and logs).
        """
        if not await self.holds_feeds():
            return [], []  # the instance that polls the feeds watches them
        async with self._lock:
            now = self.now()
            reader = source(self.store)
            opened = {a.key: a for a in await feed_alarms(reader)}
            listed = {i.ref: i for i in self.watch.listed_items()}
            due = {i.ref for i in self.watch.due(now)}
            ask = [i for r, i in listed.items() if r in due or f"missing:{r}" in opened]
            done = await self.delivered_refs(ask, now)
            firing = self.watch.alarms(now, done)
            raised = [await self._raise(a, now) for k, a in firing.items() if k not in opened]
            over = self.watch.over(now, opened, done)
            cleared = []
            for key in sorted(over):
                reason = (
                    "已收到（已由调度来源送达）"
                    if key.partition(":")[2] in done
                    else "已不在核对列表中"
                )
                cleared.append(await self._clear(opened[key], reason, now))
            for health in self.watch.health(now):
                if health.role == "dispatch":
                    metrics.FEED_STALE.labels(health.name).set(1 if health.stale else 0)
            self.send_soon()
            return raised, cleared

    async def _raise(self, alarm: Alarm, now: datetime) -> str:
        feed = self.watch.feeds.get(alarm.feed)
        grace = feed.grace if feed is not None else timedelta(minutes=10)
        stale_after = feed.stale_after if feed is not None else None
        text = alarm_text(alarm, self.tz, grace=grace, stale_after=stale_after)
        data: dict[str, Any] = {
            "kind": alarm.kind,
            "feed": alarm.feed,
            "subject": alarm.subject,
            "title": alarm.title,
            "since": alarm.since.isoformat(),
            "issued": alarm.issued.isoformat() if alarm.issued else None,
            "text": text,
            "sent_at": None,
            "tries": 0,
        }
        await self._record(RAISED, alarm.key, data, now)
        metrics.FEED_ALARMS.labels(alarm.kind).inc()
        log.warning(
            "feed.alarm",
            key=alarm.key,
            kind=alarm.kind,
            feed=alarm.feed,
            subject=alarm.subject,
            since=alarm.since.isoformat(),
        )
        return alarm.key

    async def _clear(self, alarm: FeedAlarm, reason: str, now: datetime) -> str:
        data: dict[str, Any] = {
            "kind": alarm.kind,
            "feed": alarm.feed,
            "subject": alarm.subject,
            "reason": reason,
            "text": cleared_text(alarm, reason),
            "sent_at": None,
            "tries": 0,
        }
        await self._record(CLEARED, alarm.key, data, now)
        log.info("feed.alarm_cleared", key=alarm.key, kind=alarm.kind, reason=reason)
        return alarm.key

    async def _record(self, type_: str, key: str, data: dict[str, Any], now: datetime) -> None:
        """An alarm's row: an ``event`` without a warning, its key in ``data`` (the chain's
        history reads only events of warnings)."""

        async def job(tx: Tx) -> None:
            row = (None, now, type_, None, None, None, {**data, "key": key}, tx.seq())
            tx.insert("event", EVENT_INSERT, [row])

        await self.store.writer.run(job)

    def send_soon(self) -> None:
        """Start the sender task unless it is running (then it goes round once more)."""
        if self._send is None:
            return
        if self._sender is not None and not self._sender.done():
            self._again = True
            return
        self._sender = self._spawn(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while True:
                self._again = False
                await self._resend()
                if not self._again:
                    break
        except Exception:  # the store is busy or down: the next tick starts it again
            log.exception("feed.alarm_sender_failed")

    async def _resend(self) -> None:
        """Send every alarm row not yet sent (new ones, and those a crash or failure left)."""
        assert self._send is not None
        now = self.now()
        query = (
            select(Event)
            .where(col(Event.warning_id).is_(None), col(Event.type).in_((RAISED, CLEARED)))
            .order_by(col(Event.id))
        )
        async with self.store.read() as s:
            rows = [e for e in (await s.execute(query)).scalars() if _due(e, now)]
        for row in rows:
            key = str(row.data.get("key", ""))
            ok = await self._send(f"feed-alarm-{row.id}", str(row.data.get("text", "")), key)
            tries = int(row.data.get("tries", 0)) + 1
            pause = min(RETRY_MAX, RETRY_FIRST * 2 ** (tries - 1))
            data: Mapping[str, Any] = {
                **row.data,
                "tries": tries,
                "sent_at": self.now().isoformat() if ok else None,
                "next_try": None if ok else (self.now() + pause).isoformat(),
            }
            await self.store.writer.run(_set_data(int(row.id or 0), data))
            if not ok:
                log.warning("feed.alarm_send_failed", key=key, tries=data["tries"])


def _set_data(event_id: int, data: Mapping[str, Any]) -> Callable[[Tx], Awaitable[None]]:
    async def job(tx: Tx) -> None:
        tx.update("event", ("data",), [(dict(data), event_id)])

    return job


def _due(row: Event, now: datetime) -> bool:
    """An alarm row to send now: not sent, not given up, its pause after a failure over."""
    if row.data.get("sent_at") is not None or row.at is None or now - row.at > GIVE_UP:
        return False
    after = row.data.get("next_try")
    return after is None or datetime.fromisoformat(after) <= now


def duty_sender(
    cfg: FeedAlarmConfig, channels: Mapping[str, Any], limiters: Mapping[str, Any]
) -> Send:
    """Send through the configured channel: one message per number in ``to`` (a group robot
    or a log needs none). The kind is the first the channel carries of sms, im, email, voice."""
    from warnd.edges.channels import Outbound
    from warnd.edges.channels.delivery import deliver

    channel = channels[cfg.channel]
    kind = next((k for k in ("sms", "im", "email", "voice") if k in channel.kinds), "sms")
    targets = cfg.to or ("",)

    async def send(message_id: str, text: str, subject: str) -> bool:
        ok = True
        for n, to in enumerate(targets):
            out = Outbound(
                id=message_id if len(targets) == 1 else f"{message_id}-{n}",
                to=to,
                kind=kind,
                purpose="notice",
                text=text,
                warning=subject,
                contact="duty-office",
            )
            result = await deliver(channel, out, limiter=limiters[cfg.channel], deadline_s=60.0)
            ok = ok and result.ok
        return ok

    return send
