"""``warnd inspect`` and ``warnd plan``: look at a CAP message, and at what the chain would do."""

from __future__ import annotations

import sys
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
    parse_time,
)
from warnd.config.policy import Policy
from warnd.core import cap, directory
from warnd.core.cap import dedup
from warnd.core.chain.plan import Plan, plan
from warnd.core.clock import SystemClock
from warnd.core.division import LEVEL_ZH
from warnd.core.duration import format_duration
from warnd.core.errors import CapError
from warnd.edges.feeds import qwalert

SEVERITY_LABEL = {
    "Extreme": "红色 Extreme",
    "Severe": "橙色 Severe",
    "Moderate": "黄色 Moderate",
    "Minor": "蓝色 Minor",
    "Unknown": "未知 Unknown",
}


@main.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--point",
    "points",
    multiple=True,
    metavar="POINT",
    help="和风天气文件所属的点（配置中的 code、name 或 lat,lon）the configured QWeather point(s) "
    "a saved response is for: its alerts get their division codes",
)
@config_option
@json_option
@guarded
def inspect_cmd(
    files: tuple[str, ...], points: tuple[str, ...], config_path: str | None, as_json: bool
) -> None:
    """解析 CAP 文件或和风天气预警响应 (one JSON line per message with --json).

    A file whose content is JSON is read as a saved QWeather weather-alert response
    (contracts §9): one line per alert, none for an empty ``alerts`` list.
    """
    chosen = _points(points, load(config_path) if points else None)
    results: list[dict[str, Any]] = []
    for name in files:
        for item in inspect_file(name, chosen):
            results.append(item)
            if as_json:
                emit_json(item)
    if not as_json:
        _inspect_table(results)
    if not all(r["ok"] for r in results):
        sys.exit(1)


def _key(alert: cap.Alert) -> str | None:
    key = dedup.key_of(alert)
    return key.text() if key is not None else None


def inspect_file(name: str, points: list[qwalert.Point]) -> list[dict[str, Any]]:
    """The ``inspect --json`` lines of one file: a CAP message, or every alert of a QWeather
    response (``dedup_key``: what a copy from another source is recognised by)."""
    try:
        # at most MAX_BYTES + 1 bytes: `inspect /dev/zero` is refused, not read until memory
        # runs out; unreadable files come back as a CapError naming them
        data = _read(name)
        head = data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
        if head not in (b"{", b"[") and data[:2] != b"\x1f\x8b":
            alert = cap.parse(data, source=name)
            return [{"file": name, "ok": True, **cap.summary(alert), "dedup_key": _key(alert)}]
        response = qwalert.read_response(data, name)
    except CapError as exc:
        return [{"file": name, "ok": False, "error": str(exc)}]
    out: list[dict[str, Any]] = [
        {"file": name, "ok": False, "error": f"{name}: {p}"} for p in response.problems
    ]
    for raw in response.alerts:
        try:
            alert = cap.parse(qwalert.to_cap(raw, points), source=name)
        except CapError as exc:
            out.append({"file": name, "ok": False, "error": str(exc)})
            continue
        summary = {**cap.summary(alert), "dedup_key": _key(alert), "source": "qweather"}
        out.append({"file": name, "ok": True, **summary})
    return out


def _read(name: str) -> bytes:
    try:
        with open(name, "rb") as fh:
            return fh.read(cap.MAX_BYTES + 1)
    except OSError as exc:
        raise CapError(f"cannot read file: {exc.strerror or exc}", source=name) from None


def _points(wanted: tuple[str, ...], config: Any) -> list[qwalert.Point]:
    """The configured QWeather points named by ``--point`` (code, name, or ``lat,lon``)."""
    known = [
        qwalert.Point(p.code, p.lat, p.lon, p.name)
        for f in (config.feeds if config is not None else ())
        for p in f.points
    ]
    out: list[qwalert.Point] = []
    for w in wanted:
        text = w.strip()
        hit = [
            p
            for p in known
            if text in (p.code, p.name, f"{p.lat:.2f},{p.lon:.2f}", f"{p.lat},{p.lon}")
        ]
        if not hit:
            fail(f"--point {w!r}: no such point in the QWeather feeds of the config")
        out.extend(h for h in hit if h not in out)
    return out


def _inspect_table(results: list[dict[str, Any]]) -> None:
    console = Console()
    table = Table(title="CAP 消息解析结果")
    for col in ("文件", "结果", "标识 identifier", "类型", "状态", "级别", "发生 onset", "区划"):
        table.add_column(col, overflow="fold")
    for r in results:
        if r["ok"]:
            table.add_row(
                r["file"],
                "[green]通过[/]",
                r["identifier"],
                r["msg_type"],
                r["status"],
                SEVERITY_LABEL.get(r["severity"] or "", "-"),
                r["onset"] or "-",
                ",".join(r["geocodes"]) or "-",
            )
        else:
            table.add_row(r["file"], "[red]拒绝[/]", "原因见下 (see below)", "", "", "", "", "")
    console.print(table)
    # each reason whole on one line (a table cell would wrap it): grep-able, as documented
    for r in results:
        if not r["ok"]:
            click.echo(f"拒绝 {r['error']}")


def plan_json(alert: cap.Alert, p: Plan) -> dict[str, Any]:
    return {
        "warning": cap.summary(alert),
        "dispatch": p.dispatch,
        "reason": p.decision.reason,
        "reason_code": p.decision.code,
        "reference": {"at": p.reference.isoformat(), "kind": p.reference_kind},
        "unmatched": list(p.unmatched),
        "stages": [
            {
                "level": s.level,
                "due": s.due.isoformat(),
                "divisions": list(s.divisions),
                "recipients": list(s.recipients),
                "lead": format_duration(s.lead),
                "late": s.late,
            }
            for s in p.stages
        ],
    }


@main.command("plan")
@click.argument("cap_file", type=click.Path(dir_okay=False))
@click.option("--contacts", "contacts", metavar="PATH", help="通讯录 contacts CSV file or folder")
@click.option("--at", "at", metavar="TIME", help="到达时间 arrival time, ISO 8601 (default: now)")
@config_option
@json_option
@guarded
def plan_cmd(
    cap_file: str, contacts: str | None, at: str | None, config_path: str | None, as_json: bool
) -> None:
    """推演调度计划 (what the chain would do with this warning; sends nothing)."""
    config = load(config_path)
    policy = config.policy if config else Policy.default()
    tz = config.tz if config else _default_tz()
    path = contacts_path(contacts, config)
    # cheap checks first: a bad --at or CAP file is reported before a province directory loads
    arrival = parse_time(at, tz) if at else SystemClock().now().astimezone(tz)
    alert = cap.parse_file(cap_file)  # bounded read; CapError (one line, exit 2) when unreadable
    directory_, problems = directory.load(path)
    for prob in problems:
        click.echo(f"warnd: 通讯录问题 {prob}", err=True)
    p = plan(alert, directory_, policy, arrival)
    if as_json:
        emit_json(plan_json(alert, p))
        return
    _plan_table(alert, p, directory_, tz)


def _default_tz() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")


def _plan_table(alert: cap.Alert, p: Plan, d: directory.Directory, tz: Any) -> None:
    console = Console()
    head = f"[bold]{alert.headline or alert.identifier}[/]  ({alert.identifier})"
    console.print(head)
    console.print(
        f"级别 {SEVERITY_LABEL.get(alert.severity or '', '-')}；参考时间 T = "
        f"{p.reference.astimezone(tz):%Y-%m-%d %H:%M} ({p.reference_kind})"
        + ("；【演练】" if alert.is_drill else "")
    )
    if not p.dispatch:
        console.print(f"[yellow]不调度[/] {p.decision.reason}")
        return
    table = Table(title="631 叫应计划")
    for col in ("阶段", "提前量", "触发时间", "区划数", "责任人(A)", "说明"):
        table.add_column(col)
    for s in p.stages:
        table.add_row(
            LEVEL_ZH.get(s.level, s.level),
            format_duration(s.lead),
            f"{s.due.astimezone(tz):%m-%d %H:%M}",
            str(len(s.divisions)),
            str(len(s.recipients)),
            "[red]已过时，到达即触发[/]" if s.late else "",
        )
    console.print(table)
    if p.unmatched:
        console.print(f"[yellow]未匹配的区划代码[/]: {', '.join(p.unmatched)}")
