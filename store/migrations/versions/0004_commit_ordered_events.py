"""commit-ordered event ids: the event_log_head counter replaces the events sequence

A sequence hands out ids in the order transactions ask, not the order they commit, so a
reader resuming after id N could miss a smaller id committed later. Publishers now draw ids
from one counter row at commit (store/events.py); it starts after the newest event.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 19:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_log_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_event_log_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_log_head")),
    )
    op.execute("INSERT INTO event_log_head (id, last) SELECT 1, COALESCE(MAX(id), 0) FROM events")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events ALTER COLUMN id DROP DEFAULT")
        op.execute("DROP SEQUENCE IF EXISTS events_id_seq")
    # SQLite: events.id is the rowid, which takes the ids given as they are.


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE events_id_seq OWNED BY events.id")
        op.execute(
            "SELECT setval('events_id_seq', GREATEST("
            "(SELECT COALESCE(MAX(last), 0) FROM event_log_head),"
            " (SELECT COALESCE(MAX(id), 0) FROM events)) + 1, false)"
        )
        op.execute("ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq')")
    op.drop_table("event_log_head")
