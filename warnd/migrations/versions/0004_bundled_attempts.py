"""bundled attempts

Bundling (contracts §8): a person's attempts on several warnings due together go out as one
message. Each attempt keeps its own outbox row (its own history record); the rows of one
message carry the same ``bundle`` (the id of the row that is sent: the lead), and the others
are never sent themselves (state ``bundled``). An answer to any of them answers all, found by
the partial index on ``bundle`` (only bundled rows are in it). Rows of an upgraded store are
none of them bundled (``bundle`` NULL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _where(condition: str) -> dict[str, object]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bundle", sa.String(), nullable=True))
        batch_op.create_index("ix_outbox_bundle", ["bundle"], **_where("bundle IS NOT NULL"))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_bundle")
        batch_op.drop_column("bundle")
