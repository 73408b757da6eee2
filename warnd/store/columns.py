"""What kind of value each column holds, read once from the table definitions.

The backends bind and read values by kind: ``ts`` (``UTCDateTime``: UTC text on SQLite,
``timestamptz`` on PostgreSQL), ``json`` (text on SQLite, ``json`` on PostgreSQL), ``bool``,
``int``, ``bigint``, ``text``, ``bytes``. ``pg_type`` names the PostgreSQL type of a column for
array parameters (``unnest``).
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import JSON, BigInteger, Boolean, Integer, LargeBinary

from warnd.store.tables import UTCDateTime  # also registers every table on the metadata

_PG = {
    "ts": "timestamptz",
    "json": "json",
    "bool": "boolean",
    "int": "integer",
    "bigint": "bigint",
    "text": "text",
    "bytes": "bytea",
}


@cache
def kinds(table: str) -> dict[str, str]:
    """Column name → kind, for ``table``."""
    from sqlmodel import SQLModel

    out: dict[str, str] = {}
    for col in SQLModel.metadata.tables[table].columns:
        t = col.type
        if isinstance(t, UTCDateTime):
            kind = "ts"
        elif isinstance(t, JSON):
            kind = "json"
        elif isinstance(t, Boolean):
            kind = "bool"
        elif isinstance(t, BigInteger):
            kind = "bigint"
        elif isinstance(t, Integer):
            kind = "int"
        elif isinstance(t, LargeBinary):
            kind = "bytes"
        else:
            kind = "text"
        out[col.name] = kind
    return out


def pg_type(kind: str) -> str:
    return _PG[kind]
