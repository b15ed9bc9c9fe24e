"""backend-agent-error and the recovery workflow endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api import incidents
from api.coordinator import require_service
from api.deps import Operator, Reader, RuntimeDep, TemporalDep
from api.errors import ApiError, field_error, temporal_error
from api.runtime import ApiRuntime
from api.schemas.common import Envelope, ErrorEnvelope
from api.schemas.recovery import (
    BackendAgentErrorRequest,
    BackendAgentErrorResult,
    BackendAgentResponse,
    OperatorAction,
    OptimizationDecision,
    OptimizationPlan,
    RecoveryCoordinationResult,
    RecoveryNode,
    RecoveryPlanOutcome,
    RecoveryRoutingDecision,
    RecoveryView,
    ResolutionEstimate,
    TimelineEntry,
)
from routing.recovery import Severity
from store.base import utcnow
from temporal_client import recoveries
from workflows.recovery_types import (
    CancelRequest,
    ErrorReport,
    NodeSummary,
    RecoveryStatus,
    ReportResult,
    ResolveRequest,
)

router = APIRouter(tags=["recovery"])
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 422, 503)}
# A report that reaches a recovery just as it ends is retried against the next run.
ENDED_RETRIES = 3


def workflow_ui_url(runtime: ApiRuntime, workflow_id: str) -> str:
    """Link to the workflow in the Temporal UI."""
    namespace = quote(runtime.settings.temporal_namespace, safe="")
    base = runtime.settings.temporal_ui_url
    return f"{base}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"


def _validate_providers(runtime: ApiRuntime, body: BackendAgentErrorRequest) -> None:
    snapshot = runtime.snapshot.current
    require_service(snapshot, body.service_name)
    known = {n.node_id for n in snapshot.nodes[body.service_name]}
    strangers = [p for p in body.error_details.failed_providers if p not in known]
    if strangers:
        raise field_error(
            "errorDetails.failedProviders",
            f"{', '.join(strangers)} not a node of {body.service_name!r}; "
            f"its nodes: {', '.join(sorted(known))}",
        )


def _report(body: BackendAgentErrorRequest, request_key: str) -> ErrorReport:
    return ErrorReport(
        error_type=body.error_type,
        severity=body.severity,
        operation=body.operation,
        error_message=body.error_message,
        failed_providers=sorted(set(body.error_details.failed_providers)),
        retry_attempts=body.error_details.retry_attempts,
        cascading_services=body.error_details.cascading_services,
        revenue_at_risk=body.business_impact.revenue_at_risk,
        customer_impact=body.business_impact.customer_impact,
        time_to_resolution_minutes=body.business_impact.time_to_resolution,
        recovery_strategy_id=body.recovery_strategy_id,
        monitoring_session_id=body.monitoring_session_id,
        request_key=request_key,
    )


def _node(summary: NodeSummary) -> RecoveryNode:
    return RecoveryNode(
        node_id=summary.node_id,
        provider_name=summary.provider_name,
        region=summary.region,
        success_rate=summary.success_rate,
        cost_per_request=summary.cost_per_request,
    )


def _result(outcome: ReportResult, cascading: list[str]) -> BackendAgentErrorResult:
    plan = outcome.plan
    return BackendAgentErrorResult(
        coordination_result=RecoveryCoordinationResult(
            coordination_id=outcome.coordination_id,
            routing_decision=RecoveryRoutingDecision(
                selected_node=_node(plan.selected),
                standby_node=_node(plan.standby) if plan.standby else None,
                excluded_nodes=plan.excluded_nodes,
            ),
            optimization_decision=OptimizationDecision(
                selected_strategy=plan.strategy,
                optimization_plan=OptimizationPlan(
                    primary_action=plan.action,
                    estimated_cost=plan.estimated_cost,
                    estimated_latency=plan.estimated_latency,
                    restore_stages=plan.restore_stages,
                ),
                rule=plan.rule,
            ),
        ),
        backend_agent_response=BackendAgentResponse(
            error_handled=True,
            coordination_id=outcome.coordination_id,
            recovery_strategy=plan.strategy,
            estimated_resolution_time=plan.estimated_resolution_minutes,
            workflow_id=outcome.workflow_id,
            error_count=outcome.error_count,
            joined_existing_recovery=outcome.joined_existing,
            phase=outcome.phase,
            cascading_services=cascading,
            recovery_plan=(
                RecoveryPlanOutcome(
                    requested_id=plan.requested_plan_id,
                    plan_id=plan.recovery_plan_id,
                    status=plan.plan_status,
                )
                if plan.plan_status != "none"
                else None
            ),
            resolution_estimate=ResolutionEstimate(
                basis=plan.resolution_basis, samples=plan.resolution_samples
            ),
            handled_severity=Severity(plan.handled_severity) if plan.handled_severity else None,
        ),
    )


async def report_error(
    client: Client,
    runtime: ApiRuntime,
    body: BackendAgentErrorRequest,
    request_key: str,
    correlated: incidents.Correlated | None = None,
) -> ReportResult:
    """Update-with-start: start the stream's recovery or join the running one."""
    report = _report(body, request_key)
    if correlated is not None:
        incident = {"incident_id": correlated.incident_id, "incident_rule": correlated.rule}
        report = report.model_copy(update=incident)
    for attempt in range(ENDED_RETRIES):
        try:
            return await recoveries.start_or_join_recovery(
                client,
                runtime.settings,
                service=body.service_name,
                stream_id=body.stream_id,
                report=report,
                summary=(
                    f"Recovery of {body.service_name} ({body.error_type}, {body.severity}) "
                    f"for stream {body.stream_id}"
                ),
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "NoEligibleNode":
                raise ApiError(
                    503,
                    "no_eligible_node",
                    f"no provider node of {body.service_name!r} can take over",
                    {"serviceName": body.service_name, "excludedNodes": list(cause.details)},
                ) from exc
            if "has ended" in str(cause) and attempt < ENDED_RETRIES - 1:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            raise ApiError(409, "recovery_conflict", str(cause or exc)) from exc
        except RPCError as exc:
            raise _temporal_error(exc) from exc
    raise ApiError(409, "recovery_conflict", "the stream's recovery kept ending; retry")


def _temporal_error(exc: RPCError) -> ApiError:
    return temporal_error(exc, "no such recovery workflow")


@router.post(
    "/backend-agent-error",
    response_model=Envelope[BackendAgentErrorResult],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def post_backend_agent_error(
    body: BackendAgentErrorRequest,
    runtime: RuntimeDep,
    _: Operator,  # before TemporalDep: refuse a caller before connecting to Temporal
    client: TemporalDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Envelope[BackendAgentErrorResult]:
    """Hand an error to its stream's durable recovery; answers once the new route is applied.

    The error is correlated first: its incident goes with it to the recovery, which joins
    the incident in the background (docs/INCIDENTS.md).
    """
    _validate_providers(runtime, body)
    now = utcnow()
    correlated = await incidents.correlate_report(runtime, body, now)
    try:
        outcome = await report_error(client, runtime, body, idempotency_key or "", correlated)
    except BaseException:
        await incidents.release(runtime, correlated)
        raise
    # The worker committed the override before the update returned: route with it here at
    # once, not after the next poll.
    await asyncio.to_thread(runtime.snapshot.wait_fresh, time.monotonic())
    result = _result(outcome, sorted(set(body.error_details.cascading_services)))
    response = result.backend_agent_response
    response.incident_id = correlated.incident_id
    response.correlation_rule = correlated.rule
    response.joined_incident = not correlated.new
    return Envelope(message="Backend Agent error handled successfully", data=result)


def _view(runtime: ApiRuntime, status: RecoveryStatus) -> RecoveryView:
    return RecoveryView(
        workflow_id=status.workflow_id,
        service_name=status.service,
        stream_id=status.stream_id,
        source=status.source,
        phase=status.phase,
        severity=status.severity,
        recovery_strategy=status.strategy,
        action=status.action,
        selected_node=status.selected_node,
        failed_providers=status.failed_providers,
        cascading_services=status.cascading_services,
        error_count=status.error_count,
        restore_fraction=status.restore_fraction,
        escalated=status.escalated,
        started_at=status.started_at,
        ended_at=status.ended_at,
        timeline=[TimelineEntry(at=s.at, step=s.step, detail=s.detail) for s in status.timeline],
        temporal_ui_url=workflow_ui_url(runtime, status.workflow_id),
        incident_id=status.incident_id,
        recovery_plan_id=status.recovery_plan_id,
        unknown_plan_ids=status.unknown_plan_ids,
    )


@router.get(
    "/recoveries/{workflow_id}",
    response_model=Envelope[RecoveryView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def get_recovery(
    workflow_id: str, runtime: RuntimeDep, _: Reader, client: TemporalDep
) -> Envelope[RecoveryView]:
    """The recovery's phase, timeline, route and figures (its status query)."""
    if not workflow_id.startswith("recovery:"):
        raise ApiError(404, "not_found", f"{workflow_id!r} is not a recovery workflow id")
    try:
        status = await recoveries.recovery_status(client, workflow_id)
    except RPCError as exc:
        raise _temporal_error(exc) from exc
    return Envelope(data=_view(runtime, status))


async def _operator_update(
    runtime: ApiRuntime, update: Awaitable[RecoveryStatus]
) -> RecoveryStatus:
    try:
        status = await update
    except WorkflowUpdateFailedError as exc:
        raise ApiError(409, "recovery_ended", str(exc.cause or exc)) from exc
    except RPCError as exc:
        raise _temporal_error(exc) from exc
    await asyncio.to_thread(runtime.snapshot.refresh)
    return status


@router.post(
    "/recoveries/{workflow_id}/resolve",
    response_model=Envelope[RecoveryView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def resolve_recovery(
    workflow_id: str,
    body: OperatorAction,
    runtime: RuntimeDep,
    principal: Operator,
    client: TemporalDep,
) -> Envelope[RecoveryView]:
    """Operator: the provider is fixed; remove the override now and end as resolved."""
    request = ResolveRequest(reason=body.reason, operator=principal.subject)
    status = await _operator_update(
        runtime, recoveries.resolve_recovery(client, workflow_id, request)
    )
    return Envelope(message="Recovery resolved", data=_view(runtime, status))


@router.post(
    "/recoveries/{workflow_id}/cancel",
    response_model=Envelope[RecoveryView],
    responses=ERRORS,  # type: ignore[arg-type]
)
async def cancel_recovery(
    workflow_id: str,
    body: OperatorAction,
    runtime: RuntimeDep,
    principal: Operator,
    client: TemporalDep,
) -> Envelope[RecoveryView]:
    """Operator: stop the recovery and remove its override."""
    request = CancelRequest(reason=body.reason, operator=principal.subject)
    status = await _operator_update(
        runtime, recoveries.cancel_recovery(client, workflow_id, request)
    )
    return Envelope(message="Recovery cancelled", data=_view(runtime, status))
