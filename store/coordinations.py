"""The recorded form of a routing decision, and monitoring-session touches outside the hot path."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from routing.types import RoutingDecision
from store.models import Coordination, MonitoringSession
from store.upsert import dialect_insert


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


def coordination_row(decision: RoutingDecision, **columns: Any) -> Coordination:
    """The recorded form of a routing decision as a model (see coordination_values)."""
    return Coordination(**coordination_values(decision, **columns))


def coordination_values(
    decision: RoutingDecision,
    *,
    coordination_id: str,
    kind: str,
    service: str,
    operation: str,
    response: dict[str, Any],
    created_at: datetime,
    **extra: Any,
) -> dict[str, Any]:
    """The column values of a recorded decision; `extra` sets the kind-specific columns."""
    return dict(
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
