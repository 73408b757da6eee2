"""``warnd contacts``: check the contacts directory before the flood season, not during it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from warnd.cli import main
from warnd.cli.common import config_option, emit_json, fail, json_option
from warnd.cli.progress import DelayedBar, for_stream, rows
from warnd.core.directory import Problem, load
from warnd.core.division import DIRECTORY_LEVELS, LEVEL_ZH
from warnd.core.errors import ContactsError


@main.group("contacts")
def contacts() -> None:
    """通讯录 (contacts directory) commands."""


def summary(counts: dict[str, int]) -> str:
    """The counts as operators read them: ``县 1 个，乡镇 4 个，村 12 个，联系人 58 人``."""
    parts = [f"{LEVEL_ZH[level]} {counts.get(level, 0)} 个" for level in DIRECTORY_LEVELS]
    parts.append(f"联系人 {counts.get('contacts', 0)} 人")
    return "，".join(parts)


def load_bar() -> DelayedBar:
    """The bar of reading a contacts directory (stderr, terminals only, after a second)."""
    return for_stream("读取通讯录", sys.stderr, describe=rows)


@contacts.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@config_option
def check(path: Path, as_json: bool, config_path: str | None) -> None:
    """检查通讯录 PATH（一个 CSV 文件或一个 CSV 文件夹），列出全部问题。

    Exit 0 when clean, 1 when there are problems, 2 when nothing can be read.
    """
    del config_path  # accepted for uniformity (contracts §4); checking needs no config
    progress = load_bar()
    try:
        directory, problems = load(path, progress=progress)
    except ContactsError as err:
        if as_json:
            emit_json({"ok": False, "error": str(err), "problems": [], "counts": {}})
        fail(f"通讯录无法读取 (cannot load contacts): {err}")
    finally:
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
