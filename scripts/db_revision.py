"""Write a new Alembic migration for the difference between the migrations and the tables.

Usage: .venv/bin/python scripts/db_revision.py "message"
Builds a scratch SQLite database at the current head, compares it with
``warnd.store.tables`` and writes ``warnd/migrations/versions/NNNN_<slug>.py``. Review it, and
check it on PostgreSQL too (the test suite runs the migrations on both backends).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from warnd.store import schema


def main() -> None:
    message = sys.argv[1] if len(sys.argv) > 1 else "schema change"
    script = ScriptDirectory.from_config(schema.alembic_config())
    number = len(list(script.walk_revisions())) + 1
    rev = f"{number:04d}"
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        with engine.begin() as conn:
            if number > 1:
                command.upgrade(schema.alembic_config(conn), "head")
            cfg = schema.alembic_config(conn)
            command.revision(cfg, message=message, autogenerate=True, rev_id=rev)
    for path in (schema.MIGRATIONS / "versions").glob(f"{rev}_*.py"):
        path.rename(path.with_name(f"{rev}_{slug}.py"))
    print(f"wrote warnd/migrations/versions/{rev}_{slug}.py")
    print(f'now set HEAD = "{rev}" in warnd/store/schema.py')


if __name__ == "__main__":
    main()
