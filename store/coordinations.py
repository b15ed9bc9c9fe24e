"""Recorded coordinations: one record type for a decision, a recovery's route and an emergency's
activation; and monitoring-session touches outside the hot path."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from routing.types import BusinessContext, RoutingDecision
from store.models import Coordination, MonitoringSession
from store.upsert import dialect_insert


class CoordinationKind(StrEnum):
    """What produced a coordination row."""

    standard = "standard"  # execute-coordination
    backend_error = "backend_error"  # a recovery's route for a reported error
    emergency = "emergency"  # an emergency override's activation


@dataclass(frozen=True, slots=True)
class CoordinationRecord:
    """One row of `coordinations`, complete: the store writes it as it is."""

    coordination_id: str
    kind: CoordinationKind
    service: str
    operation: str
    node_id: str
    strategy: str
    strategy_reason: str
    estimated_cost: float
    estimated_latency: float
    estimated_success_rate: float
    confidence_score: float
    response: dict[str, Any]
    created_at: datetime
    cost_savings: float = 0.0
    performance_gain: float = 0.0
    request_id: str | None = None
    backend_integrated: bool = False
    error_stream_id: str | None = None
    emergency_workflow_id: str | None = None
    coordination_ms: float = 0.0
    revenue_impact: float | None = None
    customer_impact: str | None = None
    operational_priority: str | None = None
    time_sensitivity: str | None = None

    @classmethod
    def of_decision(
        cls,
        decision: RoutingDecision,
        *,
        coordination_id: str,
        kind: CoordinationKind,
        service: str,
        operation: str,
        response: dict[str, Any],
        created_at: datetime,
        **columns: Any,
    ) -> CoordinationRecord:
        """The record of a routing decision; `columns` sets the kind-specific columns."""
        return cls(
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
            **columns,
        )

    @staticmethod
    def business_columns(context: BusinessContext) -> dict[str, Any]:
        """The columns recording a request's businessContext."""
        return {
            "revenue_impact": context.revenue_impact,
            "customer_impact": _value(context.customer_impact),
            "operational_priority": _value(context.operational_priority),
            "time_sensitivity": _value(context.time_sensitivity),
        }

    def values(self) -> dict[str, Any]:
        """Column values, for multi-row inserts."""
        values = {name: getattr(self, name) for name in _COLUMNS}
        values["kind"] = self.kind.value
        return values

    def row(self) -> Coordination:
        """The record as a model, for a session."""
        return Coordination(**self.values())


_COLUMNS = tuple(f.name for f in fields(CoordinationRecord))


def _value(choice: StrEnum | None) -> str | None:
    return None if choice is None else choice.value


def record_coordination(*, session: Session, record: CoordinationRecord) -> None:
    """Add the coordination to the session's transaction."""
    session.add(record.row())


def touch_monitoring_session(
    *, session: Session, session_id: str, service: str, stream_id: str | None, now: datetime
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
