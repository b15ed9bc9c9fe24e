"""emergencies keyed by coordination id

The workflow id `emergency:{service}` is reused by every later emergency of the service, so it
cannot be the primary key; the coordination id (unique per emergency) is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 16:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    # The partial index is dropped and recreated around the batch copy: SQLite reflection
    # would not carry its WHERE clause into the rebuilt table.
    with op.batch_alter_table("emergencies", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_emergencies_active_service", sqlite_where=_ACTIVE, postgresql_where=_ACTIVE
        )
    with op.batch_alter_table("emergencies", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_emergencies_coordination_id"), type_="unique")
        batch_op.drop_constraint(op.f("pk_emergencies"), type_="primary")
        batch_op.create_primary_key(op.f("pk_emergencies"), ["coordination_id"])
        batch_op.create_index(
            batch_op.f("ix_emergencies_workflow_id"), ["workflow_id"], unique=False
        )
    with op.batch_alter_table("emergencies", schema=None) as batch_op:
        batch_op.create_index(
            "uq_emergencies_active_service",
            ["service"],
            unique=True,
            sqlite_where=_ACTIVE,
            postgresql_where=_ACTIVE,
        )


def downgrade() -> None:
    with op.batch_alter_table("emergencies", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_emergencies_active_service", sqlite_where=_ACTIVE, postgresql_where=_ACTIVE
        )
    with op.batch_alter_table("emergencies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_emergencies_workflow_id"))
        batch_op.drop_constraint(op.f("pk_emergencies"), type_="primary")
        batch_op.create_primary_key(op.f("pk_emergencies"), ["workflow_id"])
        batch_op.create_unique_constraint(
            op.f("uq_emergencies_coordination_id"), ["coordination_id"]
        )
    with op.batch_alter_table("emergencies", schema=None) as batch_op:
        batch_op.create_index(
            "uq_emergencies_active_service",
            ["service"],
            unique=True,
            sqlite_where=_ACTIVE,
            postgresql_where=_ACTIVE,
        )
