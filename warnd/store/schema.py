"""Schema versions: Alembic migrations for SQLite and PostgreSQL.

The code knows the newest revision (``HEAD``; a test checks it against the migration scripts).
An empty database is brought to it on first open; a database at an older revision is refused
with the command to run, because a daemon that silently migrates a shared PostgreSQL under
other running instances could break them. Alembic is imported only when a migration runs, so
that read-only commands start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text

from warnd.core.revision import HEAD  # the newest migration; tests/test_schema.py keeps it honest

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def head() -> str:
    return HEAD


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_head() -> str:
    """The head revision as the migration scripts say (slow: parses every script)."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have one head, found {heads}")
    return str(heads[0])


def is_empty(sync_connection: Any) -> bool:
    return not inspect(sync_connection).get_table_names()


def current(sync_connection: Any) -> str | None:
    if "alembic_version" not in inspect(sync_connection).get_table_names():
        return None
    row = sync_connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row else None


def is_ancestor(revision: str) -> bool:
    """True when ``revision`` is one this code can upgrade from."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return any(r.revision == revision for r in script.walk_revisions())


def upgrade(sync_connection: Any, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(sync_connection), revision)
