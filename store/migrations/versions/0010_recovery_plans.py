"""recovery plans in the catalog; how each recovery run ended; when nodes were assessed

provider_services.recovery_plans: the service's named recovery plans (an error report picks
one by recoveryStrategyId). recovery_runs: one row per ended recovery run, its strategy,
duration and the time its first report declared, for resolution estimates and analytics.
provider_services.assessed_at: when the health sweep last assessed the service's nodes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_services", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recovery_plans", sa.JSON(), server_default="{}", nullable=False)
        )
    when = store.base.UtcDateTime(timezone=True)
    with op.batch_alter_table("provider_services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("assessed_at", when, nullable=True))
    op.create_table(
        "recovery_runs",
        sa.Column("run_key", sa.String(length=300), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("started_at", when, nullable=False),
        sa.Column("ended_at", when, nullable=False),
        sa.Column("minutes", sa.Float(), nullable=False),
        sa.Column("declared_minutes", sa.Float(), nullable=True),
        sa.Column("recovery_plan_id", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("run_key", name=op.f("pk_recovery_runs")),
    )
    op.create_index(op.f("ix_recovery_runs_service"), "recovery_runs", ["service"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_recovery_runs_service"), table_name="recovery_runs")
    op.drop_table("recovery_runs")
    with op.batch_alter_table("provider_services", schema=None) as batch_op:
        batch_op.drop_column("assessed_at")
        batch_op.drop_column("recovery_plans")
