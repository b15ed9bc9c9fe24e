"""Value types shared by every routing function: catalog, live state, requests and decisions.

Everything here is immutable and free of I/O so that the API hot path, activities, workflows
and the simulator can all call the same code with the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class Strategy(StrEnum):
    """A routing strategy: what the selection optimises for."""

    HEALTH_BASED = "HEALTH_BASED"
    COST_OPTIMIZED = "COST_OPTIMIZED"
    LATENCY_OPTIMIZED = "LATENCY_OPTIMIZED"
    AVAILABILITY_FOCUSED = "AVAILABILITY_FOCUSED"
    HYBRID_OPTIMIZATION = "HYBRID_OPTIMIZATION"


class Priority(StrEnum):
    """The caller's priority for one request."""

    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class BusinessCriticality(StrEnum):
    """How much of the business stops when the request fails."""

    LOW = "LOW"
    STANDARD = "STANDARD"
    IMPORTANT = "IMPORTANT"
    REVENUE_BLOCKING = "REVENUE_BLOCKING"


class BudgetPeriod(StrEnum):
    """The window a budget limit applies to."""

    hourly = "hourly"
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


class CustomerImpact(StrEnum):
    """How many of the caller's customers a failure of the request would reach, least first."""

    none = "none"
    low = "low"
    moderate = "moderate"
    high = "high"
    severe = "severe"
    critical = "critical"


class OperationalPriority(StrEnum):
    """How the caller's operations rank the request (businessContext.operationalPriority)."""

    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"


class TimeSensitivity(StrEnum):
    """How soon the request must succeed to be of use (businessContext.timeSensitivity)."""

    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class BreakerState(StrEnum):
    """Circuit breaker state of one node."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class ExclusionReason(StrEnum):
    """Why a node was not eligible for a request."""

    DISABLED = "disabled"
    BREAKER_OPEN = "breaker_open"
    FAILED_PROVIDER = "failed_provider"
    EXCLUDED_BY_RECOVERY = "excluded_by_recovery"
    EMERGENCY_ONLY = "emergency_only"
    COST_ABOVE_LIMIT = "cost_above_limit"
    BUDGET_EXHAUSTED = "budget_exhausted"
    UNHEALTHY_FOR_RETRY = "unhealthy_for_retry"
    RATE_LIMIT_SHARE = "rate_limit_share"
    PREDICTED_FAILURE = "predicted_failure"  # requirePredictiveAnalytics (routing/forecast.py)
    STANDBY_FIRST = "standby_first"  # a retry goes to the redundancy plan's standby first
    # Hard constraints (routing/rules.py): never lifted, not even by a hold that yields.
    OPERATION_NOT_SERVED = "operation_not_served"
    NODE_EXCLUDED = "node_excluded"
    REGION_NOT_ALLOWED = "region_not_allowed"
    REGION_EXCLUDED = "region_excluded"
    TAG_MISSING = "tag_missing"


@dataclass(frozen=True, slots=True)
class ProviderNode:
    """One provider endpoint in the catalog, with its catalog (baseline) figures."""

    node_id: str
    service: str
    provider_name: str
    region: str
    success_rate: float  # percent, 0..100
    cost_per_request: float  # currency units per request
    latency_ms: float  # typical latency
    health_score: float  # 0..100
    emergency_only: bool = False
    enabled: bool = True
    latency_slo_ms: float = 2000.0
    error_rate_slo: float = 5.0  # percent
    tags: frozenset[str] = frozenset()  # e.g. pci, eu, voice: what requests may require
    operations: frozenset[str] | None = None  # the operations it serves; None: all
    weight: float = 1.0  # share of volume among equally good choices (routing/rules.py)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """Live figures for one node, observed since the catalog was loaded."""

    node_id: str
    health_score: float
    success_rate: float
    latency_ms: float
    breaker_state: BreakerState = BreakerState.CLOSED
    failure_probability: float = 0.0  # predicted probability of an SLO breach, 0..1
    breaker_reason: str | None = None  # why the breaker last changed state (BreakerReason)
    # Share of requests offered to the node while it refuses calls for rate limiting, 0..1
    # (routing/admission.py); 1 for a node that does not.
    admitted_share: float = 1.0
    # Outcomes in the node's health window (at most 100, at most 300 s old) behind the figures.
    observations: int = 0
    # Calls per second the node takes while it refuses for rate limiting, as last seen and
    # still remembered (routing/admission.py); None when not known.
    rate_capacity: float | None = None
    # This API replica sent the node its capacity's worth of calls in the current second
    # (routing/headroom.py): routed as if its admitted share were 0, and no retry target.
    headroom_spent: bool = False


@dataclass(frozen=True, slots=True)
class RoutingOverride:
    """A recovery's hold on a service: nodes kept out of rotation and the strategy to use.

    ``restore_fraction`` is the share of traffic (0..1) already given back to the excluded
    nodes during a staged restore; 0 means fully excluded.
    """

    service: str
    workflow_id: str
    excluded_nodes: frozenset[str]
    strategy: Strategy | None = None
    restore_fraction: float = 0.0
    # The standby of a multi-provider redundancy plan: first retry target, hedge node.
    standby: str | None = None


@dataclass(frozen=True, slots=True)
class EmergencyState:
    """An active emergency override for a service, as the hot path needs it."""

    service: str
    workflow_id: str
    coordination_id: str
    max_budget_override: float
    spent: float
    deadline: datetime

    def active_at(self, now: datetime) -> bool:
        """True while the deadline has not passed and the override cap is not spent."""
        return now < self.deadline and self.spent < self.max_budget_override


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Server-side budget of one service for the current period."""

    service: str
    period: BudgetPeriod
    limit: float
    spent: float

    @property
    def remaining(self) -> float:
        """Budget left in this period, never negative."""
        return max(0.0, self.limit - self.spent)


@dataclass(frozen=True, slots=True)
class Constraints:
    """Which nodes a request may use; an empty field constrains nothing."""

    allowed_regions: frozenset[str] = frozenset()
    excluded_regions: frozenset[str] = frozenset()
    required_tags: frozenset[str] = frozenset()
    excluded_nodes: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(
            self.allowed_regions
            or self.excluded_regions
            or self.required_tags
            or self.excluded_nodes
        )


NO_CONSTRAINTS = Constraints()


@dataclass(frozen=True, slots=True)
class ServiceRules:
    """A service's routing rules from the catalog: default constraints by operation, and the
    operations that are safe to send twice (a recovery's hedge, routing/redundancy.py)."""

    by_operation: Mapping[str, Constraints] = field(default_factory=dict)
    idempotent: frozenset[str] = frozenset()

    def for_operation(self, operation: str) -> Constraints:
        """The defaults for `operation` (none when the catalog sets none)."""
        return self.by_operation.get(operation, NO_CONSTRAINTS)


@dataclass(frozen=True, slots=True)
class IncidentGuard:
    """An open incident whose blast radius holds a service: its decisions are protected
    against retry storms and budget burn (routing/incidents.py)."""

    incident_id: str
    opened_at: datetime


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """Everything a decision depends on besides the request and the clock."""

    nodes: Mapping[str, tuple[ProviderNode, ...]]  # service -> nodes, catalog order
    health: Mapping[str, NodeHealth] = field(default_factory=dict)  # node_id -> live health
    overrides: Mapping[str, RoutingOverride] = field(default_factory=dict)  # service -> override
    emergencies: Mapping[str, EmergencyState] = field(default_factory=dict)
    budgets: Mapping[str, BudgetState] = field(default_factory=dict)
    version: int = 0
    rules: Mapping[str, ServiceRules] = field(default_factory=dict)  # service -> catalog rules
    catalog_revision: int = 0
    # The catalog's consumer graph: internal service -> the services it uses.
    consumers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Services in an open incident's blast radius -> the incident guarding them.
    incidents: Mapping[str, IncidentGuard] = field(default_factory=dict)
    # Error stream -> the open incident it belongs to (the streams incidents have claimed).
    incident_streams: Mapping[str, str] = field(default_factory=dict)
    # Service -> when the health sweep last assessed its nodes (absent: never).
    assessed_at: Mapping[str, datetime] = field(default_factory=dict)
    # Derived once per snapshot, so a decision on a service without routing rules pays
    # nothing for them: services with a node that serves only some operations, and services
    # whose nodes' weights differ.
    restricted: frozenset[str] = field(init=False, default=frozenset(), compare=False, repr=False)
    weighted: frozenset[str] = field(init=False, default=frozenset(), compare=False, repr=False)
    # What the routing rules leave of a service, memoised per (service, operation, request
    # constraints): it depends on the catalog alone, which a snapshot never changes, and
    # callers send the same few constraints again and again (routing/eligibility.py).
    constrained: dict[Any, Any] = field(init=False, default_factory=dict, compare=False, repr=False)
    # What the snapshot says about the same (service, operation, constraints) for decisions:
    # screened nodes and remembered choices (routing/screen.py).
    screens: dict[Any, Any] = field(init=False, default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        restricted, weighted = [], []
        for service, nodes in self.nodes.items():
            if any(node.operations is not None for node in nodes):
                restricted.append(service)
            if len({node.weight for node in nodes}) > 1:
                weighted.append(service)
        object.__setattr__(self, "restricted", frozenset(restricted))
        object.__setattr__(self, "weighted", frozenset(weighted))

    def services(self) -> tuple[str, ...]:
        """Service names in catalog order."""
        return tuple(self.nodes)

    def node(self, node_id: str) -> ProviderNode | None:
        """The catalog node with this id, if any."""
        for nodes in self.nodes.values():
            for candidate in nodes:
                if candidate.node_id == node_id:
                    return candidate
        return None


@dataclass(frozen=True, slots=True)
class BusinessContext:
    """What the request is worth to the caller's business (routing/business.py)."""

    revenue_impact: float | None = None
    customer_impact: CustomerImpact | None = None
    operational_priority: OperationalPriority | None = None
    time_sensitivity: TimeSensitivity | None = None


NO_BUSINESS_CONTEXT = BusinessContext()


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """One request to route, as the API received it (all optional figures may be None)."""

    service: str
    operation: str
    request_id: str = ""
    priority: Priority = Priority.NORMAL
    business_criticality: BusinessCriticality = BusinessCriticality.STANDARD
    remaining_budget: float | None = None
    cost_per_request_limit: float | None = None
    budget_period: BudgetPeriod = BudgetPeriod.daily
    current_latency: float | None = None
    target_latency: float | None = None
    current_throughput: float | None = None
    target_throughput: float | None = None
    preferred_strategy: Strategy | None = None
    failed_providers: frozenset[str] = frozenset()
    require_predictive_analytics: bool = False
    require_emergency_override: bool = False
    constraints: Constraints = NO_CONSTRAINTS
    business: BusinessContext = NO_BUSINESS_CONTEXT
    # The businessContext fields that escalated the request to CRITICAL (routing/business.py).
    escalated_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A node left out of a decision and why."""

    node_id: str
    reason: ExclusionReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BusinessOutcome:
    """The business figures reported with a decision (formulas in docs/ROUTING.md)."""

    estimated_cost_savings: float
    estimated_performance_gain: float
    risk_mitigation: str  # "high" | "medium" | "low"
    customer_impact_reduction: float


@dataclass(frozen=True)
class RoutingDecision:
    """The node chosen for a request, with the reasoning and estimates behind it.

    The explanation (``strategy_reason``, ``reason``, ``outcome``, ``exclusions``) of a
    decision made by `routing.decide` is worked out when it is first read (`explained_later`):
    many decisions are read only for their node (a retry's tiers, the simulator). Read,
    compared, replaced, copied or pickled, it is the same as if it had been given to the
    constructor.
    """

    node: ProviderNode
    health: NodeHealth
    strategy: Strategy
    strategy_reason: str
    reason: str
    estimated_cost: float
    estimated_latency: float
    estimated_success_rate: float
    outcome: BusinessOutcome
    confidence_score: float
    emergency_applied: bool
    recovery_override_applied: bool
    exclusions: tuple[Exclusion, ...]
    effective_budget_remaining: float | None
    failure_probability: float = 0.0
    # Time the strategy choice and scoring took (decide's ``clock``; 0 without one).
    optimization_seconds: float = 0.0
    # What the forecast did for a requirePredictiveAnalytics request (routing/forecast.py).
    forecast: ForecastUse | None = None
    # A recovery's redundancy plan for an idempotent operation (routing/redundancy.py).
    hedge: Hedge | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Every field by name, the explanation worked out: a copy or pickle holds values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Hedge:
    """A second request to the standby, sent when the first has not answered by ``delay_ms``.

    ``share`` is the part of requests expected to be that slow, the share of the standby's
    cost that ``estimated_cost`` counts.
    """

    node: ProviderNode
    delay_ms: float
    share: float


@dataclass(frozen=True, slots=True)
class ForecastUse:
    """The forecast a requirePredictiveAnalytics decision weighed, and what it did.

    ``effect`` is "changed" (the forecast moved the choice), "confirmed" (it was there and
    kept the choice) or "unavailable" (no node had enough observations for a forecast).
    """

    effect: str
    threshold: float
    probabilities: tuple[tuple[str, float], ...]  # (node id, predicted failure), eligible nodes
    without_forecast: str  # the node the strategy picks on the plain figures


@dataclass(frozen=True, slots=True)
class BudgetBound:
    """The budget that limits a decision: whose it is, its period and what is left of it.

    ``bound`` is "caller" (the request's remainingBudget, as tracked for its period),
    "server" (the service's budget) or "emergency" (an active emergency's cap).
    """

    bound: str
    period: BudgetPeriod | None
    remaining: float
    caller_remaining: float | None
    server_remaining: float | None


class EmergencyRequired(Exception):
    """Raised for a request that requires an emergency override when none is active."""

    def __init__(self, service: str) -> None:
        self.service = service
        super().__init__(
            f"requireEmergencyOverride: no emergency override is active for service {service!r}"
        )


# What a decision's explanation is worked out from: a function and its arguments (not a
# closure, so that a decision still pickles). It returns the four explained fields by name.
Explanation = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]
EXPLAINED_FIELDS = ("strategy_reason", "reason", "outcome", "exclusions")


class _Explained:
    """A RoutingDecision field that may be worked out on first read (`explained_later`).

    A data descriptor on the class: the dataclass's own __init__, __eq__, __repr__ and
    dataclasses.replace read and write the field through it, so they see the value either way.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        values = obj.__dict__
        try:
            return values[self.name]
        except KeyError:
            pass
        explanation: Explanation | None = values.get("_explanation")
        if explanation is not None:
            explain, arguments = explanation
            values.update(explain(*arguments))
            values.pop("_explanation", None)
        return values[self.name]

    def __set__(self, obj: object, value: Any) -> None:
        obj.__dict__[self.name] = value


for _name in EXPLAINED_FIELDS:
    setattr(RoutingDecision, _name, _Explained(_name))

_new_decision = object.__new__
_set_state = object.__setattr__


def explained_later(
    node: ProviderNode,
    health: NodeHealth,
    strategy: Strategy,
    estimated_cost: float,
    estimated_latency: float,
    estimated_success_rate: float,
    confidence_score: float,
    emergency_applied: bool,
    recovery_override_applied: bool,
    effective_budget_remaining: float | None,
    failure_probability: float,
    optimization_seconds: float,
    forecast: ForecastUse | None,
    hedge: Hedge | None,
    explanation: Explanation,
) -> RoutingDecision:
    """A decision whose explained fields come from ``explanation`` when first read.

    Skips the frozen dataclass's __init__ (a setattr per field) on the hot path.
    """
    decision: RoutingDecision = _new_decision(RoutingDecision)
    _set_state(
        decision,
        "__dict__",
        {
            "node": node,
            "health": health,
            "strategy": strategy,
            "estimated_cost": estimated_cost,
            "estimated_latency": estimated_latency,
            "estimated_success_rate": estimated_success_rate,
            "confidence_score": confidence_score,
            "emergency_applied": emergency_applied,
            "recovery_override_applied": recovery_override_applied,
            "effective_budget_remaining": effective_budget_remaining,
            "failure_probability": failure_probability,
            "optimization_seconds": optimization_seconds,
            "forecast": forecast,
            "hedge": hedge,
            "_explanation": explanation,
        },
    )
    return decision


class NoEligibleNode(Exception):
    """Raised when every node of a service is excluded; carries the reason for each."""

    def __init__(
        self, service: str, exclusions: tuple[Exclusion, ...], constraint: str | None = None
    ) -> None:
        self.service = service
        self.exclusions = exclusions
        self.constraint = constraint  # the hard constraint that left no node, if one did
        reasons = ", ".join(f"{e.node_id}: {e.reason.value}" for e in exclusions) or "no nodes"
        why = f"; {constraint} left no node" if constraint else ""
        super().__init__(f"no eligible node for service {service!r} ({reasons}){why}")
