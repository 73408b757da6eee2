"""Schema migrations: a new store is brought to head; the daemon refuses any other schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from schema_rig import execute, schema_diff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from warnd.cli import main
from warnd.core.errors import StoreError
from warnd.store import Store, async_url, schema


async def test_new_store_is_at_head_and_matches_the_tables(store_url: str) -> None:
    store = await Store.open(store_url)
    try:
        assert await store.revision() == schema.head()
        assert await schema_diff(store_url) == []  # no table/column/index without a migration
    finally:
        await store.close()


async def test_newer_schema_is_refused(store_url: str) -> None:
    store = await Store.open(store_url)
    await store.close()
    await execute(store_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StoreError, match="newer than this warnd"):
        await Store.open(store_url)


async def revision_of(url: str) -> str | None:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(schema.current)
    finally:
        await engine.dispose()


async def test_older_schema_is_refused_with_the_command_then_upgraded(store_url: str) -> None:
    """A store made by the first release (0001) is refused, then `db upgrade` migrates it for
    real: rows kept, and the schema is then exactly what the tables say (indexes included)."""
    store = await Store.open(store_url, schema_head="0001")  # as the first release made it
    await store.close()
    assert await revision_of(store_url) == "0001"
    await execute(
        store_url,
        "INSERT INTO warning (key, sender, identifier, drill, state, area, arrived_at,"
        " updated_at) VALUES ('k1', 's', 'k1', false, 'active', '[]',"
        " '2025-07-01 00:00:00', '2025-07-01 00:00:00')",
    )
    with pytest.raises(StoreError, match=r"0001 is older than this warnd .*warnd db upgrade"):
        await Store.open(store_url)
    assert await revision_of(store_url) == "0001"  # the daemon never migrates by itself
    store = await Store.open(store_url, migrate=True)
    try:
        assert await store.revision() == schema.HEAD
        async with store.read() as s:
            assert (await s.execute(text("SELECT key FROM warning"))).scalars().all() == ["k1"]
        assert await schema_diff(store_url) == []
    finally:
        await store.close()


def test_cli_db_upgrade_and_status(tmp_path: Path) -> None:
    cfg = tmp_path / "warnd.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "w.db"}"\n', encoding="utf-8")
    runner = CliRunner()
    before = runner.invoke(main, ["db", "status", "--json", "--config", str(cfg)])
    assert before.exit_code == 1 and '"current": false' in before.output
    up = runner.invoke(main, ["db", "upgrade", "--config", str(cfg)])
    assert up.exit_code == 0, up.output
    after = runner.invoke(main, ["db", "status", "--json", "--config", str(cfg)])
    assert after.exit_code == 0 and f'"code": "{schema.head()}"' in after.output


def test_code_head_is_the_migrations_head() -> None:
    assert schema.script_head() == schema.HEAD
