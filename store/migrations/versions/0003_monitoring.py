"""monitoring: breaker bookkeeping on node_health, outcome window index

Circuit breakers keep their whole state in node_health (routing/breaker.py BreakerStatus) so
that every API replica and the worker agree; the health window reads a node's newest outcomes
by (node_id, observed_at, id), an index-only backward scan.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 16:37:18.788387
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("node_health", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("breaker_changed_at", store.base.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("breaker_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("half_open_successes", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("breaker_window_after", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("health_notified_at", store.base.UtcDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_outcomes_node_observed")
        batch_op.create_index(
            "ix_outcomes_node_observed_id", ["node_id", "observed_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_outcomes_node_observed_id")
        batch_op.create_index("ix_outcomes_node_observed", ["node_id", "observed_at"], unique=False)
    with op.batch_alter_table("node_health", schema=None) as batch_op:
        batch_op.drop_column("health_notified_at")
        batch_op.drop_column("breaker_window_after")
        batch_op.drop_column("half_open_successes")
        batch_op.drop_column("breaker_reason")
        batch_op.drop_column("breaker_changed_at")
