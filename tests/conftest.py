"""Shared test setup.

Tests import the builders in ``tests/factory.py`` by name. The ``store_url`` fixture runs a test
once per store backend: SQLite always, PostgreSQL when ``WARND_TEST_PG_URL`` points at a server
(``.ci/run`` starts one and sets ``WARND_REQUIRE_PG=1``, so CI cannot silently drop it).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).parent))

PG_URL = os.environ.get("WARND_TEST_PG_URL")
if os.environ.get("WARND_REQUIRE_PG") == "1" and not PG_URL:
    raise RuntimeError("WARND_REQUIRE_PG=1 but WARND_TEST_PG_URL is not set")

BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


async def fresh_pg_database(base_url: str) -> str:
    """Create an empty database on the test server; return its URL."""
    import asyncpg

    name = f"warnd_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base_url.rsplit("/", 1)[0] + "/" + name


async def drop_pg_database(base_url: str, url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty store, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warnd.db'}"
        return
    assert PG_URL is not None
    url = await fresh_pg_database(PG_URL)
    try:
        yield url
    finally:
        await drop_pg_database(PG_URL, url)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands configure structlog for the process; give every test the defaults back (and
    no library-log handler or throttle state left from another test's event loop)."""
    yield
    structlog.reset_defaults()
    from warnd import logs

    logs.reset()
