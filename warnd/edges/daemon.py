"""``warnd serve``: the feeds, the engine, the sender and the HTTP listener in one process.

APScheduler (3.x, in memory) only wakes things up: feed polls on their intervals, the engine
at the next due row, and a periodic safety tick. Everything the engine knows is in the store,
so a restarted daemon simply wakes, finds every overdue row and carries on.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from warnd.config.feedconfig import FeedConfig
from warnd.config.policy import Config
from warnd.core import directory as directory_mod
from warnd.core.clock import Clock, SystemClock, wall_now
from warnd.edges import listener, metrics, vendors
from warnd.edges.ack import make_app
from warnd.edges.alarms import FeedAlarms, duty_sender
from warnd.edges.channels import Channel, Observer, build_channel
from warnd.edges.channels.ratelimit import Limiter
from warnd.edges.dispatch import Dispatcher
from warnd.edges.feeds import Feed, FeedItem, IngestResult, Outcome, PollReport
from warnd.edges.feeds.build import DirectoryScope, build_feed, by_priority, watched
from warnd.edges.feeds.watch import Watch, health_json
from warnd.edges.health import (
    FeedWatch,
    Health,
    WriteWatch,
    probe_store,
    sender_stuck,
    watch_writes,
)
from warnd.edges.monitor import make_monitor_app
from warnd.edges.sdnotify import Notifier
from warnd.edges.sender import Sender
from warnd.engine import Context, Engine
from warnd.store import Store

log = structlog.get_logger("warnd.daemon")


def heartbeat_s(window: timedelta) -> float:
    """How often an instance on PostgreSQL heartbeats: a quarter of the ack window, at most
    10 s. Its messages return to the queue after two silent heartbeats — at most half a
    window, so a crash never costs a message its attempt (the next one would overtake it)."""
    return max(0.5, min(10.0, window.total_seconds() / 4))


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        scheduler: bool = True,
        tick_interval: float = 30.0,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.use_scheduler = scheduler
        self.tick_interval = tick_interval
        self.port = config.listen.port if port is None else port
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.dispatcher: Dispatcher | None = None
        self.feeds: list[Feed] = []  # most trusted first (warnd.edges.feeds.build.by_priority)
        self.alarms: FeedAlarms | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.listeners: list[listener.Listener] = []  # the hooks', then the monitor's
        self.bound_port: int | None = None
        self.monitor_port: int | None = None
        # /healthz (warnd.edges.health): store writes, a stuck sender, feeds not read
        self.checks = Health()
        self.writes = WriteWatch(probe=self._probe_store)
        self.feed_watch = FeedWatch()
        self._wake_lock = asyncio.Lock()
        self._wake_again = False
        self._background: set[asyncio.Task[None]] = set()
        self.sender: Sender | None = None
        self.started_at: datetime | None = None
        self._groups: list[Any] = []  # channels with ``observe``: duty-group digests
        self._limiters: dict[str, Limiter] = {}  # per channel: the sender's and the alarms'

    # ---- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, build the engine, the sender, the feeds and the listeners, start the
        timers, then pick up every overdue row left by the last run."""
        cfg = self.config
        cfg.require_daemon()
        directory = self._first_directory()
        await self._open_engine(directory)
        channels = self._build_sending()
        feed_configs = self._build_feeds(channels)
        await self._listen(self._hooks_app(channels))
        self.started_at = self.clock.now()
        if self.use_scheduler:
            self._start_scheduler(feed_configs)
        assert self.engine is not None
        log.info(
            "daemon_started",
            listen=f"{cfg.listen.host}:{self.bound_port}",
            monitor=f"{cfg.monitor.host}:{self.monitor_port}",
            demo=cfg.demo,
            instance=self.engine.ctx.instance,  # ``outbox.claimed_by`` on PostgreSQL
            store=cfg.store_url.split("@")[-1],
            contacts=len(directory),
            feeds=[f.name for f in self.feeds],
            channels=list(channels),
        )
        await self.wake()  # pick up every overdue row left by the last run

    # ---- the seams of ``start`` -----------------------------------------------------------

    def _first_directory(self) -> directory_mod.Directory:
        """The contacts directory ``serve`` needs (ConfigError without ``[contacts] path``)."""
        cfg = self.config
        if cfg.contacts_path is None:
            from warnd.core.errors import ConfigError

            raise ConfigError(
                "warnd serve 需要通讯录 [contacts] path (needs [contacts] path)",
                source=str(cfg.path),
                field="contacts.path",
            )
        directory, problems = directory_mod.load(cfg.contacts_path)
        gc.freeze()  # a province directory is long-lived: keep it out of every full GC pass
        for p in problems:
            log.warning("contacts_problem", problem=str(p))
        return directory

    async def _open_engine(self, directory: directory_mod.Directory) -> None:
        """The store (heartbeating on PostgreSQL) and the engine over it."""
        cfg = self.config
        beat = (
            cfg.store_heartbeat.total_seconds()
            if cfg.store_heartbeat is not None
            else heartbeat_s(cfg.policy.ack.window)
        )
        self.store = await Store.open(cfg.store_url, daemon=True, heartbeat_s=beat)
        ctx = Context(
            store=self.store,
            directory=directory,
            policy=cfg.policy,
            clock=self.clock,
            tz=cfg.tz,
            public_url=cfg.listen.public_url,
        )
        self.engine = Engine(ctx)

    def _build_sending(self) -> dict[str, Channel]:
        """The channels, the dispatcher over them and the sender; returns the channels."""
        cfg = self.config
        assert self.engine is not None and self.store is not None
        channels = {name: build_channel(c, clock=self.clock) for name, c in cfg.channels.items()}
        self._limiters = {name: Limiter.for_channel(c) for name, c in cfg.channels.items()}
        window = cfg.policy.ack.window.total_seconds()
        self.dispatcher = Dispatcher(
            channels,
            self._limiters,
            deadline_s=max(5.0, min(60.0, window / 2)),
            link_base=cfg.listen.public_url,
            on_sent=vendors.remember_sent(self.engine),
        )
        self._groups = [ch for ch in channels.values() if isinstance(ch, Observer)]
        self.sender = Sender(
            self.engine,
            self.dispatcher,
            concurrency=sum(c.concurrency for c in cfg.channels.values()),
            observers=self._groups,
            spawn=self._background_task,
        )
        self.store.on_reclaim = self._send_soon
        self.store.on_work = self._wake_soon
        return channels

    def _build_feeds(self, channels: dict[str, Channel]) -> list[FeedConfig]:
        """The feeds (most trusted first) and their alarms; returns their configs, in order."""
        cfg = self.config
        assert self.store is not None
        feed_configs = by_priority(cfg.feeds)
        scope = DirectoryScope(lambda: self.engine.ctx.directory if self.engine else None)
        self.feeds = [build_feed(f, scope=scope, source=str(cfg.path)) for f in feed_configs]
        send = duty_sender(cfg.feed_alarms, channels, self._limiters) if cfg.feed_alarms else None
        watch = Watch(watched(feed_configs), started=wall_now(self.clock))
        self.alarms = FeedAlarms(
            self.store, watch, self.clock, send=send, tz=cfg.tz, spawn=self._background_task
        )
        return feed_configs

    def _hooks_app(self, channels: dict[str, Channel]) -> web.Application:
        """The hooks' application: acknowledgements, the channels' vendor callbacks, the wall;
        /healthz's checks are set up with it."""
        cfg = self.config
        assert cfg.hooks is not None and self.engine is not None and self.store is not None
        # vendor callbacks (warnd.edges.vendors) of the channels that have them
        routes = vendors.channel_routes(self.engine, channels.values())
        if (
            cfg.wall is not None
        ):  # the duty room's status wall (warnd.desk.wall; docs/operations.md)
            from warnd.desk.wall.app import daemon_routes

            routes += daemon_routes(cfg.wall, self.store, self.engine, self.health)
        self._watch_health()
        return make_app(
            self.engine,
            cfg.hooks.secret(demo=cfg.demo),
            max_age_s=cfg.hooks.max_age.total_seconds(),
            extra_routes=routes,
            public_url=cfg.listen.public_url,
            trusted_proxies=cfg.listen.trusted_proxies,
        )

    def _start_scheduler(self, feed_configs: list[FeedConfig]) -> None:
        """APScheduler: the feeds' polls and watch, and the engine's safety tick."""
        self.scheduler = AsyncIOScheduler()
        self._schedule_feeds(feed_configs)
        self.scheduler.add_job(
            self.wake,
            "interval",
            seconds=self.tick_interval,
            id="safety-tick",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.start()

    def _schedule_feeds(self, feed_configs: list[FeedConfig]) -> None:
        assert self.scheduler is not None
        for feed, fc in zip(self.feeds, feed_configs, strict=True):
            self.feed_watch.expect(feed.name, fc.interval.total_seconds())
            self.scheduler.add_job(
                self.poll_feed,
                "interval",
                args=[feed],
                id=f"feed:{feed.name}",
                seconds=fc.interval.total_seconds(),
                max_instances=1,
                coalesce=True,
            )
        # The first round in priority order: a warning both sources already hold runs its
        # chain from the preferred source's copy.
        self._background_task(self.poll_all())
        self.scheduler.add_job(
            self.watch_feeds,
            "interval",
            seconds=min(30.0, self.tick_interval),
            id="feed-watch",
            max_instances=1,
            coalesce=True,
        )

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for each in self.listeners:
            await each.stop()
        self.listeners = []
        for feed in self.feeds:
            await feed.aclose()
        if self.dispatcher is not None:
            await self.dispatcher.aclose()
        if self.store is not None:
            await self.store.close()
            self.store = None
        if self.started_at is not None:
            log.info("daemon_stopped")

    async def _listen(self, app: web.Application) -> None:
        """The hooks' listener and the monitor's, behind limits sized to the open-file limit."""
        monitor = make_monitor_app(self.health, lambda: self.store)
        self.listeners = await listener.start_listeners(self.config, app, monitor, self.port)
        self.bound_port, self.monitor_port = (each.port for each in self.listeners)

    def _watch_health(self) -> None:
        """The checks of /healthz (warnd.edges.health), fed by what exists today."""
        assert self.store is not None
        watch_writes(self.store, self.writes)
        self.checks.add("store", self.writes.check)
        self.checks.add("sender", self._sender_check)

    async def _sender_check(self) -> str | None:
        """Messages handed to a channel and without an outcome for twice the dispatcher's
        deadline (every send ends within it, retries included): a hung send."""
        if self.sender is None or self.dispatcher is None:
            return None
        limit = timedelta(seconds=2 * self.dispatcher.deadline_s)
        return sender_stuck(*self.sender.held(limit), limit)

    async def _probe_store(self) -> None:
        if self.store is not None:
            await probe_store(self.store)

    def reload_directory(self) -> bool:
        """SIGHUP: load the contacts again; a directory that cannot be read leaves the old one."""
        assert self.engine is not None and self.config.contacts_path is not None
        try:
            directory, problems = directory_mod.load(self.config.contacts_path)
        except Exception as exc:  # keep the working directory on any failure
            log.error("contacts_reload_failed", error=str(exc))
            return False
        for p in problems:
            log.warning("contacts_problem", problem=str(p))
        self.engine.ctx.set_directory(directory)
        gc.freeze()
        log.info("contacts_reloaded", contacts=len(directory))
        return True

    # ---- work ---------------------------------------------------------------------------

    async def ingest(self, item: FeedItem) -> IngestResult:
        assert self.engine is not None
        result = await self.engine.ingest(item)
        if result.outcome == Outcome.ACCEPTED:
            self._wake_soon()
        return result

    async def poll_feed(self, feed: Feed) -> PollReport:
        assert self.alarms is not None
        if not await self.alarms.holds_feeds():
            # Another instance on this database polls the feeds; it takes over if it dies.
            self.feed_watch.elsewhere(feed.name)
            return PollReport(feed.name, 0, 0, 0, 0, None)
        report = await feed.poll(self.ingest)
        self.feed_watch.polled(feed.name, self._interval(feed.name), report.error)
        if self.alarms is not None:
            self.alarms.polled(feed, report)
            await self.watch_feeds()
        metrics.FEED_POLLS.labels(feed.name).inc()
        for outcome, n in (
            ("accepted", report.accepted),
            ("duplicate", report.duplicates),
            ("rejected", report.rejected),
        ):
            if n:  # a bad file dropped in the spool shows on /metrics, not only in the log
                metrics.FEED_ITEMS.labels(feed.name, outcome).inc(n)
        if report.error:
            metrics.FEED_ERRORS.labels(feed.name).inc()
            log.warning("feed_poll_failed", feed=feed.name, error=report.error)
        return report

    async def poll_all(self) -> list[PollReport]:
        """Poll every feed once, most trusted first."""
        return [await self.poll_feed(feed) for feed in list(self.feeds)]

    async def watch_feeds(self) -> tuple[list[str], list[str]]:
        """Raise and clear feed alarms (warnd.edges.alarms); never lets a store error escape."""
        if self.alarms is None:
            return [], []
        try:
            return await self.alarms.tick()
        except Exception:  # the store is busy or down: the next tick tries again
            log.exception("feed_watch_failed")
            return [], []

    def _background_task(self, coro: Any) -> asyncio.Task[None]:
        # Keep a reference: the event loop holds tasks only weakly, and ``stop`` must not
        # leave work running against a closed store.
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _wake_soon(self) -> None:
        if self._wake_lock.locked():
            self._wake_again = True
        else:
            self._background_task(self.wake())

    async def settle(self) -> None:
        """Wait until background work (wakes started by new input, the sender) has finished."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def wake(self) -> None:
        """Do the timer work that is due now (fire stages, advance calls); start the sender.

        Sending runs in its own task (``warnd.edges.sender``): a gateway that hangs or is down keeps
        its messages retrying for up to a minute each, and the chain's timers — redials,
        escalations, the next stage — must not wait for that.
        """
        assert self.engine is not None
        async with self._wake_lock:
            while True:
                self._wake_again = False
                due, now = await self.engine.next_due(), self.clock.now()
                if due is not None and due <= now:
                    metrics.SCHEDULER_LAG.observe((now - due).total_seconds())
                report = await self.engine.tick()
                self._send_soon()
                if report.progressed or self._wake_again:
                    continue
                await self._schedule_next()
                # New input that arrived while the next wake was being scheduled would
                # otherwise wait for the safety tick: go round once more.
                if not self._wake_again:
                    break

    def _send_soon(self) -> None:
        if self.sender is not None:
            self.sender.poke()

    async def _schedule_next(self) -> None:
        if self.scheduler is None or self.engine is None:
            return
        due = await self.engine.next_due()
        if due is None:
            return
        delay = (due - self.clock.now()).total_seconds()
        run_at = datetime.now().astimezone() + timedelta(seconds=max(0.0, delay))
        self.scheduler.add_job(
            self.wake,
            "date",
            run_date=run_at,
            id="wake",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _interval(self, name: str) -> float:
        return next(f.interval.total_seconds() for f in self.config.feeds if f.name == name)

    async def health(self) -> dict[str, Any]:
        """The /healthz report: ``ok`` false (503) with ``problems`` naming each cause."""
        problems = await self.checks.problems()
        for name in self.feed_watch.names():
            cause = self.feed_watch.cause(name)
            if cause is not None:
                problems[f"feed:{name}"] = cause
        feeds = {}
        for f in self.feeds:
            status = getattr(f, "status", None)
            feeds[f.name] = {
                "last_error": getattr(status, "last_error", None),
                "consecutive_failures": getattr(status, "consecutive_failures", 0),
            }
        if self.alarms is not None:
            for h in health_json(self.alarms.health()):
                feeds.setdefault(str(h["name"]), {}).update(
                    {k: h[k] for k in ("role", "priority", "stale", "last_answer_at")}
                )
        next_due = None
        if self.engine is not None and "store" not in problems:
            try:
                async with asyncio.timeout(self.checks.timeout_s):
                    next_due = await self.engine.next_due()
            except Exception as exc:  # a store that does not answer is a finding, not a 500
                problems["store"] = f"无法读取 cannot read: {type(exc).__name__}: {exc}"
        return {
            "ok": self.store is not None and not problems,
            "problems": problems,
            "now": self.clock.now().isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "contacts": len(self.engine.ctx.directory) if self.engine else 0,
            "feeds": feeds,
            "next_due": next_due.isoformat() if next_due else None,
        }


async def serve(config: Config, *, clock: Clock | None = None, tick_interval: float = 30.0) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the contacts directory."""
    daemon = Daemon(config, clock=clock, tick_interval=tick_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()

    def reload() -> None:
        ok = daemon.reload_directory()
        notifier.status("contacts reloaded" if ok else "contacts reload failed: kept the old ones")

    loop.add_signal_handler(signal.SIGHUP, reload)
    if config.demo:
        log.warning(
            "demo_mode",
            note="演示模式：回执钩子使用公开的示例密钥，仅限本机，切勿用于生产"
            " demo mode: the hooks accept the public example secret, on loopback only;"
            " never in production",
        )
    try:
        await daemon.start()
        # READY only now: the store is open, overdue rows were picked up, timers are scheduled.
        notifier.ready(f"serving on {config.listen.host}:{daemon.bound_port}")
        notifier.start_watchdog()
        await stop.wait()
        notifier.stopping()
    finally:
        await notifier.stop()
        await daemon.stop()  # also after a failed start: the store and listener are released
