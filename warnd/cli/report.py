"""``warnd report``: the after-action report of a warning in the store or of a drill file.

``warnd report WARNING`` reads the store (key or unique prefix); ``warnd report FILE.json``
reads what ``warnd drill simulate --report FILE.json`` wrote. Both go through the same
``warnd.desk.report.build``, so a drill and a real warning are judged by the same yardstick.
"""

from __future__ import annotations

import asyncio
import io
import sys
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.console import Console

from warnd.cli import main
from warnd.cli.common import config_option, fail, guarded, json_option, load
from warnd.cli.progress import DelayedBar, for_stream
from warnd.cli.status import console, open_store
from warnd.config.policy import Config, Policy
from warnd.core import directory as directory_mod
from warnd.desk.report import Report

FORMATS = ("terminal", "csv", "html", "json")


@main.command("report")
@click.argument("target", metavar="WARNING|DRILL.json")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="terminal",
    show_default=True,
    help="terminal (rich), csv (Excel, UTF-8 BOM), html (self-contained page), json",
)
@click.option("--out", "out", metavar="PATH", help="写入文件 write to PATH (default: stdout)")
@click.option("--contacts", metavar="PATH", help="通讯录: names (and, for drill files, numbers)")
@click.option(
    "--limit", type=int, default=40, show_default=True, help="rows per list on the terminal"
)
@config_option
@json_option
@guarded
def report_cmd(
    target: str,
    fmt: str,
    out: str | None,
    contacts: str | None,
    limit: int,
    config_path: str | None,
    as_json: bool,
) -> None:
    """复盘报告 (after-action report): per level reached in time, acknowledgement times,
    redials and escalations, posts nobody answered, channel success.

    WARNING is a warning key or a unique prefix of its identifier; a path to an existing
    ``.json`` file is read as a ``warnd drill simulate`` report. ``--json`` is ``--format json``.
    """
    if as_json:
        if fmt not in ("terminal", "json"):
            fail(
                f"不能同用 --json 与 --format {fmt}：--json 即 --format json"
                " (--json is --format json)"
            )
        fmt = "json"
    path = Path(target)
    drill_file = path.suffix.lower() == ".json" or path.is_file()
    config = load(config_path, required=not drill_file)
    tz = config.tz if config is not None else ZoneInfo("Asia/Shanghai")
    directory = _directory(contacts, config)
    bar = for_stream("生成报告", sys.stderr)
    try:
        if drill_file:
            if not path.is_file():
                fail(f"找不到演练报告文件 {target} (no such drill report file)")
            from warnd.desk.report.load import from_drill

            policy = config.policy if config is not None else Policy.default()
            leads: dict[str, timedelta] = {s.level: s.lead for s in policy.stages}
            report = from_drill(path, tz, leads, directory=directory, progress=bar)
        else:
            assert config is not None
            report = asyncio.run(_from_store(config, target, directory, bar))
    finally:
        bar.close()
    write(report, fmt, out, limit)


async def _from_store(
    config: Config, ref: str, directory: directory_mod.Directory | None, bar: DelayedBar
) -> Report:
    from warnd.desk.report.load import from_store

    store = await open_store(config)
    try:
        return await from_store(store, ref, config.tz, directory=directory, progress=bar)
    finally:
        await store.close()


def _directory(explicit: str | None, config: Config | None) -> directory_mod.Directory | None:
    path = Path(explicit) if explicit else (config.contacts_path if config else None)
    if path is None:
        return None
    try:
        d, _problems = directory_mod.load(path)
    except Exception as exc:  # names are a convenience; the report stands without them
        if explicit:
            fail(f"通讯录无法读取 --contacts (cannot load contacts): {exc}")
        click.echo(f"warnd: 未能读取通讯录 (contacts unavailable): {exc}", err=True)
        return None
    return d


def write(report: Report, fmt: str, out: str | None, limit: int) -> None:
    """Render ``report`` in ``fmt`` to ``out`` (a file) or stdout."""
    from warnd.desk.report import text as textout

    if fmt == "terminal":
        if out is None:
            textout.render_terminal(report, console(), limit=limit)
            return
        recorder = Console(record=True, width=140, file=io.StringIO())
        textout.render_terminal(report, recorder, limit=limit)
        body = recorder.export_text()
    elif fmt == "csv":
        body = textout.render_csv(report)
    elif fmt == "json":
        import json

        body = json.dumps(textout.to_json(report), ensure_ascii=False, indent=1) + "\n"
    else:
        from warnd.desk.report.html import render_html

        body = render_html(report)
    if out is None:
        sys.stdout.write(body)
        return
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(body, encoding="utf-8", newline="")
    except OSError as exc:
        fail(f"无法写入报告 {out}：{exc.strerror} (cannot write report)")
    click.echo(f"报告已写入 {out}", err=True)
