"""The store schema this code expects, importable without SQLAlchemy or Alembic.

``warnd.store.schema`` (the migrations) and ``warnd.desk.views.reader`` (the duty desk's read-only
path, which must start fast) both check a store against it.
"""

from __future__ import annotations

#: the newest migration in warnd/migrations/versions (tests/test_schema.py keeps this honest)
HEAD = "0004"
