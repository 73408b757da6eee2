"""``warnd contacts``: check the contacts directory before the flood season, not during it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from warnd.cli import main
from warnd.cli.common import config_option, emit_json, fail, json_option
from warnd.directory import Problem, load
from warnd.errors import ContactsError

_LEVELS_ZH = (("county", "县", "个"), ("township", "乡镇", "个"), ("village", "村", "个"))


@main.group("contacts")
def contacts() -> None:
    """通讯录 (contacts directory) commands."""


def summary(counts: dict[str, int]) -> str:
    """The counts as operators read them: ``县 1 个，乡镇 4 个，村 12 个，联系人 58 人``."""
    parts = [f"{zh} {counts.get(level, 0)} {unit}" for level, zh, unit in _LEVELS_ZH]
    parts.append(f"联系人 {counts.get('contacts', 0)} 人")
    return "，".join(parts)


class LoadProgress:
    """A progress bar on stderr that appears only once loading has taken ``after`` seconds.

    Small directories load in well under a second and should print nothing but the result;
    the bar is for province-scale files, and only on a terminal (never in logs or pipes).
    """

    def __init__(
        self,
        console: Console,
        *,
        after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console = console
        self._after = after
        self._clock = clock
        self._start = clock()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if self._clock() - self._start < self._after:
                return
            self._bar = Progress(
                TextColumn("读取通讯录"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} 行"),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("load", total=total)
        assert self._task is not None
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _progress_for(stream: TextIO) -> LoadProgress | None:
    if not stream.isatty():
        return None
    return LoadProgress(Console(file=stream, stderr=True))


@contacts.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@config_option
def check(path: Path, as_json: bool, config_path: str | None) -> None:
    """检查通讯录 PATH（一个 CSV 文件或一个 CSV 文件夹），列出全部问题。

    Exit 0 when clean, 1 when there are problems, 2 when nothing can be read.
    """
    del config_path  # accepted for uniformity (contracts §4); checking needs no config
    progress = _progress_for(sys.stderr)
    try:
        directory, problems = load(path, progress=progress)
    except ContactsError as err:
        if as_json:
            emit_json({"ok": False, "error": str(err), "problems": [], "counts": {}})
        fail(f"通讯录无法读取 (cannot load contacts): {err}")
    finally:
        if progress is not None:
            progress.close()
    counts = directory.counts()
    if as_json:
        emit_json(
            {
                "ok": not problems,
                "problems": [_problem_json(p) for p in problems],
                "counts": counts,
            }
        )
    else:
        for problem in problems:
            click.echo(str(problem))
        if problems:
            click.echo(f"通讯录检查发现 {len(problems)} 个问题（{summary(counts)}）", err=True)
        else:
            click.echo(f"通讯录检查通过：{summary(counts)}")
    sys.exit(1 if problems else 0)


def _problem_json(problem: Problem) -> dict[str, object]:
    return {
        "file": problem.source,
        "line": problem.line,
        "message": problem.message,
        "kind": problem.kind,
    }
