"""Shared test setup.

Tests import the builders in ``tests/factory.py`` by name. The ``store_url`` fixture runs a test
once per store backend: SQLite always, PostgreSQL when ``WARND_TEST_PG_URL`` points at a server.

What the suite needs beyond a fresh clone is optional, and says so: a test that needs PostgreSQL
(``WARND_TEST_PG_URL``), headless Chromium or the external CAP corpus (``../shared/cap-corpus``,
the suite in ``tests/corpus/``) is skipped with a one-line reason when that part is missing —
unless ``WARND_REQUIRE_PG=1`` / ``WARND_REQUIRE_CHROMIUM=1`` / ``WARND_REQUIRE_CORPUS=1`` make a
missing one an error (``.ci/run`` sets all three for its full run). docs/testing.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).parent))

from samples import CORPUS

PG_URL = os.environ.get("WARND_TEST_PG_URL") or None
BACKENDS = ["sqlite", "postgresql"]


def required(part: str) -> bool:
    """``WARND_REQUIRE_<PART>=1``: a missing part is an error, not a skip."""
    return os.environ.get(f"WARND_REQUIRE_{part}") == "1"


def find_chromium() -> str | None:
    """Headless Chromium's binary; ``WARND_TEST_CHROMIUM`` names one (``none``: act as absent)."""
    named = os.environ.get("WARND_TEST_CHROMIUM")
    if named is not None:
        return None if named.strip().lower() in ("", "none") else named
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = find_chromium()
MISSING = {
    "PG": None if PG_URL else "PostgreSQL: WARND_TEST_PG_URL is not set",
    "CHROMIUM": None if CHROMIUM else "headless Chromium not found (apt-get install chromium)",
    "CORPUS": None if CORPUS.is_dir() else f"CAP corpus not found at {CORPUS}",
}
for _part, _why in MISSING.items():
    if _why is not None and required(_part):
        raise RuntimeError(f"WARND_REQUIRE_{_part}=1 but {_why}")


def pg_url() -> str:
    """The PostgreSQL test server's URL; skips the test (one reason for all) without one."""
    if PG_URL is None:
        pytest.skip(f"{MISSING['PG']} (WARND_REQUIRE_PG=1 makes this an error)")
    return PG_URL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a PostgreSQL server its variants are marked skipped (the summary folds them into
    one line per file) rather than vanishing."""
    if PG_URL is not None:
        return
    skip = pytest.mark.skip(reason=f"{MISSING['PG']} (WARND_REQUIRE_PG=1 makes this an error)")
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgresql" in callspec.params.values():
            item.add_marker(skip)


def chromium() -> str:
    """Headless Chromium's binary; skips the test without one."""
    if CHROMIUM is None:
        pytest.skip(f"{MISSING['CHROMIUM']} (WARND_REQUIRE_CHROMIUM=1 makes this an error)")
    return CHROMIUM


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
    base = pg_url()
    url = await fresh_pg_database(base)
    try:
        yield url
    finally:
        await drop_pg_database(base, url)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands configure structlog for the process; give every test the defaults back (and
    no library-log handler or throttle state left from another test's event loop)."""
    yield
    structlog.reset_defaults()
    from warnd.edges import logs

    logs.reset()
    logs.set_timezone(None)


# The external corpus is an extra suite: without the folder its modules are not collected and
# one test (tests/corpus/test_corpus_suite.py) says why.
collect_ignore_glob = [] if MISSING["CORPUS"] is None else ["corpus/test_*_corpus.py"]


async def copy_pg_database(base_url: str, url: str) -> str:
    """A new PostgreSQL database on the server of ``base_url``: a copy of ``url``'s (its URL)."""
    import asyncpg

    name = f"warnd_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{url.rsplit("/", 1)[1]}"')
    finally:
        await conn.close()
    return base_url.rsplit("/", 1)[0] + "/" + name
