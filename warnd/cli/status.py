"""``warnd status`` and ``warnd unreached``: who has answered, who has not, whom to call now.

Both only read the store, through ``warnd.desk.views.reader`` (read-only ``sqlite3`` or ``asyncpg``;
never SQLAlchemy, so that they start in a fraction of a second), and work while the daemon is
down. What they print is in ``warnd.cli.statusview``; JSON keys are in docs/operations.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, RenderableType
from rich.live import Live

from warnd.cli import main
from warnd.cli.common import config_option, emit_json, fail, guarded, json_option, load
from warnd.cli.feedbanner import with_banner
from warnd.cli.statusview import (
    Fmt,
    detail_json,
    detail_view,
    summary_json,
    summary_view,
    unreached_json,
    unreached_view,
)
from warnd.config.policy import Config
from warnd.core.clock import Clock, FileClock, SystemClock
from warnd.core.errors import WarndError
from warnd.desk import views
from warnd.desk.views.feeds import alarm_json, feed_alarms
from warnd.desk.views.reader import Reader, open_reader

if TYPE_CHECKING:
    from warnd.store import Store

Sleep = Callable[[float], Awaitable[None]]


def watch_sleep() -> Sleep:
    """How ``--watch`` waits between refreshes: ``asyncio.sleep``, unless the command was
    invoked with ``obj={"sleep": …}`` (tests: time passes on the clock file, nothing sleeps)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    sleep = obj.get("sleep") if isinstance(obj, dict) else None
    return sleep or asyncio.sleep


async def open_store(config: Config) -> Store:
    """The configured store, never created: a missing or unreachable one is a one-line error."""
    from warnd.store import Store

    try:
        return await Store.open(config.store_url, create=False)
    except WarndError:
        raise
    except Exception as exc:  # the driver's own errors (OSError, asyncpg, sqlite3)
        hint = sudo_hint(exc)
        fail(
            f"无法打开数据库{hint} (cannot open store {config.store_url}):"
            f" {type(exc).__name__}: {exc}"
        )


def sudo_hint(exc: BaseException) -> str:
    """For a store this user may read but not write (a duty officer): how to run it instead."""
    words = str(exc).replace(" ", "").lower()
    if "readonly" in words or "permissiondenied" in words or isinstance(exc, PermissionError):
        return "；值班员请以守护进程的用户运行：sudo -u warnd warnd …（docs/deployment.md）"
    return ""


async def open_store_reader(config: Config) -> Reader:
    """A read-only connection to the configured store; the same one-line errors as
    ``open_store``."""
    try:
        return await open_reader(config.store_url)
    except WarndError:
        raise
    except Exception as exc:  # the driver's own errors (OSError, asyncpg, sqlite3)
        fail(f"无法打开数据库 (cannot open store {config.store_url}): {type(exc).__name__}: {exc}")


def clock_for(clock_file: str | None) -> Clock:
    return FileClock(clock_file) if clock_file else SystemClock()


def console() -> Console:
    """Stdout; 200 columns when it is not a terminal (files, pipes, tests): no wrapping."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 200))


def names_of(config: Config, ids: Iterable[str]) -> dict[str, str]:
    """contact id → name for ``ids`` from the configured contacts (empty when unavailable).

    Only the two cells needed of each row are read (``warnd.desk.views.names``), not the directory.
    """
    from warnd.desk.views.names import names

    if config.contacts_path is None:
        return {}
    try:
        return names(config.contacts_path, ids)
    except WarndError as exc:  # names are a convenience: never stop the duty desk over them
        click.echo(f"warnd: 未能读取通讯录姓名 (names unavailable): {exc}", err=True)
        return {}


@main.command("status")
@click.argument("warning", required=False)
@click.option("--all", "show_all", is_flag=True, help="也显示已解除、已过期、未调度的预警")
@click.option("--level", type=click.Choice(views.LEVEL_ORDER), help="只看该层级 only this level")
@click.option("--pending", is_flag=True, help="只看未应答的人员 only persons not yet answered")
@click.option("--unreached", is_flag=True, help="只看未叫醒的区划 only divisions not woken")
@click.option(
    "--watch",
    type=float,
    is_flag=False,
    flag_value=5.0,
    default=None,
    metavar="[SECONDS]",
    help="原地刷新 refresh in place every SECONDS (default 5)",
)
@click.option(
    "--limit",
    type=int,
    default=200,
    show_default=True,
    help="终端最多显示的区划数 divisions on the terminal, most urgent first (0: all; --json: all)",
)
@click.option(
    "--names/--no-names",
    default=True,
    show_default=True,
    help="从通讯录补充姓名 names from the configured contacts (only their two columns are read)",
)
@click.option("--clock-file", metavar="PATH", default=None, hidden=True)
@click.option("--iterations", type=int, default=None, hidden=True)
@config_option
@json_option
@guarded
def status_cmd(
    warning: str | None,
    show_all: bool,
    level: str | None,
    pending: bool,
    unreached: bool,
    watch: float | None,
    limit: int,
    names: bool,
    clock_file: str | None,
    iterations: int | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """预警叫应进度 (progress of the warnings; WARNING: per division and person).

    WARNING is a warning key or a unique prefix of its identifier.
    """
    if (pending or unreached) and warning is None:
        fail(
            "需要指定预警：--pending/--unreached 只用于一个预警；所有预警的未叫醒名单见"
            " warnd unreached (--pending/--unreached need a WARNING)"
        )
    if watch is not None and as_json:
        fail(
            "不能同用 --watch 与 --json：请重复运行 --json (--watch and --json do not go together)"
        )
    if watch is not None and not 0 < watch <= 3600:
        fail(
            f"刷新秒数应在 0 到 3600 之间 --watch（得到 {watch:g}；预警标识写在 --watch 之前，"
            "或写 --watch=秒数） (SECONDS must be between 0 and 3600; a warning key goes"
            " before --watch)"
        )
    config = load(config_path, required=True)
    assert config is not None
    clock = clock_for(clock_file)
    who: dict[str, str] = {}  # names looked up so far (--watch asks again only for new ids)
    asked: set[str] = set()

    async def snapshot(store: Reader) -> Any:
        f = Fmt(config.tz, clock.now())
        alarms = await feed_alarms(store)  # a missing warning or a silent feed: shown first
        if warning is None:
            ws = await views.warnings(store, f.now, include_all=show_all)
            if as_json:
                return summary_json(ws, f, level) | {"feed_alarms": [alarm_json(a) for a in alarms]}
            return with_banner(summary_view(ws, f, level), alarms, config.tz)
        w = await views.warning(store, warning, f.now)
        d = await views.detail(
            store,
            w,
            f.now,
            level=level,
            pending=pending,
            unreached=unreached,
            limit=None if as_json or limit <= 0 else limit,
        )
        if names:
            new = {p.contact_id for dv in d.divisions for p in dv.persons} - asked
            if new:
                who.update(names_of(config, new))
                asked.update(new)
            d = with_names(d, who)
        if as_json:
            return detail_json(d, f) | {"feed_alarms": [alarm_json(a) for a in alarms]}
        return with_banner(detail_view(d, f), alarms, config.tz)

    async def run() -> None:
        store = await open_store_reader(config)
        try:
            if watch is not None:
                await watch_loop(
                    lambda: snapshot(store), watch, iterations, console(), sleep=watch_sleep()
                )
                return
            out = await snapshot(store)
            if as_json:
                emit_json(out)
            else:
                console().print(out)
        finally:
            await store.close()

    asyncio.run(run())


async def watch_loop(
    render: Callable[[], Awaitable[RenderableType]],
    interval: float,
    iterations: int | None = None,
    out: Console | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
) -> int:
    """Redraw ``render()`` in place every ``interval`` seconds, ``iterations`` times (None: until
    Ctrl-C). Returns how many frames were drawn.

    Not on a terminal (a pipe, a file, ``watch``-style logging): one whole frame per interval,
    one after the other, flushed at once, since there is no screen to redraw in place.
    """
    out = out or Console()
    if not out.is_terminal:
        return await _frames(render, interval, iterations, out, sleep)
    frames = 0
    with Live(console=out, auto_refresh=False) as live:
        try:
            while True:
                live.update(await render(), refresh=True)
                frames += 1
                if iterations is not None and frames >= iterations:
                    break
                await sleep(interval)
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass
    return frames


async def _frames(
    render: Callable[[], Awaitable[RenderableType]],
    interval: float,
    iterations: int | None,
    out: Console,
    sleep: Sleep,
) -> int:
    frames = 0
    try:
        while True:
            if frames:
                out.print()
            out.print(await render())
            out.file.flush()
            frames += 1
            if iterations is not None and frames >= iterations:
                break
            await sleep(interval)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return frames


def with_names(d: views.Detail, who: dict[str, str]) -> views.Detail:
    return replace(
        d,
        divisions=tuple(
            dv._replace(persons=tuple(p._replace(name=who.get(p.contact_id)) for p in dv.persons))
            for dv in d.divisions
        ),
    )


@main.command("unreached")
@click.option("--all", "show_all", is_flag=True, help="也显示已处置的条目和已解除预警的条目")
@click.option("--county", metavar="CODE", help="只看该县（区划代码前缀）only divisions under CODE")
@click.option(
    "--limit",
    type=int,
    default=100,
    show_default=True,
    help="终端最多显示的条目数 entries on the terminal (0: all; --json: all)",
)
@click.option("--names/--no-names", default=True, show_default=True, help="从通讯录补充姓名")
@click.option("--clock-file", metavar="PATH", default=None, hidden=True)
@config_option
@json_option
@guarded
def unreached_cmd(
    show_all: bool,
    county: str | None,
    limit: int,
    names: bool,
    clock_file: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """未叫醒名单 (the duty office's not-woken list, oldest first, with numbers to call).

    Real entries come first, drills after them. Resolve an entry with
    ``warnd ack WARNING --division CODE --by NAME --note TEXT``.
    """
    if county is not None and not county.isdigit():
        fail(f"区划代码应为数字 --county，如 433122 (a division code is digits): {county!r}")
    config = load(config_path, required=True)
    assert config is not None
    f = Fmt(config.tz, clock_for(clock_file).now())

    async def run() -> list[views.NotWoken]:
        store = await open_store_reader(config)
        try:
            return await views.not_woken(store, include_all=show_all, county=county)
        finally:
            await store.close()

    entries = asyncio.run(run())
    shown = entries if as_json or limit <= 0 else entries[:limit]
    who = names_of(config, (c.contact_id for e in shown for c in e.to_call)) if names else {}
    if as_json:
        emit_json(unreached_json(entries, f, who))
    else:
        console().print(unreached_view(entries, f, who, limit))
