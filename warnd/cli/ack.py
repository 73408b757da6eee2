"""``warnd ack``: a duty officer records that they reached a person (or a place) by phone."""

from __future__ import annotations

import asyncio

import click

from warnd import directory
from warnd.cli import main
from warnd.cli.common import config_option, emit_json, fail, guarded, json_option, load
from warnd.clock import SystemClock
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

    WARNING is the warning key or a unique prefix of its identifier.
    """
    if not contact_id and not division:
        fail("give --contact ID or --division CODE")
    config = load(config_path, required=True)
    assert config is not None
    result = asyncio.run(_ack(config, warning, contact_id, division, by, note))
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "message": result.reason,
                "warning": result.warning,
                "contact": result.contact_id,
                "duplicate": result.duplicate,
            }
        )
    else:
        click.echo(("已记录：" if result.ok else "未记录：") + result.reason)
    if not result.ok:
        raise SystemExit(1)


async def _ack(
    config: object,
    warning: str,
    contact_id: str | None,
    division: str | None,
    by: str,
    note: str | None,
) -> AckResult:
    from warnd.policy import Config

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
        return await Engine(ctx).ack_by_officer(
            warning=warning, contact_id=contact_id, division=division, by=by, note=note
        )
    finally:
        await store.close()
