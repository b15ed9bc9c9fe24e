"""execute-coordination: decide in-process, record durably, answer with measured timings."""

from __future__ import annotations

import os
import random
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from starlette.types import Scope

from api.audit import answer_record, mark_audited
from api.caller_budgets import CallerKey
from api.decision_blocks import budget_bound_block, hedge_block, predictive_block
from api.decision_writer import PendingDecision
from api.errors import ApiError, field_error
from api.incident_guard import IncidentProtector
from api.runtime import ApiRuntime
from api.schemas.coordination import (
    BackendAgentIntegration,
    BusinessOutcomeOut,
    CoordinationMetadata,
    CoordinationRequest,
    CoordinationResult,
    ExcludedNode,
    IncidentCoordination,
    PerformanceMetrics,
    RoutingDecisionOut,
    SelectedNode,
)
from routing.budget import budget_bound
from routing.business import DEFAULT_ESCALATION_REVENUE, escalate
from routing.decide import decide
from routing.monitoring import monitoring_active
from routing.retry import decide_retry
from routing.types import (
    NO_BUSINESS_CONTEXT,
    BudgetBound,
    BudgetState,
    BusinessContext,
    EmergencyRequired,
    IncidentGuard,
    NoEligibleNode,
    RoutingDecision,
    RoutingRequest,
    RoutingSnapshot,
)
from store.base import utcnow
from store.coordinations import CoordinationKind, CoordinationRecord
from store.decisions import (
    BudgetCharge,
    DecisionCharge,
    DecisionRecord,
    RefusalKind,
    Touches,
)
from store.events import EventDraft, event_draft


def new_coordination_id(prefix: str, now: datetime) -> str:
    """`{prefix}_{unix seconds}_{12 hex}`, the contract's shape.

    48 random bits: at 500 decisions a second, two ids of one second collide about once in
    10^9 seconds (6 hex digits, as in the examples, would collide every few minutes).
    """
    return f"{prefix}_{int(now.timestamp())}_{_ids.getrandbits(48):012x}"


# Ids need uniqueness, not secrecy: a PRNG seeded from the OS once, not a syscall per id.
_ids = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.randbits(128)))


def routing_request(
    body: CoordinationRequest, escalation_revenue: float = DEFAULT_ESCALATION_REVENUE
) -> RoutingRequest:
    """The routing engine's view of an execute-coordination body, escalated to CRITICAL when
    its business context calls for it (routing/business.py)."""
    context = body.routing_context
    business = body.business_context
    request = RoutingRequest(
        service=body.service_name,
        operation=body.operation,
        # Without the caller's id a random one: each decision gets its own staged-restore and
        # admission bucket, instead of every id-less request sharing one (all or none).
        request_id=context.request_metadata.request_id or secrets.token_hex(8),
        failed_providers=frozenset(context.failed_providers),
        priority=context.request_metadata.priority,
        business_criticality=context.request_metadata.business_criticality,
        remaining_budget=context.budget_constraints.remaining_budget,
        cost_per_request_limit=context.budget_constraints.cost_per_request_limit,
        budget_period=context.budget_constraints.budget_period,
        current_latency=context.performance_context.current_latency,
        target_latency=context.performance_context.target_latency,
        current_throughput=context.performance_context.current_throughput,
        target_throughput=context.performance_context.target_throughput,
        preferred_strategy=context.preferred_strategy,
        require_predictive_analytics=body.coordination_requirements.require_predictive_analytics,
        require_emergency_override=body.coordination_requirements.require_emergency_override,
        constraints=context.constraints.to_constraints(),
        business=BusinessContext(
            revenue_impact=business.revenue_impact,
            customer_impact=business.customer_impact,
            operational_priority=business.operational_priority,
            time_sensitivity=business.time_sensitivity,
        ),
    )
    return escalate(request, escalation_revenue)


def emergency_required_error(exc: EmergencyRequired, ended: bool = False) -> ApiError:
    """409: the request requires an emergency override and the service has none active."""
    message = (
        f"requireEmergencyOverride: the emergency override of {exc.service!r} ended"
        if ended
        else f"requireEmergencyOverride: no emergency override is active for {exc.service!r}"
    )
    return ApiError(
        409,
        "emergency_not_active",
        message,
        {"serviceName": exc.service, "field": "coordinationRequirements.requireEmergencyOverride"},
    )


def no_eligible_error(exc: NoEligibleNode) -> ApiError:
    """503 naming why each node was excluded, and the constraint that left none if one did."""
    message = f"no provider node of {exc.service!r} can take this request"
    if exc.constraint:
        message = f"no provider node of {exc.service!r} satisfies {exc.constraint}"
    details: dict[str, object] = {
        "serviceName": exc.service,
        "excludedNodes": [
            {"nodeId": e.node_id, "reason": e.reason.value, "detail": e.detail}
            for e in exc.exclusions
        ],
    }
    if exc.constraint:
        details["constraint"] = exc.constraint
    return ApiError(503, "no_eligible_node", message, details)


def require_service(snapshot: RoutingSnapshot, service: str, field: str = "serviceName") -> None:
    """422 naming the field when the service is not in the catalog."""
    if service not in snapshot.nodes:
        known = ", ".join(snapshot.services())
        raise field_error(field, f"unknown service {service!r}; known: {known}")


def require_nodes(
    snapshot: RoutingSnapshot,
    service: str,
    node_ids: list[str],
    field: str = "routingContext.failedProviders",
) -> None:
    """422 naming the first entry of `field` that is not a node of the service (a typo would
    otherwise exclude nothing, silently)."""
    known = {node.node_id for node in snapshot.nodes.get(service, ())}
    for index, node_id in enumerate(node_ids):
        if node_id not in known:
            raise field_error(
                f"{field}.{index}",
                f"{node_id!r} is not a node of {service!r}; its nodes: {', '.join(sorted(known))}",
            )


def require_tags(snapshot: RoutingSnapshot, tags: list[str]) -> None:
    """422 naming the first `routingContext.constraints.requiredTags` entry no node carries
    (a typo would otherwise refuse every request with a 503)."""
    known = {tag for nodes in snapshot.nodes.values() for node in nodes for tag in node.tags}
    for index, tag in enumerate(tags):
        if tag not in known:
            raise field_error(
                f"routingContext.constraints.requiredTags.{index}",
                f"no node carries the tag {tag!r}; the catalog's tags: "
                f"{', '.join(sorted(known)) or 'none'}",
            )


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)


# A decision is retried when the store refuses what the snapshot allowed (stale budget figure,
# an emergency that ended meanwhile); each retry works from the store's answer.
ATTEMPTS = 3
ANSWER_MESSAGE = "Enhanced traffic coordination completed successfully"


def _with_spent(snapshot: RoutingSnapshot, service: str, spent: float | None) -> RoutingSnapshot:
    """The snapshot with the service's spend as the store reported it (spent if unknown)."""
    budget = snapshot.budgets.get(service)
    if budget is None:
        return snapshot
    budgets = dict(snapshot.budgets)
    figure = budget.limit if spent is None else spent
    budgets[service] = BudgetState(service, budget.period, budget.limit, figure)
    return replace(snapshot, budgets=budgets)


def _without_emergency(snapshot: RoutingSnapshot, service: str) -> RoutingSnapshot:
    """The snapshot without the service's emergency."""
    emergencies = {k: v for k, v in snapshot.emergencies.items() if k != service}
    return replace(snapshot, emergencies=emergencies)


async def execute_coordination(
    runtime: ApiRuntime,
    body: CoordinationRequest,
    audit_scope: Scope | None = None,
    caller: str = "",
) -> dict[str, Any]:
    """Decide in-process, record through the group-commit writer, answer the `data` object.

    The decision row, its budget charge, the stream and monitoring touches, its events and
    (given the request's scope) its audit entry are committed together (store/decisions.py)
    before this returns. `caller` (the principal's subject) keys the caller's own budget
    (api/caller_budgets.py).
    """
    started = time.perf_counter()
    now = utcnow()
    snapshot = runtime.snapshot.current
    require_service(snapshot, body.service_name)
    context = body.routing_context
    require_nodes(snapshot, body.service_name, context.failed_providers)
    if context.constraints.excluded_nodes or context.constraints.required_tags:
        field = "routingContext.constraints.excludedNodes"
        require_nodes(snapshot, body.service_name, context.constraints.excluded_nodes, field)
        require_tags(snapshot, context.constraints.required_tags)
    request = routing_request(body, runtime.settings.escalation_revenue_impact)
    service = body.service_name
    # The caller's remainingBudget, bounded by what it spent in the same budgetPeriod window.
    declared = request.remaining_budget
    caller_key: CallerKey | None = None
    if declared is not None:
        caller_key = runtime.callers.key(caller, service, request.budget_period, now)
    # In an open incident's blast radius: retries budgeted, the budget's rest kept for the
    # most important traffic (503 retry_budget_exhausted / shed_for_incident beyond them).
    guard = snapshot.incidents.get(service)
    incident = None
    if guard is not None:
        runtime.incidents.admit(request, guard, snapshot)
        incident = _incident_block(guard, runtime.incidents, snapshot.budgets.get(service))
    # A retry (the request names nodes it failed on) goes where a retry should.
    choose = decide_retry if request.failed_providers else decide
    agent = body.backend_agent_context
    requirements = body.coordination_requirements
    sync = bool(agent.error_stream_id) and (
        agent.require_backend_agent_sync or requirements.require_backend_agent_sync
    )
    monitoring = agent.require_real_time_monitoring or requirements.require_real_time_monitoring
    # Whether the service is monitored live: its nodes assessed by the sweep of late (the
    # request's flag only opens a monitoring session).
    assessed = monitoring_active(snapshot, service, now, runtime.monitoring_window)
    # A registered stream is checked against the open incidents' streams.
    stream_incident = snapshot.incident_streams.get(agent.error_stream_id or "") if sync else None
    touches = Touches(
        stream_id=agent.error_stream_id if sync else None,
        monitoring_session_id=(agent.monitoring_session_id or f"monitoring_{service}")
        if monitoring
        else None,
    )
    coordination_id = new_coordination_id("coordination", now)

    for attempt in range(ATTEMPTS):
        routing_started = time.perf_counter()
        if caller_key is not None and declared is not None:
            # Read again on each attempt: other requests of the caller booked meanwhile.
            request = replace(
                request, remaining_budget=runtime.callers.remaining(caller_key, declared)
            )
        # Nodes whose rate capacity this process used up this second: as if their share were 0.
        view = runtime.headroom.view(snapshot, now)
        try:
            decision = choose(request, view, now, clock=time.perf_counter)
        except NoEligibleNode as exc:
            raise no_eligible_error(exc) from exc
        except EmergencyRequired as exc:
            raise emergency_required_error(exc, ended=attempt > 0) from exc
        routing_ms = _ms(routing_started, time.perf_counter())
        if caller_key is not None and request.remaining_budget is not None:
            runtime.callers.book(caller_key, request.remaining_budget, decision.estimated_cost)
        emergency = snapshot.emergencies.get(service)
        emergency_wf = emergency.workflow_id if decision.emergency_applied and emergency else None
        budget = snapshot.budgets.get(service)
        answer = _Answer(
            body,
            coordination_id,
            decision,
            now,
            emergency_wf,
            sync,
            assessed,
            routing_ms,
            started,
            audit_scope=audit_scope,
            incident=incident,
            stream_incident=stream_incident,
            escalated_by=request.escalated_by,
            business=request.business,
            # Explained here, not in routing.decide: only the answer reads it.
            bound=budget_bound(request, budget, emergency, decision.emergency_applied),
        )
        charge = DecisionCharge(
            coordination_id=coordination_id,
            service=service,
            amount=decision.estimated_cost,
            at=now,
            budget=BudgetCharge(budget.period, budget.limit) if budget else None,
            emergency_workflow_id=emergency_wf,
            touches=touches,
        )
        recorded = await runtime.decisions.record(PendingDecision(charge, answer))
        refusal = recorded.refusal
        if refusal is not None and caller_key is not None:
            runtime.callers.refund(caller_key, decision.estimated_cost)
        if refusal is None:
            runtime.headroom.sent(view, decision.node.node_id, now)
            if audit_scope is not None:
                mark_audited(audit_scope)
            return answer.final(_ms(started, time.perf_counter()))
        if attempt == ATTEMPTS - 1:
            raise ApiError(503, "budget_exhausted", refusal.detail, {"serviceName": service})
        if refusal.kind is RefusalKind.emergency:
            snapshot = _without_emergency(snapshot, service)
        else:  # the snapshot's budget figure was stale: decide again with the store's figure
            snapshot = _with_spent(snapshot, service, refusal.spent)
    raise AssertionError("unreachable: the last attempt answers or raises")


@dataclass
class _Answer:
    """Builds a decision's answer and its complete record once the writer measured its batch."""

    body: CoordinationRequest
    coordination_id: str
    decision: RoutingDecision
    at: datetime
    emergency_workflow_id: str | None
    sync: bool
    monitoring: bool  # the service's nodes were assessed within the monitoring window
    routing_ms: float
    started: float  # perf_counter at the request's start
    audit_scope: Scope | None = None  # the request, when its entry goes in the decision's batch
    incident: IncidentCoordination | None = None  # the open incident protecting the service
    stream_incident: str | None = None  # the open incident holding the request's stream
    escalated_by: tuple[str, ...] = ()  # the businessContext fields that made it CRITICAL
    business: BusinessContext = NO_BUSINESS_CONTEXT  # the request's, recorded with its row
    bound: BudgetBound | None = None  # the budget that bound the decision
    data: dict[str, Any] = field(default_factory=dict)  # the answer, set by complete()

    def record(self, integration_ms: float) -> DecisionRecord:
        """The coordination row, events and audit entry; the writer writes them as they are."""
        result = _result(
            self.coordination_id,
            self.decision,
            self.sync,
            self.monitoring,
            PerformanceMetrics(
                total_coordination_time=0.0,
                routing_decision_time=self.routing_ms,
                backend_integration_time=integration_ms,
                # Strategy choice and scoring, as decide timed them.
                optimization_time=round(self.decision.optimization_seconds * 1000, 3),
            ),
            incident=self.incident,
            stream_incident=self.stream_incident,
            request_escalation=self.escalated_by,
            bound=self.bound,
        )
        data = result.model_dump(mode="json", by_alias=True)
        if data["incident"] is None:  # the block is there only when an incident protects
            del data["incident"]
        if self.stream_incident is None:  # named only when the stream belongs to one
            del data["backendAgentIntegration"]["correlatedIncidentId"]
        done = time.perf_counter()
        metrics = data["performanceMetrics"]
        metrics["totalCoordinationTime"] = _ms(self.started, done)
        self.data = data
        row = CoordinationRecord.of_decision(
            self.decision,
            coordination_id=self.coordination_id,
            kind=CoordinationKind.standard,
            service=self.body.service_name,
            operation=self.body.operation,
            response=data,
            created_at=self.at,
            request_id=self.body.routing_context.request_metadata.request_id,
            backend_integrated=self.sync,
            error_stream_id=self.body.backend_agent_context.error_stream_id if self.sync else None,
            emergency_workflow_id=self.emergency_workflow_id,
            coordination_ms=metrics["totalCoordinationTime"],
            **CoordinationRecord.business_columns(self.business),
        )
        audit = None
        if self.audit_scope is not None:
            audit = answer_record(self.audit_scope, 200, audit_summary(data))
        events = _events(self.body, self.decision, data, self.sync, self.at)
        return DecisionRecord(row, events, audit)

    def final(self, total_ms: float) -> dict[str, Any]:
        """The answer's data, its total time measured up to the commit."""
        metrics = {**self.data["performanceMetrics"], "totalCoordinationTime": total_ms}
        return {**self.data, "performanceMetrics": metrics}


def audit_summary(data: dict[str, Any]) -> dict[str, Any]:
    """What api.audit.document_summary finds in a decision's answer, read without a scan.

    The generic scan walks the whole answer (a tenth of a decision's CPU); a decision's
    answer always has these three (tests/api check both agree).
    """
    decision = data["routingDecision"]
    return {
        "coordinationId": data["coordinationId"],
        "routingStrategy": decision["routingStrategy"],
        "nodeId": decision["selectedNode"]["nodeId"],
    }


def _result(
    coordination_id: str,
    decision: RoutingDecision,
    sync: bool,
    monitoring: bool,
    metrics: PerformanceMetrics,
    incident: IncidentCoordination | None = None,
    stream_incident: str | None = None,
    request_escalation: tuple[str, ...] = (),
    bound: BudgetBound | None = None,
) -> CoordinationResult:
    applied = ["intelligent_routing"]
    if sync:
        applied.append("backend_agent_coordination")
    if incident is not None:
        applied.append("cascade_protection")
    if decision.emergency_applied:
        applied.append("emergency_override")
    if decision.recovery_override_applied:
        applied.append("recovery_override")
    forecast = decision.forecast
    if forecast is not None and forecast.effect != "unavailable":
        # The forecast changed the choice or confirmed it (routing/forecast.py).
        applied.append("predictive_analytics")
    strategy = (
        "emergency_coordination"
        if decision.emergency_applied
        else "backend_integrated_coordination"
        if sync
        else "standard_coordination"
    )
    node = decision.node
    return CoordinationResult(
        coordination_id=coordination_id,
        routing_decision=RoutingDecisionOut(
            selected_node=SelectedNode(
                node_id=node.node_id,
                provider_name=node.provider_name,
                region=node.region,
                success_rate=decision.estimated_success_rate,
                cost_per_request=node.cost_per_request,
                health_score=decision.health.health_score,
            ),
            routing_strategy=decision.strategy,
            decision_reason=decision.reason,
            estimated_cost=decision.estimated_cost,
            estimated_latency=decision.estimated_latency,
            estimated_success_rate=decision.estimated_success_rate,
            strategy_reason=decision.strategy_reason,
            excluded_nodes=[
                ExcludedNode(node_id=e.node_id, reason=e.reason.value, detail=e.detail)
                for e in decision.exclusions
            ],
            predicted_failure_probability=decision.failure_probability,
            escalated_by=list(request_escalation),
            predictive_analytics=predictive_block(decision),
            budget_bound=budget_bound_block(bound),
            hedge=hedge_block(decision),
        ),
        backend_agent_integration=BackendAgentIntegration(
            error_stream_registered=sync,
            recovery_strategy_activated=decision.recovery_override_applied,
            monitoring_active=monitoring,
            # Checked against cross-stream correlation: its registered stream against the open
            # incidents' streams (and later errors on it correlate by same_stream), or its
            # service against their blast radii when one guards it.
            cross_stream_coordinated=sync or incident is not None,
            correlated_incident_id=stream_incident,
        ),
        performance_metrics=metrics,
        business_outcome=BusinessOutcomeOut(
            estimated_cost_savings=decision.outcome.estimated_cost_savings,
            estimated_performance_gain=decision.outcome.estimated_performance_gain,
            risk_mitigation=decision.outcome.risk_mitigation,
            customer_impact_reduction=decision.outcome.customer_impact_reduction,
        ),
        metadata=CoordinationMetadata(
            confidence_score=decision.confidence_score,
            coordination_strategy=strategy,
            applied_optimizations=applied,
        ),
        incident=incident,
    )


def _incident_block(
    guard: IncidentGuard, protector: IncidentProtector, budget: BudgetState | None
) -> IncidentCoordination:
    """The incident protecting the decision's service and the protections it applied: the
    retry budget always, the reservation for CRITICAL/HIGH when the service has a budget."""
    config = protector.config
    protections = ["retry_budget"]
    if budget is not None and budget.limit > 0 and config.reserved_share > 0:
        protections.append("priority_reservation")
    return IncidentCoordination(
        incident_id=guard.incident_id,
        opened_at=guard.opened_at,
        protections=protections,
        retries_per_request=config.retries_per_request,
        retry_ratio=config.retry_ratio,
        retry_window_seconds=config.retry_window_seconds,
        min_retries=config.min_retries,
        reserved_share=config.reserved_share,
    )


def _events(
    body: CoordinationRequest,
    decision: RoutingDecision,
    data: dict[str, Any],
    sync: bool,
    at: datetime,
) -> list[EventDraft]:
    metrics = data["performanceMetrics"]
    where = {"service": body.service_name, "coordination_id": data["coordinationId"], "at": at}
    events = [
        event_draft(
            "enhanced_coordination_completed",
            {
                "coordinationId": data["coordinationId"],
                "serviceName": body.service_name,
                "selectedProvider": decision.node.provider_name,
                "coordinationTime": metrics["totalCoordinationTime"],
                "confidenceScore": decision.confidence_score,
                "backendIntegrated": sync,
                "costSavings": decision.outcome.estimated_cost_savings,
                "performanceGain": decision.outcome.estimated_performance_gain,
            },
            **where,
        )
    ]
    if sync:
        events.append(
            event_draft(
                "backend_agent_sync_completed",
                {
                    "coordinationId": data["coordinationId"],
                    "errorStreamId": body.backend_agent_context.error_stream_id,
                    "recoveryStrategyActivated": decision.recovery_override_applied,
                    "monitoringActive": data["backendAgentIntegration"]["monitoringActive"],
                    "syncTime": metrics["backendIntegrationTime"],
                },
                **where,
            )
        )
    return events
