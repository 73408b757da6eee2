"""fewer indexes on the hot tables

A province-wide escalation writes ~100,000 call and outbox rows per tick, and every index is
written each time: drop the ones no query uses (outbox.contact_id, outbox.reply_code) or that
another index already serves (call.division_id, division.warning_id: leading columns of
unique constraints), and let one (warning_id, contact_id) index replace call's two.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 06:10:45.547988
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_contact_id"))
        batch_op.drop_index(batch_op.f("ix_call_division_id"))
        batch_op.drop_index(batch_op.f("ix_call_warning_id"))
        batch_op.create_index("ix_call_warning_contact", ["warning_id", "contact_id"], unique=False)

    with op.batch_alter_table("division", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_division_warning_id"))

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_contact_id"))
        batch_op.drop_index(batch_op.f("ix_outbox_reply_code"))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_reply_code"), ["reply_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_contact_id"), ["contact_id"], unique=False)

    with op.batch_alter_table("division", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_division_warning_id"), ["warning_id"], unique=False)

    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.drop_index("ix_call_warning_contact")
        batch_op.create_index(batch_op.f("ix_call_warning_id"), ["warning_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_call_division_id"), ["division_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_call_contact_id"), ["contact_id"], unique=False)
