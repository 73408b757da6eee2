"""``warnd feeds check``: poll every configured source once and say what it found.

Nothing is dispatched and nothing is stored: each message is parsed and counted, a spool
folder is listed and its files read, never moved. The CMA area pre-filter and the
cross-check use the configured contacts (when there are any), as the daemon does.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from warnd.cli import main
from warnd.cli.common import config_option, emit_json, fail, guarded, json_option, load
from warnd.config.feedconfig import FeedConfig
from warnd.config.policy import Config
from warnd.core import cap
from warnd.core.errors import CapError, WarndError
from warnd.edges.feeds import FeedItem, IngestResult, Outcome, PollReport
from warnd.edges.feeds.build import DirectoryScope, build_feed, by_priority


@main.group("feeds")
def feeds_group() -> None:
    """预警来源 (the configured warning sources)."""


@dataclass
class DryIngest:
    """Parses what a feed hands over, keeps the newest message, stores nothing."""

    newest: cap.Alert | None = None
    errors: list[str] = field(default_factory=list)

    async def __call__(self, item: FeedItem) -> IngestResult:
        try:
            alert = cap.parse(item.data, source=item.origin)
        except CapError as exc:
            self.errors.append(str(exc))
            return IngestResult(Outcome.REJECTED, str(exc))
        if self.newest is None or alert.sent > self.newest.sent:
            self.newest = alert
        return IngestResult(Outcome.ACCEPTED, None, alert.key)


def _folder(cfg: FeedConfig) -> dict[str, Any]:
    """A spool folder listed and read in place (the daemon moves files; this must not)."""
    assert cfg.path is not None
    out: dict[str, Any] = {"listed": 0, "items": 0, "accepted": 0, "rejected": 0}
    newest: cap.Alert | None = None
    errors: list[str] = []
    try:
        names = sorted(
            e.name
            for e in os.scandir(cfg.path)
            if e.is_file(follow_symlinks=False)
            and not e.name.startswith(".")
            and e.name.lower().endswith(".xml")
        )
    except OSError as exc:
        return out | {"error": f"无法读取目录 cannot list folder {cfg.path}: {exc.strerror}"}
    out["listed"] = len(names)
    for name in names:
        out["items"] += 1
        try:
            alert = cap.parse_file(Path(cfg.path) / name)
        except CapError as exc:
            out["rejected"] += 1
            errors.append(str(exc))
            continue
        out["accepted"] += 1
        if newest is None or alert.sent > newest.sent:
            newest = alert
    out["newest"] = _newest(newest)
    out["error"] = "; ".join(errors[:3]) or None
    return out


def _newest(alert: cap.Alert | None) -> str | None:
    return f"{alert.identifier} ({alert.sent.isoformat()})" if alert is not None else None


async def _check_one(cfg: FeedConfig, config: Config, scope: DirectoryScope) -> dict[str, Any]:
    head = {"feed": cfg.name, "type": cfg.type, "role": cfg.role, "priority": cfg.priority}
    if cfg.type == "folder":
        return head | _folder(cfg)
    try:
        feed = build_feed(cfg, scope=scope, source=str(config.path))
    except WarndError as exc:
        return head | {"error": str(exc)}
    dry = DryIngest()
    try:
        report: PollReport = await feed.poll(dry)
    finally:
        await feed.aclose()
    newest = report.newest or _newest(dry.newest)
    return head | {
        "listed": report.listed,
        "skipped": report.skipped,
        "items": report.items,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "newest": newest,
        "error": report.error,
    }


@feeds_group.command("check")
@config_option
@json_option
@guarded
def check_cmd(config_path: str | None, as_json: bool) -> None:
    """逐个轮询一次所有来源并报告 (poll every source once; counts, newest item, errors).

    Sends nothing and stores nothing. Exit status 1 when a source reported an error.
    """
    config = load(config_path, required=True)
    assert config is not None
    if not config.feeds:
        fail(f"{config.path}: no [[feeds]] configured")
    directory = None
    if config.contacts_path is not None:
        from warnd.core import directory as directory_mod

        directory, _problems = directory_mod.load(config.contacts_path)
    scope = DirectoryScope(lambda: directory)

    async def run() -> list[dict[str, Any]]:
        return [await _check_one(f, config, scope) for f in by_priority(config.feeds)]

    results = asyncio.run(run())
    if as_json:
        for r in results:
            emit_json(r)
    else:
        _table(results, directory is not None)
    if any(r.get("error") for r in results):
        raise SystemExit(1)


def _table(results: list[dict[str, Any]], scoped: bool) -> None:
    console = Console()
    console = console if console.is_terminal else Console(width=max(console.width, 200))
    title = f"预警来源检查 feeds check  {datetime.now().astimezone():%Y-%m-%d %H:%M}"
    table = Table(title=title)
    columns = ("来源", "类型", "用途", "条目", "不相关", "已读", "有效", "拒收", "最新", "错误")
    for col in columns:
        table.add_column(col, overflow="fold")
    for r in results:
        role = "核对 check" if r["role"] == "check" else "调度 dispatch"
        table.add_row(
            r["feed"],
            r["type"],
            role,
            str(r.get("listed", "-")),
            str(r.get("skipped", "-")),
            str(r.get("items", "-")),
            str(r.get("accepted", "-")),
            str(r.get("rejected", "-")),
            r.get("newest") or "-",
            f"[red]{r['error']}[/]" if r.get("error") else "[green]无[/]",
        )
    console.print(table)
    if not scoped:
        console.print(
            "[yellow]未配置通讯录：未按区划过滤 (no contacts: nothing filtered by area)[/]"
        )
