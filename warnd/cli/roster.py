"""``warnd contacts import`` (Excel rosters → contacts CSV) and ``warnd contacts audit``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from warnd.cli.common import config_option, contacts_path, emit_json, fail, json_option, load
from warnd.cli.contacts import contacts, load_bar, summary
from warnd.config.policy import Policy
from warnd.core.deadline import windows
from warnd.core.directory import load as load_directory
from warnd.core.duration import format_duration
from warnd.core.errors import ContactsError, WarndError
from warnd.desk import audit as audit_mod
from warnd.desk.roster import RowProblem, import_roster


@contacts.command("import")
@click.argument("roster", metavar="ROSTER.xlsx", type=click.Path(path_type=Path))
@click.option(
    "--sheet", metavar="NAME", help="只导入这个工作表 (default: every sheet with a header)"
)
@click.option("--out", "out", required=True, metavar="contacts/NAME.csv", help="写出的通讯录 CSV")
@click.option(
    "--check-folder",
    is_flag=True,
    help="检查 --out 所在的整个文件夹（守护进程加载的就是它），而不只是这个文件",
)
@json_option
@config_option
def import_cmd(
    roster: Path,
    sheet: str | None,
    out: Path,
    check_folder: bool,
    as_json: bool,
    config_path: str | None,
) -> None:
    """把 Excel 花名册 ROSTER.xlsx 转成通讯录 CSV（contracts §1），并做 contacts check 的全部检查。

    Exit 0 when every row is good, 1 when some row is bad (each named by sheet, row and column;
    the CSV is written all the same), 2 when the workbook cannot be read.
    """
    del config_path  # accepted for uniformity (contracts §4); importing needs no config
    out_path = Path(out)
    bar = load_bar()
    tty = sys.stderr.isatty()
    spinner = Console(file=sys.stderr, stderr=True).status("读取工作簿 …") if tty else None
    try:
        result = import_roster(
            roster,
            out_path,
            sheet=sheet,
            check=out_path.parent if check_folder else None,
            load_progress=bar,
            reading=spinner,
        )
    except WarndError as err:
        if as_json:
            emit_json({"ok": False, "error": str(err), "problems": []})
        fail(f"花名册无法导入 (cannot import): {err}")
    finally:
        bar.close()
    r = result.roster
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "out": str(result.out),
                "rows": len(r.rows),
                "sheets": [
                    {
                        "name": s.name,
                        "header_row": s.header_row,
                        "rows": s.rows,
                        "columns": dict(s.columns),
                    }
                    for s in r.sheets
                ],
                "notes": list(r.notes),
                "problems": [_problem_json(p) for p in result.problems],
                "counts": dict(result.counts),
            }
        )
    else:
        for note in r.notes:
            click.echo(f"注意：{note}", err=True)
        for problem in result.problems:
            click.echo(str(problem))
        done = f"已写入 {result.out}：{len(r.rows)} 行（{summary(dict(result.counts))}）"
        if result.problems:
            click.echo(
                f"{done}；发现 {len(result.problems)} 个问题，请修改花名册后重新导入", err=True
            )
        else:
            click.echo(f"{done}；检查通过")
    sys.exit(0 if result.ok else 1)


def _problem_json(p: RowProblem) -> dict[str, object]:
    return {
        "file": p.file,
        "line": p.line,
        "sheet": p.sheet,
        "row": p.row,
        "column": p.column,
        "letter": p.letter,
        "header": p.header,
        "message": p.message,
        "kind": p.kind,
    }


@contacts.command("audit")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--all", "show_all", is_flag=True, help="表格列出全部岗位（默认只列不合格的）")
@json_option
@config_option
def audit_cmd(path: Path | None, show_all: bool, as_json: bool, config_path: str | None) -> None:
    """汛前检查：每个区划岗位能否在 631 时限内叫应到人（A/B 角、号码、上级、值班室、最坏叫应时长）。

    A level's 631 deadline is the next stage's time (county T−3h, township T−1h, village T with
    the defaults), the rule of ``warnd report``: the worst-case ladder must end within the
    level's lead minus the next stage's lead.

    PATH defaults to the config's [contacts] path; the policy (stages, ack, ladder) comes from
    the config, else the 631 defaults. Exit 0 when every post passes, 1 when any fails, 2 when
    the contacts cannot be read.
    """
    try:
        config = load(config_path)
    except WarndError as err:
        fail(str(err))
    policy = config.policy if config is not None else Policy.default()
    where = contacts_path(str(path) if path is not None else None, config)
    bar = load_bar()
    try:
        directory, problems = load_directory(where, progress=bar)
    except ContactsError as err:
        if as_json:
            emit_json({"ok": False, "error": str(err), "posts": []})
        fail(f"通讯录无法读取 (cannot load contacts): {err}")
    finally:
        bar.close()
    posts, unplaced = audit_mod.audit(directory, policy, problems, audit_mod.row_codes(where))
    tally = audit_mod.counts(posts)
    fix = audit_mod.ladder_fix(posts, policy)
    ok = tally["all"]["failed"] == 0 and not unplaced
    if as_json:
        emit_json(
            {
                "ok": ok,
                "path": str(where),
                "policy": _policy_json(policy),
                "formula": audit_mod.FORMULA,
                "counts": tally,
                "fix": fix.as_json() if fix is not None else None,
                "posts": [p.as_json() for p in posts],
                "unplaced": [
                    {"file": p.source, "line": p.line, "kind": p.kind, "message": p.message}
                    for p in unplaced
                ],
            }
        )
    else:
        _print_audit(posts, unplaced, tally, policy, show_all, fix)
    sys.exit(0 if ok else 1)


def _policy_json(policy: Policy) -> dict[str, Any]:
    out = _policy_fields(policy)
    if policy.ack.bundle:  # contracts §8 (absent when off)
        out["bundle"] = format_duration(policy.ack.bundle)
    return out


def _policy_fields(policy: Policy) -> dict[str, Any]:
    return {
        "window": format_duration(policy.ack.window),
        "attempts": policy.ack.attempts,
        "ladder": list(policy.ladder),
        "leads": {s.level: format_duration(s.lead) for s in policy.stages},
        "budgets": {
            level: format_duration(w.budget)
            for level, w in windows((s.level, s.lead) for s in policy.stages).items()
        },
    }


def _mark(value: bool | None, text: str = "") -> str:
    if value is None:
        return "—"
    return f"[green]✓{text}[/]" if value else f"[bold red]✗{text}[/]"


def _print_audit(
    posts: list[audit_mod.PostAudit],
    unplaced: list[Any],
    tally: dict[str, dict[str, int]],
    policy: Policy,
    show_all: bool,
    fix: audit_mod.Fix | None = None,
) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a file or a pipe: no terminal to fit, keep rows whole
    shown = [p for p in posts if show_all or not p.ok]
    if shown:
        table = Table(title="汛前通讯录检查 contacts audit")
        for name in ("区划代码", "名称", "层级", "A角/B角", "号码", "上级A角", "县值班室"):
            table.add_column(name, no_wrap=True)
        table.add_column("最坏叫应/时限", justify="right", no_wrap=True)
        table.add_column("问题 (结果)", overflow="fold")
        for p in shown:
            budget = format_duration(p.budget) if p.budget is not None else "—"
            ladder = f"{format_duration(p.worst)} / {budget}"
            table.add_row(
                p.code,
                p.name,
                audit_mod.LEVEL_ZH.get(p.level, p.level),
                f"{_mark(p.a > 0, str(p.a))}/{_mark(p.b > 0, str(p.b))}",
                _mark(p.phones_ok),
                _mark(p.parent_a),
                _mark(p.county_duty),
                ladder if p.ladder_ok is not False else f"[bold red]{ladder}[/]",
                "[green]通过[/]" if p.ok else "[red]" + "；".join(p.problems) + "[/]",
            )
        console.print(table)
    for prob in unplaced:
        console.print(f"[red]{prob}[/]", highlight=False)
    window = format_duration(policy.ack.window)
    timetable = windows((s.level, s.lead) for s in policy.stages)
    console.print(
        f"最坏叫应时长 = 每级 {policy.ack.attempts} 次 × {window} × 有人可叫的梯级数"
        "（本人、B角、上级、值班室），须短于该层级的 631 时限"
        "（本级提前量 − 下一级提前量，最后一级到发生时间）："
        + "；".join(audit_mod.budget_text(w) for w in timetable.values())
        + "。",
        highlight=False,
    )
    if policy.ack.bundle:  # contracts §8: bundling only ever brings an attempt forward
        console.print(
            f"合并发送 bundle = {format_duration(policy.ack.bundle)}：同一人多条预警的呼叫"
            "最多提前这么久合并为一条消息，从不推迟，最坏叫应时长不变。",
            highlight=False,
        )
    parts = [
        f"{audit_mod.LEVEL_ZH[lv]} {tally[lv]['posts'] - tally[lv]['failed']}/{tally[lv]['posts']}"
        for lv in ("county", "township", "village")
        if tally[lv]["posts"]
    ]
    verdict = "全部通过" if tally["all"]["failed"] == 0 and not unplaced else "有岗位不通过"
    console.print(f"{verdict}：通过/岗位数 {'，'.join(parts)}", highlight=False)
    if fix is not None:  # exactly what to change in the config, not just that it fails
        console.print(audit_mod.fix_text(fix, policy), highlight=False, markup=False)
