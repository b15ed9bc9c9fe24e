"""Read the store into a RoutingSnapshot: catalog, live health, overrides, emergencies, budgets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from routing.budget import period_start
from routing.types import (
    BreakerState,
    BudgetPeriod,
    BudgetState,
    Constraints,
    EmergencyState,
    IncidentGuard,
    NodeHealth,
    ProviderNode,
    RoutingOverride,
    RoutingSnapshot,
    ServiceRules,
    Strategy,
)
from store.models import (
    BudgetSpend,
    CatalogRevision,
    Emergency,
    IncidentRow,
    NodeHealthRow,
    ProviderNodeRow,
    ProviderService,
    RoutingOverrideRow,
    ServiceConsumer,
)


def load_snapshot(
    session: Session, now: datetime, version: int = 0, service: str | None = None
) -> RoutingSnapshot:
    """Everything routing needs, read in one transaction; only `service`'s part when given."""
    service_query = select(ProviderService).order_by(ProviderService.position)
    node_query = select(ProviderNodeRow).order_by(ProviderNodeRow.service, ProviderNodeRow.position)
    health_query = select(NodeHealthRow)
    if service is not None:
        service_query = service_query.where(ProviderService.name == service)
        node_query = node_query.where(ProviderNodeRow.service == service)
        health_query = health_query.join(
            ProviderNodeRow, ProviderNodeRow.node_id == NodeHealthRow.node_id
        ).where(ProviderNodeRow.service == service)
    services = session.scalars(service_query).all()
    rows = session.scalars(node_query).all()
    by_service: dict[str, list[ProviderNode]] = {s.name: [] for s in services}
    for row in rows:
        by_service.setdefault(row.service, []).append(node_from_row(row))
    health = load_health(session, health_query)
    return RoutingSnapshot(
        nodes={name: tuple(nodes) for name, nodes in by_service.items()},
        health=health,
        overrides=load_overrides(session, service),
        emergencies=load_emergencies(session, now, service),
        budgets=load_budgets(session, services, now),
        version=version,
        rules={
            s.name: service_rules(s) for s in services if s.constraints or s.idempotent_operations
        },
        catalog_revision=int(session.scalar(select(func.max(CatalogRevision.number))) or 0),
        consumers={c.name: frozenset(c.uses) for c in session.scalars(select(ServiceConsumer))},
        incidents=load_incident_guards(session),
        incident_streams=load_incident_streams(session),
        assessed_at={s.name: s.assessed_at for s in services if s.assessed_at is not None},
    )


def load_health(
    session: Session, query: Select[NodeHealthRow] | None = None
) -> dict[str, NodeHealth]:
    """Every node's live health (the rows `query` selects; all of them by default)."""
    return {
        row.node_id: NodeHealth(
            node_id=row.node_id,
            health_score=row.health_score,
            success_rate=row.success_rate,
            latency_ms=row.latency_p50_ms,
            breaker_state=BreakerState(row.breaker_state),
            failure_probability=row.failure_probability,
            breaker_reason=row.breaker_reason,
            admitted_share=row.admitted_share,
            observations=row.observations,
            rate_capacity=row.rate_capacity,
        )
        for row in session.scalars(select(NodeHealthRow) if query is None else query)
    }


def load_incident_guards(session: Session) -> dict[str, IncidentGuard]:
    """Each service in an open incident's blast radius and the (oldest) incident guarding it."""
    guards: dict[str, IncidentGuard] = {}
    rows = session.scalars(
        select(IncidentRow).where(IncidentRow.status == "open").order_by(IncidentRow.opened_at)
    )
    for row in rows:
        for service in row.blast_radius:
            guards.setdefault(service, IncidentGuard(row.incident_id, row.opened_at))
    return guards


def load_incident_streams(session: Session) -> dict[str, str]:
    """Each error stream an open incident holds and the (oldest) incident holding it."""
    streams: dict[str, str] = {}
    rows = session.scalars(
        select(IncidentRow).where(IncidentRow.status == "open").order_by(IncidentRow.opened_at)
    )
    for row in rows:
        for stream in [*row.streams, *(m["stream_id"] for m in row.members)]:
            streams.setdefault(stream, row.incident_id)
    return streams


def service_rules(service: ProviderService) -> ServiceRules:
    """A service's default constraints by operation, as routing applies them."""
    return ServiceRules(
        {
            operation: Constraints(
                allowed_regions=frozenset(spec.get("allowedRegions", ())),
                excluded_regions=frozenset(spec.get("excludedRegions", ())),
                required_tags=frozenset(spec.get("requiredTags", ())),
                excluded_nodes=frozenset(spec.get("excludedNodes", ())),
            )
            for operation, spec in service.constraints.items()
        },
        frozenset(service.idempotent_operations),
    )


def node_from_row(row: ProviderNodeRow) -> ProviderNode:
    """The routing value for one catalog row."""
    return ProviderNode(
        node_id=row.node_id,
        service=row.service,
        provider_name=row.provider_name,
        region=row.region,
        success_rate=row.success_rate,
        cost_per_request=row.cost_per_request,
        latency_ms=row.latency_ms,
        health_score=row.health_score,
        emergency_only=row.emergency_only,
        enabled=row.enabled,
        latency_slo_ms=row.latency_slo_ms,
        error_rate_slo=row.error_rate_slo,
        tags=frozenset(row.tags),
        operations=frozenset(row.operations) if row.operations is not None else None,
        weight=row.weight,
    )


def load_overrides(session: Session, service: str | None = None) -> dict[str, RoutingOverride]:
    """One merged override per service.

    Several recoveries may hold one service (one per error stream): their exclusions add up,
    the slowest restore wins, and the most recently updated recovery's strategy applies.
    """
    query = select(RoutingOverrideRow).order_by(RoutingOverrideRow.updated_at)
    if service is not None:
        query = query.where(RoutingOverrideRow.service == service)
    rows = session.scalars(query)
    grouped: dict[str, list[RoutingOverrideRow]] = defaultdict(list)
    for row in rows:
        grouped[row.service].append(row)
    merged: dict[str, RoutingOverride] = {}
    for service, items in grouped.items():
        latest = items[-1]
        merged[service] = RoutingOverride(
            service=service,
            workflow_id=latest.workflow_id,
            excluded_nodes=frozenset(n for item in items for n in item.excluded_nodes),
            strategy=Strategy(latest.strategy) if latest.strategy else None,
            restore_fraction=min(item.restore_fraction for item in items),
            # The newest redundancy plan's standby, unless another hold excludes it.
            standby=next(
                (
                    item.standby_node
                    for item in reversed(items)
                    if item.standby_node
                    and not any(item.standby_node in other.excluded_nodes for other in items)
                ),
                None,
            ),
        )
    return merged


def load_emergencies(
    session: Session, now: datetime, service: str | None = None
) -> dict[str, EmergencyState]:
    """Active emergencies whose deadline has not passed (an expired one never routes)."""
    query = select(Emergency).where(Emergency.status == "active", Emergency.deadline > now)
    if service is not None:
        query = query.where(Emergency.service == service)
    rows = session.scalars(query)
    return {
        row.service: EmergencyState(
            service=row.service,
            workflow_id=row.workflow_id,
            coordination_id=row.coordination_id,
            max_budget_override=row.max_budget_override,
            spent=row.spent,
            deadline=row.deadline,
        )
        for row in rows
    }


def load_budgets(
    session: Session, services: Sequence[ProviderService], now: datetime
) -> dict[str, BudgetState]:
    """Each service's budget for the period containing `now`."""
    budgets: dict[str, BudgetState] = {}
    for service in services:
        period = BudgetPeriod(service.budget_period)
        start = period_start(period, now)
        spent = session.scalar(
            select(BudgetSpend.spent).where(
                BudgetSpend.service == service.name, BudgetSpend.period_start == start
            )
        )
        budgets[service.name] = BudgetState(
            service=service.name, period=period, limit=service.budget_limit, spent=spent or 0.0
        )
    return budgets
