"""coordinations: the request's businessContext, for revenue protected in analytics

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("coordinations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revenue_impact", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("customer_impact", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("operational_priority", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("time_sensitivity", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("coordinations", schema=None) as batch_op:
        batch_op.drop_column("time_sensitivity")
        batch_op.drop_column("operational_priority")
        batch_op.drop_column("customer_impact")
        batch_op.drop_column("revenue_impact")
