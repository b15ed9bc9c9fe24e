"""audit receipts: high-volume writes record a receipt, sealed into the hash chain shortly after

An outcome batch writes its audit receipt in its own transaction without taking the chain's
lock; a sealer folds receipts into the chain (store/receipts.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_receipts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("resource", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_receipts")),
    )
    op.create_index(op.f("ix_audit_receipts_at"), "audit_receipts", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_receipts_at"), table_name="audit_receipts")
    op.drop_table("audit_receipts")
