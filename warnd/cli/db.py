"""``warnd db``: the store's schema (Alembic migrations on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import click

from warnd.cli import main
from warnd.cli.common import config_option, emit_json, guarded, json_option, load
from warnd.store import Store, schema


@main.group("db")
def db() -> None:
    """数据库 (the store's schema)."""


@db.command("upgrade")
@config_option
@json_option
@guarded
def upgrade_cmd(config_path: str | None, as_json: bool) -> None:
    """升级数据库结构 (bring the store to this warnd's schema; stop every instance first)."""
    config = load(config_path, required=True)
    assert config is not None

    async def run() -> tuple[str | None, str | None]:
        store = await Store.open(config.store_url, create=False, migrate=True)
        try:
            return await store.revision(), schema.head()
        finally:
            await store.close()

    at, head = asyncio.run(run())
    if as_json:
        emit_json({"store": at, "code": head, "current": at == head})
        return
    click.echo(f"数据库结构已是最新 (schema at {at}, code {head})")


@db.command("status")
@config_option
@json_option
@guarded
def status_cmd(config_path: str | None, as_json: bool) -> None:
    """查看数据库结构版本 (the store's schema revision and the code's)."""
    config = load(config_path, required=True)
    assert config is not None

    async def run() -> str | None:
        from sqlalchemy.ext.asyncio import create_async_engine

        from warnd.store import async_url

        engine = create_async_engine(async_url(config.store_url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(schema.current)
        finally:
            await engine.dispose()

    at, head = asyncio.run(run()), schema.head()
    if as_json:
        emit_json({"store": at, "code": head, "current": at == head})
    else:
        click.echo(
            f"数据库 {at or '空 (empty)'}，代码 {head}"
            + ("" if at == head else "：需要 warnd db upgrade")
        )
    if at != head:
        raise SystemExit(1)
