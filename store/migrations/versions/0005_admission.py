"""admission: a rate-limited node's admitted share of first attempts on node_health

routing/admission.py keeps, per node, the share of first attempts offered while the provider
refuses calls for rate limiting and when it last moved; every process reads it from here.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("node_health", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admitted_share", sa.Float(), server_default="1", nullable=False)
        )
        batch_op.add_column(
            sa.Column("admitted_at", store.base.UtcDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("node_health", schema=None) as batch_op:
        batch_op.drop_column("admitted_at")
        batch_op.drop_column("admitted_share")
