"""``warnd drill replay``: a live drill — archived warnings through the real daemon, sped up."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from warnd.cli.common import config_option, emit_json, fail, guarded, json_option, load
from warnd.cli.drill import chain_rows, drill, write_report
from warnd.cli.progress import DelayedBar, drill_time, for_stream
from warnd.core.clock import ScaledClock, SystemClock
from warnd.core.division import LEVEL_ZH
from warnd.desk.drill import load_feed

if TYPE_CHECKING:
    from warnd.desk.replay import ReplayPlan

EXIT_INTERRUPTED = 130


def _pace(policy: Any, speed: float, fed: int, dropped: int) -> str:
    """What the operator should expect in real time: leads and the answer window."""

    def real(seconds: float) -> str:
        return f"{seconds / 60:.1f} 分钟" if seconds >= 60 else f"{seconds:.1f} 秒"

    leads = "/".join(real(s.lead.total_seconds() / speed) for s in policy.stages)
    window = real(policy.ack.window.total_seconds() / speed)
    skipped = f"（{dropped} 条不在 --only 区域内，未回放）" if dropped else ""
    return (
        f"演练回放 {fed} 条消息{skipped}，倍速 ×{speed:g}：各级提前量 {leads}，"
        f"每次呼叫等待应答 {window}"
    )


def _start_time(text: str | None, config_tz: Any) -> datetime:
    if text is None:
        return SystemClock().now().astimezone(config_tz)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(
            f"时间格式不对 --start：应如 2025-06-14T08:00:00+08:00 (not an ISO 8601 time): {text!r}"
        )
    return value if value.tzinfo else value.replace(tzinfo=config_tz)


@drill.command("replay")
@click.argument("archive", metavar="ARCHIVE_DIR", type=click.Path(path_type=Path))
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="倍速：60 = 6h/3h/1h 变成 6/3/1 分钟 (time compression)",
)
@click.option("--start", "start_text", metavar="TIME", help="演练开始时间 (default: now)")
@click.option("--only", metavar="CODE", help="只演练这个县/乡镇 (county/township code)")
@click.option("--confirm-live", is_flag=True, help="确认要把真实预警 (Actual) 的演练发给真人")
@click.option("--report", "report_path", metavar="OUT.json", help="演练报告（含全部事件）")
@json_option
@config_option
@guarded
def replay_cmd(
    archive: Path,
    speed: float,
    start_text: str | None,
    only: str | None,
    confirm_live: bool,
    report_path: str | None,
    as_json: bool,
    config_path: str | None,
) -> None:
    """实战演练：把 ARCHIVE_DIR 里的历史 CAP 消息按 sent 顺序、标记【演练】后经真实守护进程回放。

    Runs the real daemon (the config's store, channels and hooks listener; not its feeds) on a
    clock running SPEED times faster, until every message has been fed and nothing is due.
    Exit 0 when done, 130 when stopped with Ctrl-C (the drill's pending work is cancelled),
    2 when refused.
    """
    from warnd.desk.replay import live_risk, prepare  # here: the daemon's imports are heavy

    config = load(config_path, required=True)
    assert config is not None
    feed = load_feed([archive])
    if not feed:
        fail(f"{archive}: 档案中没有 CAP 文件 (no *.xml files)")
    start = _start_time(start_text, config.tz)
    tag = SystemClock().now().astimezone(config.tz).strftime("%Y%m%d%H%M%S")
    plan = prepare(feed, start, tag, only)
    if not plan.messages:
        fail(f"--only {plan.only}: 档案中没有覆盖该区划的消息 (no message covers it)")
    risk = live_risk(plan, config)
    if risk is not None and not confirm_live:
        fail(risk)
    clock = ScaledClock(plan.start, speed, paused=True)
    click.echo(_pace(config.policy, speed, len(plan.messages), len(plan.dropped)), err=True)
    bar = for_stream("演练回放", sys.stderr, describe=drill_time)
    try:
        result = asyncio.run(_run(config, plan, clock, bar))
    finally:
        bar.close()
    if report_path:
        write_report(report_path, result)
    if as_json:
        emit_json({k: v for k, v in result.items() if k != "events"})
    else:
        _print(result, config.tz)
    if result["replay"]["interrupted"]:
        sys.exit(EXIT_INTERRUPTED)


async def _run(
    config: Any, plan: ReplayPlan, clock: ScaledClock, bar: DelayedBar
) -> dict[str, Any]:
    from warnd.desk.replay import run, sleep_until_stopped

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def sleep(seconds: float) -> None:
        # In slices, so that the bar moves during the long quiet stretches between stages.
        end = loop.time() + seconds
        while not stop.is_set() and (left := end - loop.time()) > 0:
            await sleep_until_stopped(stop, min(left, 0.5))
            done = (clock.now() - plan.start).total_seconds()
            bar(min(done, bar.total * 0.99), bar.total)

    try:
        return await run(config, plan, clock, sleep=sleep, stop=stop, progress=bar)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _print(result: dict[str, Any], tz: Any) -> None:
    r, s = result["replay"], result["summary"]
    console = Console()
    table = Table(title=f"实战演练 drill replay {r['tag']}")
    table.add_column("项目")
    table.add_column("结果", justify="right")

    def hm(text: str | None) -> str:
        return (
            datetime.fromisoformat(text).astimezone(tz).strftime("%m-%d %H:%M:%S") if text else "—"
        )

    table.add_row("演练时间 drill time", f"{hm(r['start'])} → {hm(r['ended_at'])}")
    table.add_row(
        "倍速 speed / 实际用时 real time", f"×{r['speed']:g} / {r['real_seconds']:.1f} 秒"
    )
    table.add_row("回放消息 messages fed", str(r["fed"]))
    if r["dropped"]:
        table.add_row("未回放 dropped (--only)", str(len(r["dropped"])))
    for st in result["stages"]:
        label = LEVEL_ZH.get(st["level"], st["level"])
        when = (
            f"{hm(st['fired_at'])}（实际 {hm(st['real_at'])}）" if st["fired_at"] else st["state"]
        )
        table.add_row(f"{label}级阶段 stage", when)
    chain_rows(table, s)
    console.print(table)
    if r["interrupted"]:
        console.print("演练已中止：本次演练未完成的阶段、呼叫和消息均已取消。")
