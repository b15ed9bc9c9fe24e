"""Recovery-strategy choice for error reports, and the route a recovery plans to take."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from routing.eligibility import eligible_nodes
from routing.strategies import node_figures, rank
from routing.types import (
    BreakerState,
    NoEligibleNode,
    ProviderNode,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
    Strategy,
)

# Share of requests duplicated to the standby for tail-latency hedging.
HEDGE_FRACTION = 0.10
RESTORE_STAGES: tuple[float, ...] = (0.1, 0.5, 1.0)
STAGE_HOLD_SECONDS = 60
FAILOVER_MONITORING_SECONDS = 120
RETRY_MONITORING_SECONDS = 60
# Revenue at risk from which an error counts as business-critical.
HIGH_REVENUE_AT_RISK = 10_000.0
# A failed node counts as recovered only with at least this health score (and within its SLOs).
HEALTHY_MIN_SCORE = 70.0

QUOTA_ERRORS = frozenset({"rate_limit_exceeded", "quota_exceeded"})
TRANSIENT_ERRORS = frozenset({"timeout", "connection_error", "transient_error", "network_error"})
PERFORMANCE_ERRORS = frozenset({"performance_degradation", "latency_spike"})
SEVERE_IMPACTS = frozenset({"severe", "critical"})


class Severity(StrEnum):
    """Severity of a reported error, least to most severe."""

    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        """0 for low up to 3 for critical."""
        return SEVERITY_ORDER.index(self)


SEVERITY_ORDER = tuple(Severity)


def worst_severity(current: Severity | None, new: Severity) -> Severity:
    """The more severe of two severities (`new` when there is none yet)."""
    if current is None or new.rank > current.rank:
        return new
    return current


class RecoveryAction(StrEnum):
    """What a recovery does to traffic."""

    failover_to_backup = "failover_to_backup"
    latency_failover = "latency_failover"
    cost_optimized_failover = "cost_optimized_failover"
    enable_multi_provider_redundancy = "enable_multi_provider_redundancy"
    retry_with_backoff = "retry_with_backoff"


MINOR_SEVERITIES = frozenset({Severity.low, Severity.medium})
MAJOR_SEVERITIES = frozenset({Severity.high, Severity.critical})


@dataclass(frozen=True, slots=True)
class RecoveryChoice:
    """The strategy and action chosen for an error, and the table rule that chose them."""

    strategy: Strategy
    action: RecoveryAction
    rule: str


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """The route, standby, timers and estimates a recovery will apply."""

    strategy: Strategy
    action: RecoveryAction
    rule: str
    selected: ProviderNode
    standby: ProviderNode | None
    excluded_nodes: frozenset[str]
    estimated_cost: float
    estimated_latency: float
    restore_stages: tuple[float, ...]
    stage_hold_seconds: int
    monitoring_seconds: int
    estimated_resolution_minutes: float


def choose_recovery(
    error_type: str, severity: Severity, revenue_at_risk: float, customer_impact: str
) -> RecoveryChoice:
    """The recovery strategy and action for an error report; first matching table row wins."""
    if error_type in QUOTA_ERRORS:
        # A quota is per provider account, so any other provider will do: take the cheapest.
        return RecoveryChoice(
            Strategy.COST_OPTIMIZED, RecoveryAction.cost_optimized_failover, "quota_exhausted"
        )
    if error_type in TRANSIENT_ERRORS and severity in MINOR_SEVERITIES:
        return RecoveryChoice(
            Strategy.HEALTH_BASED, RecoveryAction.retry_with_backoff, "transient_error"
        )
    if (
        error_type in PERFORMANCE_ERRORS
        and severity in MINOR_SEVERITIES
        and revenue_at_risk < HIGH_REVENUE_AT_RISK
    ):
        return RecoveryChoice(
            Strategy.LATENCY_OPTIMIZED, RecoveryAction.latency_failover, "minor_slowdown"
        )
    if severity in MAJOR_SEVERITIES and (
        error_type in PERFORMANCE_ERRORS
        or revenue_at_risk >= HIGH_REVENUE_AT_RISK
        or customer_impact in SEVERE_IMPACTS
    ):
        return RecoveryChoice(
            Strategy.AVAILABILITY_FOCUSED,
            RecoveryAction.enable_multi_provider_redundancy,
            "major_incident",
        )
    return RecoveryChoice(
        Strategy.AVAILABILITY_FOCUSED, RecoveryAction.failover_to_backup, "default_failover"
    )


def plan_recovery(
    choice: RecoveryChoice,
    service: str,
    failed_providers: frozenset[str],
    snapshot: RoutingSnapshot,
    now: datetime,
) -> RecoveryPlan:
    """The route a recovery applies for ``choice``; NoEligibleNode when none is left."""
    retry = choice.action is RecoveryAction.retry_with_backoff
    # A retry keeps the route and retries the same providers, so nothing is excluded.
    excluded = frozenset() if retry else failed_providers
    # The empty operation: the route is the service's as a whole, for every operation.
    request = RoutingRequest(service=service, operation="", failed_providers=excluded)
    # The service's current override is ignored: this recovery plans the route it will own.
    eligible, exclusions, _ = eligible_nodes(request, snapshot, now, apply_override=False)
    if not eligible:
        raise NoEligibleNode(service, exclusions)
    emergency = snapshot.emergencies.get(service)
    emergency_active = emergency is not None and emergency.active_at(now)
    ranked = rank(choice.strategy, eligible, snapshot, emergency_active)
    selected = ranked[0]
    redundancy = choice.action is RecoveryAction.enable_multi_provider_redundancy
    standby = ranked[1] if redundancy and len(ranked) > 1 else None

    cost = selected.cost_per_request
    latency = node_figures(selected, snapshot.health)[2]
    if standby is not None:
        cost = round(cost + HEDGE_FRACTION * standby.cost_per_request, 6)
        # A hedged request may be answered by either node, so promise the slower one.
        latency = max(latency, node_figures(standby, snapshot.health)[2])

    stages = () if retry else RESTORE_STAGES
    monitoring = RETRY_MONITORING_SECONDS if retry else FAILOVER_MONITORING_SECONDS
    service_ids = {n.node_id for n in snapshot.nodes[service]}
    return RecoveryPlan(
        strategy=choice.strategy,
        action=choice.action,
        rule=choice.rule,
        selected=selected,
        standby=standby,
        excluded_nodes=frozenset(excluded & service_ids),
        estimated_cost=cost,
        estimated_latency=latency,
        restore_stages=stages,
        stage_hold_seconds=STAGE_HOLD_SECONDS,
        monitoring_seconds=monitoring,
        estimated_resolution_minutes=(monitoring + len(stages) * STAGE_HOLD_SECONDS) / 60,
    )


def strands_service(
    service: str, failed_providers: frozenset[str], snapshot: RoutingSnapshot, now: datetime
) -> bool:
    """True when holding ``failed_providers`` out, on top of the service's current holds,
    would leave it no node to route to.

    The monitor then starts no recovery for them: several recoveries' holds add up, and a
    healthy backup that shows a few chance failures in its window would otherwise be held
    out too, turning a degraded provider into a full outage (found by the simulator,
    docs/SIMULATION.md). Error reports from callers are not guarded: they name real failures.
    """
    held = snapshot.overrides.get(service)
    excluded = failed_providers | (held.excluded_nodes if held is not None else frozenset())
    guard = RoutingOverride(service, "strand-guard", excluded)
    probe = replace(snapshot, overrides={**snapshot.overrides, service: guard})
    request = RoutingRequest(service=service, operation="")
    eligible, _, _ = eligible_nodes(request, probe, now)
    return not eligible


def recovery_problems(
    *,
    breaker_state: BreakerState,
    health_score: float,
    success_rate: float,
    latency_p95_ms: float,
    latency_slo_ms: float,
    error_rate_slo: float,
) -> list[str]:
    """Why a failed node is not back yet (empty: it is): its breaker is open, its health score
    is under HEALTHY_MIN_SCORE, or its success rate or p95 latency is outside its SLO."""
    problems = []
    if breaker_state is BreakerState.OPEN:
        problems.append("breaker open")
    if health_score < HEALTHY_MIN_SCORE:
        problems.append(f"health {health_score:g} < {HEALTHY_MIN_SCORE:g}")
    if success_rate < 100.0 - error_rate_slo:
        problems.append(f"success {success_rate:g}% below SLO")
    if latency_p95_ms > latency_slo_ms:
        problems.append(f"p95 {latency_p95_ms:g} ms above SLO")
    return problems
