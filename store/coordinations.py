"""Recording decisions: the coordination row, its budget charge and the streams it touched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from routing.budget import period_start
from routing.types import BudgetPeriod, RoutingDecision
from store.models import BudgetSpend, Coordination, Emergency, ErrorStream, MonitoringSession
from store.upsert import dialect_insert, insert_ignore


class BudgetExhausted(Exception):
    """The charge would take the service past its budget (or the emergency's cap)."""

    def __init__(self, service: str, detail: str, spent: float | None = None) -> None:
        self.service = service
        self.detail = detail
        self.spent = spent  # the period's spend when refused, so a retry can use the figure
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class Charge:
    """Where a decision's cost was booked."""

    amount: float
    emergency_workflow_id: str | None
    emergency_remaining: float | None = None


def charge_budget(
    session: Session,
    *,
    service: str,
    amount: float,
    period: BudgetPeriod,
    limit: float,
    now: datetime,
    emergency_workflow_id: str | None = None,
) -> Charge:
    """Book `amount` atomically, refusing to go past the limit even under concurrent requests.

    While an emergency is active its cap replaces the normal budget: every decision made under
    the override is charged to the emergency, so "spent under override" is exact.
    """
    if emergency_workflow_id is not None:
        charged = session.execute(
            update(Emergency)
            .where(
                Emergency.workflow_id == emergency_workflow_id,
                Emergency.status == "active",
                Emergency.deadline > now,
                Emergency.spent + amount <= Emergency.max_budget_override,
            )
            .values(spent=Emergency.spent + amount)
            .returning(Emergency.max_budget_override - Emergency.spent)
        ).scalar_one_or_none()
        if charged is not None:
            return Charge(amount, emergency_workflow_id, emergency_remaining=float(charged))
        # The emergency ended or its cap is spent since the snapshot: fall back to the budget.
    start = period_start(period, now)
    insert_ignore(
        session,
        BudgetSpend,
        {
            "service": service,
            "period_start": start,
            "period": period.value,
            "spent": 0.0,
            "decisions": 0,
        },
    )
    result: Any = session.execute(
        update(BudgetSpend)
        .where(
            BudgetSpend.service == service,
            BudgetSpend.period_start == start,
            BudgetSpend.spent + amount <= limit,
        )
        .values(spent=BudgetSpend.spent + amount, decisions=BudgetSpend.decisions + 1)
    )
    if result.rowcount != 1:
        spent = session.scalar(
            select(BudgetSpend.spent).where(
                BudgetSpend.service == service, BudgetSpend.period_start == start
            )
        )
        raise BudgetExhausted(
            service, f"{period.value} budget of {limit:g} for {service!r} is spent", spent
        )
    return Charge(amount, None)


def touch_error_stream(session: Session, *, stream_id: str, service: str, now: datetime) -> None:
    """Register an error stream, or mark it seen again, in one statement."""
    insert = dialect_insert(session, ErrorStream).values(
        stream_id=stream_id,
        service=service,
        status="registered",
        error_count=0,
        first_seen=now,
        last_seen=now,
        sync_count=1,
        cascading_services=[],
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[ErrorStream.stream_id],
            set_={"last_seen": now, "sync_count": ErrorStream.sync_count + 1},
        )
    )


def touch_monitoring_session(
    session: Session, *, session_id: str, service: str, stream_id: str | None, now: datetime
) -> None:
    """Record (or refresh) a real-time monitoring session for a service, in one statement."""
    insert = dialect_insert(session, MonitoringSession).values(
        session_id=session_id,
        service=service,
        stream_id=stream_id,
        active=True,
        touches=1,
        started_at=now,
        last_seen=now,
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[MonitoringSession.session_id],
            set_={"last_seen": now, "active": True, "touches": MonitoringSession.touches + 1},
        )
    )


def coordination_row(
    decision: RoutingDecision,
    *,
    coordination_id: str,
    kind: str,
    service: str,
    operation: str,
    response: dict[str, Any],
    created_at: datetime,
    **extra: Any,
) -> Coordination:
    """The recorded form of a routing decision; `extra` sets the kind-specific columns."""
    return Coordination(
        coordination_id=coordination_id,
        kind=kind,
        service=service,
        operation=operation,
        node_id=decision.node.node_id,
        strategy=decision.strategy.value,
        strategy_reason=decision.strategy_reason,
        estimated_cost=decision.estimated_cost,
        estimated_latency=decision.estimated_latency,
        estimated_success_rate=decision.estimated_success_rate,
        cost_savings=decision.outcome.estimated_cost_savings,
        performance_gain=decision.outcome.estimated_performance_gain,
        confidence_score=decision.confidence_score,
        response=response,
        created_at=created_at,
        **extra,
    )
