"""Schema versions: Alembic migrations for SQLite and PostgreSQL.

The code knows the newest revision (``head``). An empty database is brought to it on first
open; a database at an older revision is refused with the command to run, because a daemon
that silently migrates a shared PostgreSQL under other running instances could break them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(connection: Any = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have one head, found {heads}")
    return heads[0]


def current(sync_connection: Any) -> str | None:
    return MigrationContext.configure(sync_connection).get_current_revision()


def is_empty(sync_connection: Any) -> bool:
    return not inspect(sync_connection).get_table_names()


def is_ancestor(revision: str) -> bool:
    """True when ``revision`` is one this code can upgrade from."""
    script = ScriptDirectory.from_config(alembic_config())
    return any(r.revision == revision for r in script.walk_revisions())


def upgrade(sync_connection: Any) -> None:
    command.upgrade(alembic_config(sync_connection), "head")
