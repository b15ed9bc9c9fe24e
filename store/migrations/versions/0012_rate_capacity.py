"""rate capacity: the calls per second a rate-limited node was seen to take, on node_health

routing/admission.py keeps, per node, the capacity its refusals showed (the calls it answered
in a second in which it also refused) and when it was last seen; every API replica caps the
calls it sends the node per second at it (routing/headroom.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("node_health", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_capacity", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("rate_capacity_at", store.base.UtcDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("node_health", schema=None) as batch_op:
        batch_op.drop_column("rate_capacity_at")
        batch_op.drop_column("rate_capacity")
