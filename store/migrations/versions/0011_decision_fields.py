"""The decision's fields: the request's businessContext on coordinations (revenue protected
in analytics), idempotent operations in the catalog and a redundancy plan's standby on the
routing override (its hedge and first retry target)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("coordinations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revenue_impact", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("customer_impact", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("operational_priority", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("time_sensitivity", sa.String(length=16), nullable=True))
    with op.batch_alter_table("provider_services", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("idempotent_operations", sa.JSON(), server_default="[]", nullable=False)
        )
    with op.batch_alter_table("routing_overrides", schema=None) as batch_op:
        batch_op.add_column(sa.Column("standby_node", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("routing_overrides", schema=None) as batch_op:
        batch_op.drop_column("standby_node")
    with op.batch_alter_table("provider_services", schema=None) as batch_op:
        batch_op.drop_column("idempotent_operations")
    with op.batch_alter_table("coordinations", schema=None) as batch_op:
        batch_op.drop_column("time_sensitivity")
        batch_op.drop_column("operational_priority")
        batch_op.drop_column("customer_impact")
        batch_op.drop_column("revenue_impact")
