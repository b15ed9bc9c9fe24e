"""execute-coordination: decide in-process, record durably, answer with measured timings."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session

from api.errors import ApiError
from api.runtime import ApiRuntime
from api.schemas.coordination import (
    BackendAgentIntegration,
    BusinessOutcomeOut,
    CoordinationMetadata,
    CoordinationRequest,
    CoordinationResult,
    ExcludedNode,
    PerformanceMetrics,
    RoutingDecisionOut,
    SelectedNode,
)
from routing.decide import decide
from routing.types import (
    BudgetState,
    NoEligibleNode,
    RoutingDecision,
    RoutingRequest,
    RoutingSnapshot,
)
from store.base import utcnow
from store.coordinations import (
    BudgetExhausted,
    charge_budget,
    coordination_row,
    touch_error_stream,
    touch_monitoring_session,
)
from store.db import transaction
from store.events import publish


def new_coordination_id(prefix: str, now: datetime) -> str:
    """`{prefix}_{unix seconds}_{6 hex}` as in the contract's examples."""
    return f"{prefix}_{int(now.timestamp())}_{secrets.token_hex(3)}"


def routing_request(body: CoordinationRequest) -> RoutingRequest:
    """The routing engine's view of an execute-coordination body."""
    context = body.routing_context
    return RoutingRequest(
        service=body.service_name,
        operation=body.operation,
        request_id=context.request_metadata.request_id or "",
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
    )


def no_eligible_error(exc: NoEligibleNode) -> ApiError:
    """503 naming why each node was excluded."""
    return ApiError(
        503,
        "no_eligible_node",
        f"no provider node of {exc.service!r} can take this request",
        {
            "serviceName": exc.service,
            "excludedNodes": [
                {"nodeId": e.node_id, "reason": e.reason.value, "detail": e.detail}
                for e in exc.exclusions
            ],
        },
    )


def require_service(snapshot: RoutingSnapshot, service: str, field: str = "serviceName") -> None:
    """422 naming the field when the service is not in the catalog."""
    if service not in snapshot.nodes:
        known = ", ".join(snapshot.services())
        raise ApiError(
            422,
            "validation_error",
            f"invalid request: {field}",
            [{"field": field, "message": f"unknown service {service!r}; known: {known}"}],
        )


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)


# A decision is retried when the store refuses what the snapshot allowed (stale budget figure,
# an emergency that ended meanwhile); each retry works from the store's answer.
ATTEMPTS = 3


class EmergencyEnded(Exception):
    """The snapshot's emergency could not be charged: it ended or its cap is spent."""


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


def execute_coordination(runtime: ApiRuntime, body: CoordinationRequest) -> CoordinationResult:
    """Decide, record decision + budget charge + stream touches in one transaction, answer."""
    started = time.perf_counter()
    now = utcnow()
    snapshot = runtime.snapshot.current
    require_service(snapshot, body.service_name)
    request = routing_request(body)
    agent = body.backend_agent_context
    requirements = body.coordination_requirements
    sync = bool(agent.error_stream_id) and (
        agent.require_backend_agent_sync or requirements.require_backend_agent_sync
    )
    monitoring = agent.require_real_time_monitoring or requirements.require_real_time_monitoring
    coordination_id = new_coordination_id("coordination", now)

    for attempt in range(ATTEMPTS):
        routing_started = time.perf_counter()
        try:
            decision = decide(request, snapshot, now)
        except NoEligibleNode as exc:
            raise no_eligible_error(exc) from exc
        routing_done = time.perf_counter()
        try:
            with transaction(runtime.sessions) as session:
                emergency = snapshot.emergencies.get(body.service_name)
                emergency_wf = (
                    emergency.workflow_id if decision.emergency_applied and emergency else None
                )
                budget = snapshot.budgets.get(body.service_name)
                if budget is not None:
                    charge = charge_budget(
                        session,
                        service=body.service_name,
                        amount=decision.estimated_cost,
                        period=budget.period,
                        limit=budget.limit,
                        now=now,
                        emergency_workflow_id=emergency_wf,
                    )
                    if emergency_wf is not None and charge.emergency_workflow_id is None:
                        # The emergency ended or its cap is spent since the snapshot: this
                        # decision may not use emergency-only nodes nor claim the emergency.
                        raise EmergencyEnded(body.service_name)
                backend_started = time.perf_counter()
                if sync and agent.error_stream_id:
                    touch_error_stream(
                        session, stream_id=agent.error_stream_id, service=body.service_name, now=now
                    )
                if monitoring:
                    touch_monitoring_session(
                        session,
                        session_id=agent.monitoring_session_id or f"monitoring_{body.service_name}",
                        service=body.service_name,
                        stream_id=agent.error_stream_id,
                        now=now,
                    )
                backend_done = time.perf_counter()
                result = _result(
                    coordination_id,
                    decision,
                    sync,
                    monitoring,
                    PerformanceMetrics(
                        total_coordination_time=0.0,
                        routing_decision_time=_ms(routing_started, routing_done),
                        backend_integration_time=_ms(backend_started, backend_done),
                        optimization_time=0.0,
                    ),
                    predictive=requirements.require_predictive_analytics,
                )
                optimization_done = time.perf_counter()
                metrics = result.performance_metrics.model_copy(
                    update={
                        "optimization_time": _ms(backend_done, optimization_done),
                        "total_coordination_time": _ms(started, optimization_done),
                    }
                )
                result = result.model_copy(update={"performance_metrics": metrics})
                _record(session, body, decision, result, sync, emergency_wf, now)
            break
        except BudgetExhausted as exc:
            if attempt == ATTEMPTS - 1:
                raise ApiError(
                    503, "budget_exhausted", exc.detail, {"serviceName": exc.service}
                ) from exc
            # The snapshot's budget figure was stale: decide again with the store's figure.
            snapshot = _with_spent(snapshot, body.service_name, exc.spent)
        except EmergencyEnded:
            snapshot = _without_emergency(snapshot, body.service_name)
    total = _ms(started, time.perf_counter())
    return result.model_copy(
        update={
            "performance_metrics": result.performance_metrics.model_copy(
                update={"total_coordination_time": total}
            )
        }
    )


def _result(
    coordination_id: str,
    decision: RoutingDecision,
    sync: bool,
    monitoring: bool,
    metrics: PerformanceMetrics,
    predictive: bool = False,
) -> CoordinationResult:
    applied = ["intelligent_routing"]
    if sync:
        applied.append("backend_agent_coordination")
    if decision.emergency_applied:
        applied.append("emergency_override")
    if decision.recovery_override_applied:
        applied.append("recovery_override")
    if predictive:  # the decision weighed the nodes' predicted failure probabilities
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
        ),
        backend_agent_integration=BackendAgentIntegration(
            error_stream_registered=sync,
            recovery_strategy_activated=decision.recovery_override_applied,
            monitoring_active=monitoring,
            cross_stream_coordinated=sync,
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
    )


def _record(
    session: Session,
    body: CoordinationRequest,
    decision: RoutingDecision,
    result: CoordinationResult,
    sync: bool,
    emergency_workflow_id: str | None,
    now: datetime,
) -> None:
    session.add(
        coordination_row(
            decision,
            coordination_id=result.coordination_id,
            kind="standard",
            service=body.service_name,
            operation=body.operation,
            response=result.model_dump(mode="json", by_alias=True),
            created_at=now,
            request_id=body.routing_context.request_metadata.request_id,
            backend_integrated=sync,
            error_stream_id=body.backend_agent_context.error_stream_id if sync else None,
            emergency_workflow_id=emergency_workflow_id,
            coordination_ms=result.performance_metrics.total_coordination_time,
        )
    )
    publish(
        session,
        "enhanced_coordination_completed",
        {
            "coordinationId": result.coordination_id,
            "serviceName": body.service_name,
            "selectedProvider": decision.node.provider_name,
            "coordinationTime": result.performance_metrics.total_coordination_time,
            "confidenceScore": decision.confidence_score,
            "backendIntegrated": sync,
            "costSavings": decision.outcome.estimated_cost_savings,
            "performanceGain": decision.outcome.estimated_performance_gain,
        },
        service=body.service_name,
        coordination_id=result.coordination_id,
        at=now,
    )
    if sync:
        publish(
            session,
            "backend_agent_sync_completed",
            {
                "coordinationId": result.coordination_id,
                "errorStreamId": body.backend_agent_context.error_stream_id,
                "recoveryStrategyActivated": decision.recovery_override_applied,
                "monitoringActive": result.backend_agent_integration.monitoring_active,
                "syncTime": result.performance_metrics.backend_integration_time,
            },
            service=body.service_name,
            coordination_id=result.coordination_id,
            at=now,
        )
