"""Schema migrations: a new store is brought to head; the daemon refuses any other schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import text
from sqlmodel import SQLModel

from warnd.cli import main
from warnd.errors import StoreError
from warnd.store import Store, schema


async def test_new_store_is_at_head_and_matches_the_tables(store_url: str) -> None:
    store = await Store.open(store_url)
    try:
        assert await store.revision() == schema.head()
        async with store._write.connect() as conn:

            def diff(sync_conn: object) -> list[object]:
                ctx = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
                return list(compare_metadata(ctx, SQLModel.metadata))

            assert await conn.run_sync(diff) == []  # no table/column/index without a migration
    finally:
        await store.close()


async def test_newer_schema_is_refused(store_url: str) -> None:
    store = await Store.open(store_url)
    async with store.write() as s:
        await s.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await store.close()
    with pytest.raises(StoreError, match="newer than this warnd"):
        await Store.open(store_url)


async def test_older_schema_is_refused_with_the_command_then_upgraded(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await Store.open(store_url)
    await store.close()
    # pretend this code is one migration ahead of the store
    monkeypatch.setattr(schema, "head", lambda: "0002")
    upgraded: list[bool] = []
    monkeypatch.setattr(schema, "upgrade", lambda conn: upgraded.append(True))
    with pytest.raises(StoreError, match=r"older than this warnd .*warnd db upgrade"):
        await Store.open(store_url)
    assert upgraded == []  # the daemon never migrates by itself
    store = await Store.open(store_url, migrate=True)
    await store.close()
    assert upgraded == [True]


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
