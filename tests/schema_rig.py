"""The schema's test helpers: the difference between a database and the table definitions,
one statement on a store."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from warnd.store import async_url


async def schema_diff(url: str) -> list[object]:
    """What the database has that the table definitions do not say, or the other way round."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:

            def diff(sync_conn: object) -> list[object]:
                ctx = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
                return list(compare_metadata(ctx, SQLModel.metadata))

            return await conn.run_sync(diff)
    finally:
        await engine.dispose()


async def execute(url: str, sql: str) -> None:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()
