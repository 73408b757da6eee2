"""``warnd ack``: a duty officer records that they reached a person (or a place) by phone."""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo

import click

from warnd.cli import main
from warnd.cli.common import config_option, emit_json, fail, guarded, json_option, load
from warnd.cli.status import sudo_hint
from warnd.core import directory
from warnd.core.clock import SystemClock
from warnd.core.errors import WarndError
from warnd.desk.report import LEVEL_ZH, SOURCE_ZH
from warnd.engine import Context, Engine
from warnd.engine.acks import AckResult
from warnd.store import Store


@main.command("ack")
@click.argument("warning")
@click.option("--contact", "contact_id", metavar="ID", help="被叫通的责任人 contact_id")
@click.option("--division", metavar="CODE", help="已叫应的区划代码 (resolves the not-woken entry)")
@click.option("--by", "by", required=True, metavar="NAME", help="值班员姓名 officer's name")
@click.option("--note", metavar="TEXT", help="备注，如 电话叫醒 / 上门叫醒")
@config_option
@json_option
@guarded
def ack_cmd(
    warning: str,
    contact_id: str | None,
    division: str | None,
    by: str,
    note: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """人工确认叫应 (record an acknowledgement a duty officer obtained by phone or in person).

    WARNING is the warning key or a unique prefix of its identifier. Give exactly one of
    --contact (the person who answered) or --division (the place now reached: resolves its
    not-woken entry). Prints what was recorded: who, for which place, by whom.
    """
    if contact_id and division:
        fail(
            "只能给一个：--contact 登记某人已应答，--division 登记某区划已叫应"
            " (give one of --contact ID or --division CODE, not both)"
        )
    if not contact_id and not division:
        fail(
            "请给出 --contact 联系人ID 或 --division 区划代码"
            " (give --contact ID or --division CODE)"
        )
    config = load(config_path, required=True)
    assert config is not None
    try:
        result, names = asyncio.run(_ack(config, warning, contact_id, division, by, note))
    except WarndError:
        raise
    except Exception as exc:  # the driver's own errors: a read-only store, a lost server
        hint = sudo_hint(exc).replace("warnd warnd …", "warnd warnd ack …")
        fail(
            f"无法写入数据库{hint} (cannot write the store {config.store_url}):"
            f" {type(exc).__name__}: {exc}"
        )
    who = _who(result.contact_id, names)
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "message": said(result, who, config.tz),
                "warning": result.warning,
                "contact": result.contact_id,
                "name": names.get(result.contact_id or ""),
                "division": result.division,
                "division_name": result.division_name,
                "level": result.level,
                "by": result.by,
                "note": note if result.ok and not result.duplicate else None,
                "resolved": result.resolved,
                "duplicate": result.duplicate,
                "at": result.at.astimezone(config.tz).isoformat() if result.at else None,
                "source": result.source,
            }
        )
    elif result.ok:
        click.echo(said(result, who, config.tz))
    if not result.ok:
        fail(f"未记录：{result.reason}", code=1)


def _who(contact_id: str | None, names: dict[str, str]) -> str:
    if contact_id is None:
        return "—"
    name = names.get(contact_id)
    return f"{name}（{contact_id}）" if name else contact_id


def said(result: AckResult, who: str, tz: ZoneInfo) -> str:
    """What was recorded, in the officer's words: who answered, for which place, by whom."""
    if not result.ok:
        return f"未记录：{result.reason}"
    level = LEVEL_ZH.get(result.level or "", "")
    place = f"{result.division_name or ''}（{level}级 {result.division}）"
    if result.duplicate:
        how = SOURCE_ZH.get(result.source or "", result.source or "")
        when = f"{result.at.astimezone(tz):%m-%d %H:%M}" if result.at else "此前"
        by = f" {result.by}" if result.by else ""
        return (
            f"已应答过，未重复登记：{who} 已于 {when} 经{how}{by}确认，代表 {place}，"
            f"预警 {result.warning}"
        )
    text = f"已登记：{result.by} 记录 {who} 已应答，代表 {place}，预警 {result.warning}"
    return text + ("；该区划的未叫醒条目已处置" if result.resolved else "")


async def _ack(
    config: object,
    warning: str,
    contact_id: str | None,
    division: str | None,
    by: str,
    note: str | None,
) -> tuple[AckResult, dict[str, str]]:
    from warnd.config.policy import Config

    assert isinstance(config, Config)
    store = await Store.open(config.store_url, create=False)
    try:
        directory_ = (
            directory.load(config.contacts_path)[0]
            if config.contacts_path is not None
            else directory.Directory([])
        )
        ctx = Context(
            store=store,
            directory=directory_,
            policy=config.policy,
            clock=SystemClock(),
            tz=config.tz,
        )
        result = await Engine(ctx).ack_by_officer(
            warning=warning, contact_id=contact_id, division=division, by=by, note=note
        )
        person = directory_.contact(result.contact_id) if result.contact_id else None
        return result, ({person.contact_id: person.name} if person and person.name else {})
    finally:
        await store.close()
