"""``warnd drill``: run warnings through the chain in virtual time."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from warnd.cli import main
from warnd.cli.common import (
    config_option,
    contacts_path,
    emit_json,
    fail,
    guarded,
    json_option,
    load,
)
from warnd.cli.progress import drill_time, for_stream
from warnd.config.policy import Policy
from warnd.core import directory
from warnd.core.division import LEVEL_ZH
from warnd.desk.drill import simulate


@main.group("drill")
def drill() -> None:
    """演练 (drills): simulate or replay warnings through the chain."""


@drill.command("simulate")
@click.option(
    "--feed",
    "feeds",
    multiple=True,
    required=True,
    metavar="PATH",
    help="CAP 文件或目录 (repeatable, or several paths after one --feed); messages arrive at"
    " their sent time",
)
@click.argument("more_feeds", nargs=-1, metavar="[PATH]...", type=click.Path())
@click.option("--contacts", metavar="PATH", help="通讯录 contacts CSV file or folder")
@click.option("--responders", required=True, metavar="CSV", help="contact_id,ack_after")
@click.option("--report", "report_path", required=True, metavar="OUT.json", help="报告输出")
@config_option
@json_option
@guarded
def simulate_cmd(
    feeds: tuple[str, ...],
    more_feeds: tuple[str, ...],
    contacts: str | None,
    responders: str,
    report_path: str,
    config_path: str | None,
    as_json: bool,
) -> None:
    """模拟演练 (virtual time, nothing is sent; a 12-hour scenario takes seconds).

    ``--feed a.xml b.xml`` and ``--feed a.xml --feed b.xml`` are the same. The contacts must
    pass ``warnd contacts check`` and every responder must be one of them: a drill on a broken
    directory, or with a misspelt responder, would report silence that is not there.
    """
    config = load(config_path)
    policy = config.policy if config else Policy.default()
    path = contacts_path(contacts, config)
    directory_, problems = directory.load(path)
    if problems:  # one line: the count, the first, and the command that lists them all
        fail(
            f"通讯录有 {len(problems)} 个问题，请先修正（warnd contacts check {path}）"
            f" (the contacts have problems): {problems[0]}"
        )
    bar = for_stream("模拟演练", sys.stderr, describe=drill_time)
    try:
        result = asyncio.run(
            simulate(
                [*feeds, *more_feeds],
                directory_,
                policy,
                responders,
                tz=config.tz if config else None,
                progress=bar,
            )
        )
    finally:
        bar.close()
    write_report(report_path, result)
    if as_json:
        emit_json({"report": report_path, "summary": result["summary"]})
    else:
        _summary(result["summary"], report_path)


def write_report(path: str, result: dict[str, Any]) -> None:
    """The drill's report file (simulate and replay); one line and exit 2 when it cannot be."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as exc:
        fail(f"无法写入报告 {path}：{exc.strerror} (cannot write report)")


def chain_rows(table: Table, s: Mapping[str, Any]) -> None:
    """The chain's figures of a drill's summary (``warnd.desk.drill.summarise``), as table rows."""
    rows = [
        ("呼叫次数 attempts", s.get("attempts")),
        ("通知人数 persons notified", s.get("persons_notified")),
        ("应答人数 persons acknowledged", s.get("persons_acknowledged")),
        ("未叫醒 unreached", s.get("unreached")),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    for level, d in (s.get("divisions") or {}).items():
        table.add_row(f"{LEVEL_ZH.get(level, level)}：叫应/应答", f"{d['called']}/{d['reached']}")


def _summary(s: dict[str, Any], path: str) -> None:
    console = Console(stderr=True)
    table = Table(title="演练结果 drill summary")
    table.add_column("项目")
    table.add_column("数量", justify="right")
    table.add_row("预警 warnings", str(s.get("warnings")))
    table.add_row("调度 dispatched", str(s.get("dispatched")))
    table.add_row("未调度 skipped", str(s.get("skipped")))
    chain_rows(table, s)
    console.print(table)
    console.print(f"报告已写入 {path}（用时 {s.get('wall_seconds')} 秒）")
