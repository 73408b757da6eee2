"""one row per attempt

The write path at province scale (docs/performance.md): an attempt or a notice is its outbox row
and its own history record (no ``notify``/``update``/``cancel`` event row beside it), an answer
its ack row (no ``ack`` event); ``seq`` orders the three sources at one instant. Reply codes and
confirmation links belong to the call (one per call, not per attempt), and the call names its
latest attempt, so the outbox keeps two indexes (its id, and the partial queue of pending
messages). Stages hand their divisions over in batches (``division.start_due``), instances
heartbeat (``instance``), and SQLite counts ``seq`` in ``counter``. The hot tables lose their
foreign keys (the engine's own writes keep them consistent; on PostgreSQL their per-row checks
were a third of a fan-out).

Rows of an upgraded store are kept: their history events stay in ``event`` (``seq`` = their id,
so that they sort as before) and their outbox and ack rows stay out of the derived history
(``seq`` NULL, ``counted`` false). Messages a dead process had claimed go back to the queue
under their own ids. A call keeps the reply code and link of its latest attempt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 23:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _where(condition: str) -> dict[str, object]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


#: the hot tables' foreign keys, dropped (their per-row checks were a third of a fan-out on
#: PostgreSQL; the engine writes a row only with or after the rows it refers to, deletes none)
_FKS = {
    "division": ("warning_id",),
    "call": ("warning_id", "division_id"),
    "outbox": ("warning_id", "call_id"),
    "ack": ("warning_id", "call_id", "division_id"),
    "event": ("warning_id",),
}
#: names for SQLite's unnamed foreign keys, so that a batch can drop them
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s"}


def _drop_foreign_keys(sqlite: bool) -> None:
    for table, cols in _FKS.items():
        if sqlite:
            with op.batch_alter_table(table, naming_convention=_NAMES) as batch_op:
                for col in cols:
                    batch_op.drop_constraint(f"fk_{table}_{col}", type_="foreignkey")
        else:
            for col in cols:
                op.drop_constraint(f"{table}_{col}_fkey", table, type_="foreignkey")


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"

    op.create_table(
        "instance",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "counter",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )

    # -- call: reply code, link token and latest attempt, from its latest outbox row --------
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_code", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("token", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("last_message", sa.String(), nullable=True))
    latest = (
        "(SELECT o.{col} FROM outbox o WHERE o.call_id = call.id AND o.purpose = 'call'"
        " ORDER BY o.attempt DESC, o.due_at DESC, o.id DESC LIMIT 1)"
    )
    op.execute(
        "UPDATE call SET last_message = {m}, reply_code = {r}, token = {t}".format(
            m=latest.format(col="id"),
            r=latest.format(col="reply_code"),
            t=latest.format(col="token"),
        )
    )
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.drop_index("ix_call_due")
        batch_op.create_index("ix_call_due", ["next_due_at"], **_where("state = 'active'"))
        batch_op.create_index(
            "ix_call_token", ["token"], unique=True, **_where("token IS NOT NULL")
        )

    # -- outbox: one row per attempt -------------------------------------------------------
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("at", _TS, nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE outbox SET at = due_at")
    # claimed by a process that is gone (every instance is stopped for an upgrade): queue them
    # again, under their own ids
    op.execute("UPDATE outbox SET state = 'pending', claimed_by = NULL WHERE state = 'sending'")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("at", existing_type=_TS, nullable=False)
        batch_op.drop_index("ix_outbox_call_id")
        batch_op.drop_index("ix_outbox_to")
        batch_op.drop_index("ix_outbox_warning_id")
        batch_op.drop_index("ix_outbox_due")
        if not sqlite:
            batch_op.drop_constraint("outbox_token_key", type_="unique")
        batch_op.drop_column("reply_code")
        batch_op.drop_column("token")
        batch_op.drop_column("lease_until")
        batch_op.create_index("ix_outbox_pending", ["due_at", "seq"], **_where("state = 'pending'"))

    # -- ack: counted answers are the history's ack events ----------------------------------
    with op.batch_alter_table("ack", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("counted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.drop_index("ix_ack_call_id")
        batch_op.drop_index("ix_ack_warning_id")
        batch_op.create_index("ix_ack_officer", ["warning_id"], **_where("source = 'officer'"))
    with op.batch_alter_table("ack", schema=None) as batch_op:
        batch_op.alter_column("counted", existing_type=sa.Boolean(), server_default=None)

    # -- event: only what has no row of its own; seq keeps the earlier order ----------------
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.drop_column("warning_key")
    op.execute("UPDATE event SET seq = id")

    # -- division: a fired stage's divisions wait here until started ------------------------
    with op.batch_alter_table("division", schema=None) as batch_op:
        batch_op.add_column(sa.Column("start_due", _TS, nullable=True))
        batch_op.create_index("ix_division_start", ["start_due"], **_where("start_due IS NOT NULL"))

    _drop_foreign_keys(sqlite)

    if sqlite:
        op.execute(
            "INSERT INTO counter (name, value)"
            " SELECT 'history', coalesce(max(id), 0) + 1 FROM event"
        )
    else:
        op.execute("CREATE SEQUENCE history_seq INCREMENT BY 1024 MINVALUE 1")
        op.execute("SELECT setval('history_seq', (SELECT coalesce(max(id), 0) + 1 FROM event))")


def downgrade() -> None:
    raise NotImplementedError("schema 0003 cannot be taken back to 0002: restore a backup")
