"""Typed SQLAlchemy models for the whole domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.base import Base, utcnow

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class ProviderService(Base):
    """A service (stripe, samsara, ...) and its server-side budget."""

    __tablename__ = "provider_services"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    budget_period: Mapped[str] = mapped_column(String(16), default="daily")
    budget_limit: Mapped[float] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # Default constraints by operation: {operation: {allowedRegions: [...], ...}}.
    constraints: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # Recovery plans by id: {planId: {strategy, action, restoreStages, ...}}.
    recovery_plans: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # When the health sweep last assessed the service's nodes (monitoringActive reads it).
    assessed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Operations safe to send twice (a recovery's hedge): [operation, ...].
    idempotent_operations: Mapped[list[str]] = mapped_column(default=list, server_default="[]")


class ServiceConsumer(Base):
    """An internal service of the catalog and the services it uses (its consumer graph)."""

    __tablename__ = "service_consumers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    uses: Mapped[list[str]] = mapped_column(default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)


class IncidentRow(Base):
    """A cross-stream incident as its workflow last recorded it (docs/INCIDENTS.md)."""

    __tablename__ = "incidents"

    incident_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | ended
    phase: Mapped[str] = mapped_column(String(32), default="open")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    severity: Mapped[str] = mapped_column(String(16), default="low")
    customer_impact: Mapped[str] = mapped_column(String(50), default="")
    revenue_at_risk: Mapped[float] = mapped_column(Float, default=0.0)
    expected_resolution_at: Mapped[datetime | None] = mapped_column(nullable=True)
    failed_nodes: Mapped[list[str]] = mapped_column(default=list)
    services: Mapped[list[str]] = mapped_column(default=list)
    cascading: Mapped[list[str]] = mapped_column(default=list)
    blast_radius: Mapped[list[str]] = mapped_column(default=list)
    members: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Every stream correlated into it: members, and errors whose recovery is still joining.
    streams: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CatalogRevision(Base):
    """One applied change of the catalog: the whole catalog after it, who and why."""

    __tablename__ = "catalog_revisions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    author: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(500))
    changes: Mapped[list[str]] = mapped_column(default=list)  # one line per change
    content: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the catalog as a file


class ProviderNodeRow(Base):
    """One provider node with its catalog (baseline) figures."""

    __tablename__ = "provider_nodes"

    node_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    service: Mapped[str] = mapped_column(ForeignKey("provider_services.name"), index=True)
    provider_name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(64))
    success_rate: Mapped[float] = mapped_column(Float)
    cost_per_request: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    health_score: Mapped[float] = mapped_column(Float)
    emergency_only: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    latency_slo_ms: Mapped[float] = mapped_column(Float, default=2000.0)
    error_rate_slo: Mapped[float] = mapped_column(Float, default=5.0)
    position: Mapped[int] = mapped_column(Integer, default=0)
    tags: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    operations: Mapped[list[str] | None] = mapped_column(JSON, nullable=True, default=None)
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")


class NodeHealthRow(Base):
    """Live health of a node: figures, breaker state and prediction, shared by all processes."""

    __tablename__ = "node_health"

    node_id: Mapped[str] = mapped_column(ForeignKey("provider_nodes.node_id"), primary_key=True)
    health_score: Mapped[float] = mapped_column(Float)
    success_rate: Mapped[float] = mapped_column(Float)
    latency_p50_ms: Mapped[float] = mapped_column(Float)
    latency_p95_ms: Mapped[float] = mapped_column(Float)
    breaker_state: Mapped[str] = mapped_column(String(16), default="CLOSED")
    breaker_forced: Mapped[str | None] = mapped_column(String(16), nullable=True)
    breaker_trips: Mapped[int] = mapped_column(Integer, default=0)
    breaker_open_until: Mapped[datetime | None] = mapped_column(nullable=True)
    failure_probability: Mapped[float] = mapped_column(Float, default=0.0)
    observations: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Breaker bookkeeping of routing/breaker.py (BreakerStatus), so every process agrees.
    breaker_changed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    breaker_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    half_open_successes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    breaker_window_after: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Last snapshot NOTIFY for a health drift of this node: such NOTIFYs are spaced out.
    health_notified_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Share of first attempts offered while the node refuses for rate limiting, and when it
    # last moved (routing/admission.py Admission); 1 and NULL for a node that never refused.
    admitted_share: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    admitted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Calls per second the node took while refusing, and when that was last seen
    # (Admission.capacity); NULL when not known.
    rate_capacity: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_capacity_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Coordination(Base):
    """A recorded routing decision (execute-coordination, backend error or emergency)."""

    __tablename__ = "coordinations"

    coordination_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # standard | backend_error | emergency
    service: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    node_id: Mapped[str] = mapped_column(String(100))
    strategy: Mapped[str] = mapped_column(String(32))
    strategy_reason: Mapped[str] = mapped_column(String(32), default="")
    estimated_cost: Mapped[float] = mapped_column(Float)
    estimated_latency: Mapped[float] = mapped_column(Float)
    estimated_success_rate: Mapped[float] = mapped_column(Float)
    cost_savings: Mapped[float] = mapped_column(Float, default=0.0)
    performance_gain: Mapped[float] = mapped_column(Float, default=0.0)
    confidence_score: Mapped[float] = mapped_column(Float)
    backend_integrated: Mapped[bool] = mapped_column(Boolean, default=False)
    error_stream_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    emergency_workflow_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    coordination_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # The request's businessContext (execute-coordination), None when it was not sent.
    revenue_impact: Mapped[float | None] = mapped_column(Float, nullable=True)
    customer_impact: Mapped[str | None] = mapped_column(String(16), nullable=True)
    operational_priority: Mapped[str | None] = mapped_column(String(16), nullable=True)
    time_sensitivity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    response: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_coordinations_service_created", "service", "created_at"),
        Index("ix_coordinations_created", "created_at"),
    )


class ErrorStream(Base):
    """An error stream reported by a backend agent; one recovery workflow per stream."""

    __tablename__ = "error_streams"

    stream_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32), default="registered")
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    sync_count: Mapped[int] = mapped_column(Integer, default=0)
    workflow_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    recovery_strategy_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    monitoring_session_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    cascading_services: Mapped[list[str]] = mapped_column(default=list)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class RecoveryRun(Base):
    """How one run of a recovery workflow ended: its strategy, how long it took and how long
    its first report said it may take (resolution estimates and analytics read these)."""

    __tablename__ = "recovery_runs"

    run_key: Mapped[str] = mapped_column(String(300), primary_key=True)  # workflow id/run id
    workflow_id: Mapped[str] = mapped_column(String(200))
    service: Mapped[str] = mapped_column(String(64), index=True)
    strategy: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime] = mapped_column()
    minutes: Mapped[float] = mapped_column(Float)
    declared_minutes: Mapped[float | None] = mapped_column(Float, nullable=True)
    recovery_plan_id: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ErrorEvent(Base):
    """One error report of a stream, stored once per (workflow, activity) key."""

    __tablename__ = "error_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(300), unique=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("error_streams.stream_id"), index=True)
    error_type: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(100), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    failed_providers: Mapped[list[str]] = mapped_column(default=list)
    revenue_at_risk: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MonitoringSession(Base):
    """A real-time monitoring session requested for a service (and optionally a stream)."""

    __tablename__ = "monitoring_sessions"

    session_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    stream_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    touches: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class RoutingOverrideRow(Base):
    """A recovery workflow's hold on a service's routing; gone when the recovery ends."""

    __tablename__ = "routing_overrides"

    workflow_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    excluded_nodes: Mapped[list[str]] = mapped_column(default=list)
    strategy: Mapped[str | None] = mapped_column(String(32), nullable=True)
    restore_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    # The redundancy plan's standby node (routing/redundancy.py), None for other plans.
    standby_node: Mapped[str | None] = mapped_column(String(100), nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Emergency(Base):
    """An emergency budget override for one service with its deadline."""

    __tablename__ = "emergencies"

    # One row per emergency: the workflow id `emergency:{service}` is reused by later ones.
    coordination_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200), index=True)
    service: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | ended
    emergency_reason: Mapped[str] = mapped_column(Text)
    business_justification: Mapped[str] = mapped_column(Text)
    max_budget_override: Mapped[float] = mapped_column(Float)
    spent: Mapped[float] = mapped_column(Float, default=0.0)
    selected_node_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        # At most one active emergency per service, enforced by the database.
        Index(
            "uq_emergencies_active_service",
            "service",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )


class BudgetSpend(Base):
    """Money spent by a service in one budget period (normal budget only)."""

    __tablename__ = "budget_spend"

    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(16))
    spent: Mapped[float] = mapped_column(Float, default=0.0)
    decisions: Mapped[int] = mapped_column(Integer, default=0)


class Outcome(Base):
    """What happened when a caller used a node: reported after the call."""

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    coordination_id: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    node_id: Mapped[str] = mapped_column(String(100))
    success: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(100), nullable=True)
    observed_at: Mapped[datetime] = mapped_column(default=utcnow)

    # The health window reads the newest outcomes of a node: an index-only backward scan.
    __table_args__ = (Index("ix_outcomes_node_observed_id", "node_id", "observed_at", "id"),)


class Event(Base):
    """The transactional outbox: written in the same transaction as the change it reports.

    Ids are commit-ordered, drawn from EventLogHead when the transaction commits
    (store/events.py), so readers resume with `id > last seen` and miss nothing.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    service: Mapped[str | None] = mapped_column(String(64), nullable=True)
    coordination_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    workflow_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventLogHead(Base):
    """The one counter row event ids are drawn from; its lock orders publishers by commit."""

    __tablename__ = "event_log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class AppliedEffect(Base):
    """Idempotency ledger: one row per (workflow id, activity key) whose effect is applied."""

    __tablename__ = "applied_effects"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditReceipt(Base):
    """A high-volume write's audit record, until sealed into the chain (store/receipts.py)."""

    __tablename__ = "audit_receipts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    principal: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str] = mapped_column(String(300))
    request_id: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AuditEntry(Base):
    """An append-only audit record, hash-chained to the previous entry."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    principal: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str] = mapped_column(String(300))
    request_id: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),)
