"""Request and response models of execute-coordination, field for field as in the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from api.schemas.common import ResponseModel, WireModel
from routing.types import (
    BudgetPeriod,
    BusinessCriticality,
    Constraints,
    CustomerImpact,
    OperationalPriority,
    Priority,
    Strategy,
    TimeSensitivity,
)
from store.catalog import REGION_PATTERN, TAG_PATTERN

Name = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")


class RequestMetadata(WireModel):
    """Who is asking and how much it matters."""

    request_id: str | None = Field(default=None, max_length=200)
    priority: Priority = Priority.NORMAL
    business_criticality: BusinessCriticality = BusinessCriticality.STANDARD


class BudgetConstraints(WireModel):
    """The caller's own budget limits; the tighter of these and the server's budget wins.

    `remainingBudget` is what the caller has left in its `budgetPeriod`; the server tracks it
    per caller, service and period, so a figure sent again after spending is not spent twice
    (docs/ROUTING.md, Budgets)."""

    remaining_budget: float | None = Field(default=None, ge=0, le=1e12)
    cost_per_request_limit: float | None = Field(default=None, gt=0, le=1e6)
    budget_period: BudgetPeriod = BudgetPeriod.daily


class PerformanceContext(WireModel):
    """Where the caller's latency and throughput are, and where they should be."""

    current_latency: float | None = Field(default=None, ge=0, le=1e7)
    target_latency: float | None = Field(default=None, gt=0, le=1e7)
    current_throughput: float | None = Field(default=None, ge=0, le=1e9)
    target_throughput: float | None = Field(default=None, gt=0, le=1e9)


Region = Annotated[str, Field(min_length=1, max_length=64, pattern=REGION_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=32, pattern=TAG_PATTERN)]


class RequestConstraints(WireModel):
    """Hard constraints on the nodes this request may use (docs/ROUTING.md, Routing rules):
    never broken, not by a retry, a recovery's hold or an emergency."""

    allowed_regions: list[Region] = Field(default_factory=list, max_length=50)
    excluded_regions: list[Region] = Field(default_factory=list, max_length=50)
    required_tags: list[Tag] = Field(default_factory=list, max_length=20)
    excluded_nodes: list[Annotated[str, Name]] = Field(default_factory=list, max_length=50)

    def to_constraints(self) -> Constraints:
        """The routing value."""
        return Constraints(
            allowed_regions=frozenset(self.allowed_regions),
            excluded_regions=frozenset(self.excluded_regions),
            required_tags=frozenset(self.required_tags),
            excluded_nodes=frozenset(self.excluded_nodes),
        )


class RoutingContext(WireModel):
    """How to route: metadata, budget, performance and an optional strategy preference."""

    request_metadata: RequestMetadata = RequestMetadata()
    budget_constraints: BudgetConstraints = BudgetConstraints()
    performance_context: PerformanceContext = PerformanceContext()
    preferred_strategy: Strategy | None = None
    # A retry: the nodes this request already failed on. Routing avoids them while another
    # node is healthy, and healthy nodes come first (docs/ROUTING.md, Retries).
    failed_providers: list[Annotated[str, Name]] = Field(default_factory=list, max_length=20)
    constraints: RequestConstraints = RequestConstraints()


class BackendAgentContext(WireModel):
    """The backend agent's error stream and monitoring wishes."""

    error_stream_id: str | None = Field(default=None, min_length=1, max_length=200)
    monitoring_session_id: str | None = Field(default=None, min_length=1, max_length=200)
    require_backend_agent_sync: bool = False
    require_real_time_monitoring: bool = False


class BusinessContext(WireModel):
    """What the request is worth to the caller's business: stored with the coordination,
    reported in analytics (revenue protected), escalating the request to CRITICAL when high,
    urgent or a high operational priority, and setting riskMitigation's bar (docs/ROUTING.md,
    Business context)."""

    revenue_impact: float | None = Field(default=None, ge=0, le=1e12)
    customer_impact: CustomerImpact | None = None
    operational_priority: OperationalPriority | None = None
    time_sensitivity: TimeSensitivity | None = None


class CoordinationRequirements(WireModel):
    """What the caller needs done beyond the routing decision."""

    require_backend_agent_sync: bool = False
    require_real_time_monitoring: bool = False
    require_predictive_analytics: bool = False
    require_emergency_override: bool = False


class CoordinationRequest(WireModel):
    """Body of POST execute-coordination."""

    service_name: str = Name
    operation: str = Name
    routing_context: RoutingContext = RoutingContext()
    backend_agent_context: BackendAgentContext = BackendAgentContext()
    business_context: BusinessContext = BusinessContext()
    coordination_requirements: CoordinationRequirements = CoordinationRequirements()


class SelectedNode(ResponseModel):
    """The chosen node as callers see it."""

    node_id: str
    provider_name: str
    region: str
    success_rate: float
    cost_per_request: float
    health_score: float


class ExcludedNode(ResponseModel):
    """A node left out of the decision and why."""

    node_id: str
    reason: str
    detail: str


class NodeForecast(ResponseModel):
    """One eligible node's predicted probability of an SLO breach."""

    node_id: str
    failure_probability: float


class PredictiveAnalytics(ResponseModel):
    """The forecast a requirePredictiveAnalytics decision weighed, and what it did with it."""

    effect: str  # changed | confirmed | unavailable
    exclusion_threshold: float
    node_without_forecast: str
    forecasts: list[NodeForecast]


class BudgetBoundOut(ResponseModel):
    """Which budget bound the decision: caller, server or emergency, and what is left."""

    bound: str
    period: str | None
    remaining: float
    caller_remaining: float | None
    server_remaining: float | None


class HedgeOut(ResponseModel):
    """A second request to the redundancy plan's standby that the caller may send when the
    first has not answered within `delayMs` (idempotent operations only)."""

    node_id: str
    provider_name: str
    region: str
    delay_ms: float
    share: float  # the part of requests expected to be that slow, counted in estimatedCost
    cost_per_request: float


class RoutingDecisionOut(ResponseModel):
    """The routing decision block."""

    selected_node: SelectedNode
    routing_strategy: Strategy
    decision_reason: str
    estimated_cost: float
    estimated_latency: float
    estimated_success_rate: float
    strategy_reason: str | None = None
    excluded_nodes: list[ExcludedNode] = []
    predicted_failure_probability: float | None = None
    # The businessContext fields that escalated the request to CRITICAL.
    escalated_by: list[str] = []
    predictive_analytics: PredictiveAnalytics | None = None
    budget_bound: BudgetBoundOut | None = None
    hedge: HedgeOut | None = None


class BackendAgentIntegration(ResponseModel):
    """What the coordination really did with the backend agent's streams."""

    error_stream_registered: bool
    recovery_strategy_activated: bool
    monitoring_active: bool
    cross_stream_coordinated: bool
    # The open incident the request's registered stream belongs to (left out when none).
    correlated_incident_id: str | None = None


class PerformanceMetrics(ResponseModel):
    """Measured milliseconds spent in each part of the coordination."""

    total_coordination_time: float
    routing_decision_time: float
    backend_integration_time: float
    optimization_time: float


class BusinessOutcomeOut(ResponseModel):
    """Business figures of the decision (formulas in docs/ROUTING.md)."""

    estimated_cost_savings: float
    estimated_performance_gain: float
    risk_mitigation: str
    customer_impact_reduction: float


class CoordinationMetadata(ResponseModel):
    """Confidence and how the coordination was carried out."""

    confidence_score: float
    coordination_strategy: str
    applied_optimizations: list[str]


class IncidentCoordination(ResponseModel):
    """The open incident whose blast radius holds the service, and what it applied."""

    incident_id: str
    opened_at: datetime
    protections: list[str]
    retries_per_request: int
    retry_ratio: float
    retry_window_seconds: float
    min_retries: int
    reserved_share: float


class CoordinationResult(ResponseModel):
    """The data block of execute-coordination."""

    coordination_id: str
    routing_decision: RoutingDecisionOut
    backend_agent_integration: BackendAgentIntegration
    performance_metrics: PerformanceMetrics
    business_outcome: BusinessOutcomeOut
    metadata: CoordinationMetadata
    incident: IncidentCoordination | None = None  # only when an open incident protects
