"""Request and response models of backend-agent-error and the recovery endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from api.schemas.common import ResponseModel, WireModel
from routing.recovery import Severity
from workflows.recovery_types import RecoveryPhase, RecoverySource

Ident = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")


class BusinessImpact(WireModel):
    """What the error costs the business."""

    revenue_at_risk: float = Field(default=0.0, ge=0, le=1e12)
    customer_impact: str = Field(default="moderate", max_length=50)
    time_to_resolution: float = Field(
        default=15.0, gt=0, le=10080, description="Minutes before the recovery escalates."
    )


class ErrorDetails(WireModel):
    """Which providers failed and what else is affected."""

    failed_providers: list[str] = Field(default_factory=list, max_length=50)
    retry_attempts: int = Field(default=0, ge=0, le=1000)
    cascading_services: list[str] = Field(default_factory=list, max_length=50)


class BackendAgentErrorRequest(WireModel):
    """Body of POST backend-agent-error, as in the contract."""

    error_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    service_name: str = Field(min_length=1, max_length=64)
    operation: str = Field(default="", max_length=100)
    severity: Severity
    error_message: str = Field(default="", max_length=4000)
    business_impact: BusinessImpact = BusinessImpact()
    error_details: ErrorDetails = ErrorDetails()
    stream_id: str = Ident
    recovery_strategy_id: str | None = Field(default=None, max_length=200)
    monitoring_session_id: str | None = Field(default=None, max_length=200)
    # Join this open incident instead of letting correlation decide (docs/INCIDENTS.md).
    incident_id: str | None = Field(default=None, min_length=1, max_length=100)


class RecoveryNode(ResponseModel):
    """The node the recovery routes to."""

    node_id: str
    provider_name: str
    region: str
    success_rate: float
    cost_per_request: float


class RecoveryRoutingDecision(ResponseModel):
    """Routing part of the coordination result."""

    selected_node: RecoveryNode
    standby_node: RecoveryNode | None = None
    excluded_nodes: list[str] = []


class OptimizationPlan(ResponseModel):
    """What the recovery does and what it costs."""

    primary_action: str
    estimated_cost: float
    estimated_latency: float
    restore_stages: list[float] = []


class OptimizationDecision(ResponseModel):
    """The recovery strategy and its plan."""

    selected_strategy: str
    optimization_plan: OptimizationPlan
    rule: str | None = None


class RecoveryCoordinationResult(ResponseModel):
    """coordinationResult of backend-agent-error."""

    coordination_id: str
    routing_decision: RecoveryRoutingDecision
    optimization_decision: OptimizationDecision


class RecoveryPlanOutcome(ResponseModel):
    """What became of the recovery plan a report named (`recoveryStrategyId`) or its
    recovery is pinned to: `applied`, `unknown` (the service's catalog has no such plan; the
    recovery table chose), `pinned_elsewhere` (the recovery follows the plan it was pinned
    to) or `retries_spent` (the plan retries and the caller's retries are spent)."""

    requested_id: str | None
    plan_id: str | None
    status: str


class ResolutionEstimate(ResponseModel):
    """How estimatedResolutionTime was made: `history` (median of the service's resolved
    recoveries under the same strategy, `samples` of them) or `plan_timers`."""

    basis: str
    samples: int


class BackendAgentResponse(ResponseModel):
    """What the backend agent needs back."""

    error_handled: bool
    coordination_id: str
    recovery_strategy: str
    estimated_resolution_time: float
    workflow_id: str
    error_count: int
    joined_existing_recovery: bool
    phase: RecoveryPhase
    cascading_services: list[str] = []
    # The cross-stream incident the error belongs to: whether it joined one already open, by
    # which correlation rule (docs/INCIDENTS.md).
    incident_id: str | None = None
    joined_incident: bool | None = None
    correlation_rule: str | None = None
    recovery_plan: RecoveryPlanOutcome | None = None  # None: no plan named nor pinned
    resolution_estimate: ResolutionEstimate | None = None
    # The severity the error was handled with: one step up once the retries are spent.
    handled_severity: Severity | None = None


class BackendAgentErrorResult(ResponseModel):
    """data of backend-agent-error."""

    coordination_result: RecoveryCoordinationResult
    backend_agent_response: BackendAgentResponse


class OperatorAction(WireModel):
    """Body of resolve and cancel."""

    reason: str = Field(min_length=1, max_length=1000)


class TimelineEntry(ResponseModel):
    """One step of a recovery."""

    at: datetime
    step: str
    detail: str


class RecoveryView(ResponseModel):
    """GET recoveries/{workflowId}: the status query's answer."""

    workflow_id: str
    service_name: str
    stream_id: str
    source: RecoverySource
    phase: RecoveryPhase
    severity: Severity | None
    recovery_strategy: str | None
    action: str | None
    selected_node: str | None
    failed_providers: list[str]
    cascading_services: list[str]
    error_count: int
    restore_fraction: float
    escalated: bool
    started_at: datetime | None
    ended_at: datetime | None
    timeline: list[TimelineEntry]
    temporal_ui_url: str
    incident_id: str | None = None
    recovery_plan_id: str | None = None  # the catalog recovery plan it is pinned to
    unknown_plan_ids: list[str] = []  # recoveryStrategyIds reported that name no plan


class ActiveCoordination(ResponseModel):
    """A running recovery or emergency."""

    workflow_id: str
    kind: Literal["recovery", "emergency"]
    service_name: str
    phase: str
    started_at: datetime
    age_seconds: float
    temporal_ui_url: str
    # An emergency's end (clients deciding locally admit emergency-only nodes until then).
    deadline: datetime | None = None


class ActiveCoordinations(ResponseModel):
    """GET active-coordinations."""

    total: int
    recoveries: int
    emergencies: int
    coordinations: list[ActiveCoordination]


class BackendAgentConnection(ResponseModel):
    """One reporting stream and what it has sent."""

    stream_id: str
    service_name: str
    status: str
    first_seen: datetime
    last_seen: datetime
    errors: int
    syncs: int
    workflow_id: str | None
    monitoring_sessions: list[str]
    cascading_services: list[str]


class BackendAgentConnections(ResponseModel):
    """GET backend-agent-connections."""

    total: int
    active_last_15_minutes: int
    connections: list[BackendAgentConnection]
