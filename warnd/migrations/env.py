"""Alembic environment: migrations run on a connection that warnd hands over (sync side)."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

import warnd.store.tables  # noqa: F401 - registers the tables on SQLModel.metadata
from warnd.store.tables import UTCDateTime

connection = context.config.attributes.get("connection")
if connection is None:  # warnd always passes one: `warnd db upgrade`, or a first start
    raise RuntimeError("run migrations through `warnd db upgrade`")


def render_item(type_: str, obj: Any, _ctx: Any) -> str | Literal[False]:
    """Migrations spell warnd's UTC datetime as the plain type it stores."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, AutoString):
        return "sa.String()"
    return False


context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    render_item=render_item,
    compare_type=False,
)
with context.begin_transaction():
    context.run_migrations()
