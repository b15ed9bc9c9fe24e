"""live catalog: routing rules on nodes and services, and the catalog's revisions

Nodes carry tags, the operations they serve and a volume weight; services their default
constraints by operation. Every change to the catalog is a numbered revision holding the
whole catalog as applied, who applied it and why (store/catalog.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tags", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("operations", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("weight", sa.Float(), server_default="1", nullable=False))
    with op.batch_alter_table("provider_services", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("constraints", sa.JSON(), server_default="{}", nullable=False)
        )
    op.create_table(
        "catalog_revisions",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.String(length=500), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_catalog_revisions")),
    )


def downgrade() -> None:
    op.drop_table("catalog_revisions")
    with op.batch_alter_table("provider_services", schema=None) as batch_op:
        batch_op.drop_column("constraints")
    with op.batch_alter_table("provider_nodes", schema=None) as batch_op:
        batch_op.drop_column("weight")
        batch_op.drop_column("operations")
        batch_op.drop_column("tags")
