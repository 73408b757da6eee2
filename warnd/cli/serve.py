"""``warnd serve``: the daemon."""

from __future__ import annotations

import asyncio
import dataclasses

import click

from warnd.cli import main
from warnd.cli.common import config_option, guarded, load


@main.command("serve")
@config_option
@click.option(
    "--tick",
    "tick",
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="safety tick interval (the engine is also woken at each due time)",
)
@click.option(
    "--demo",
    is_flag=True,
    help="演示模式 demo mode: accept the public example hook secret (loopback only)",
)
@click.option(
    "--clock-file",
    metavar="PATH",
    default=None,
    hidden=True,
    help="read the time from a file (tests and rehearsals only)",
)
@guarded
def serve_cmd(config_path: str | None, tick: float, demo: bool, clock_file: str | None) -> None:
    """运行守护进程 (run the daemon: feeds, 631 chain, channels, acknowledgement hooks)."""
    from warnd.core.clock import FileClock
    from warnd.edges import logs
    from warnd.edges.daemon import serve

    config = load(config_path, required=True)
    assert config is not None
    if demo:  # the quick start: never from the config file, so a copied config cannot carry it
        config = dataclasses.replace(config, demo=True)
    logs.configure(level="info", tz=config.tz)
    clock = FileClock(clock_file) if clock_file else None
    asyncio.run(serve(config, clock=clock, tick_interval=tick))
