"""Recovery-strategy choice for error reports, and the route a recovery plans to take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from statistics import median

from routing.eligibility import eligible_nodes
from routing.redundancy import HEDGE_FRACTION, idempotent
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

RESTORE_STAGES: tuple[float, ...] = (0.1, 0.5, 1.0)
STAGE_HOLD_SECONDS = 60
FAILOVER_MONITORING_SECONDS = 120
RETRY_MONITORING_SECONDS = 60
# Revenue at risk from which an error counts as business-critical.
HIGH_REVENUE_AT_RISK = 10_000.0
# A failed node counts as recovered only with at least this health score (and within its SLOs).
HEALTHY_MIN_SCORE = 70.0
# Retries a caller may spend on an error before they count as spent (a recovery plan of the
# catalog may set its own `maxRetries`).
DEFAULT_RETRY_BUDGET = 3

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


def raised(severity: Severity) -> Severity:
    """The next severity up (critical stays critical)."""
    return SEVERITY_ORDER[min(severity.rank + 1, len(SEVERITY_ORDER) - 1)]


def retries_spent(retry_attempts: int, budget: int = DEFAULT_RETRY_BUDGET) -> bool:
    """True when the caller has already retried as often as the budget allows."""
    return retry_attempts >= budget


def effective_severity(severity: Severity, retry_attempts: int, budget: int) -> Severity:
    """The severity a report is handled with: one step up once its retries are spent (the
    caller's retries did not fix it, so it is worse than the reporter's first judgement)."""
    return raised(severity) if retries_spent(retry_attempts, budget) else severity


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

    @property
    def follows_plan(self) -> bool:
        """True when a catalog recovery plan chose (rule `plan:<id>`)."""
        return self.rule.startswith(PLAN_RULE_PREFIX)


PLAN_RULE_PREFIX = "plan:"


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
    # "history": the median of the service's resolved recoveries under the same strategy;
    # "plan_timers": no such history yet, the plan's minimum monitoring window and stages.
    resolution_basis: str = "plan_timers"
    resolution_samples: int = 0


def timer_minutes(monitoring_seconds: float, stages: int, stage_hold_seconds: float) -> float:
    """Minutes a recovery takes at the least: its monitoring window, then each restore
    stage's hold."""
    return (monitoring_seconds + stages * stage_hold_seconds) / 60


def estimated_resolution(
    history_minutes: Sequence[float], timers_minutes: float
) -> tuple[float, str, int]:
    """Minutes to resolution: the median of the past resolved recoveries' durations when
    there are any, else the plan's timers; with the basis and the number of samples."""
    if history_minutes:
        return round(median(history_minutes), 2), "history", len(history_minutes)
    return timers_minutes, "plan_timers", 0


@dataclass(frozen=True, slots=True)
class RecoveryTemplate:
    """A recovery plan configured for a service in the catalog (`recoveryPlans`): the
    strategy and action it pins, and its own timers and retry budget where it sets them."""

    plan_id: str
    strategy: Strategy
    action: RecoveryAction
    restore_stages: tuple[float, ...] | None = None
    stage_hold_seconds: int | None = None
    monitoring_seconds: int | None = None
    max_retries: int | None = None

    @property
    def retry_budget(self) -> int:
        """The retries a caller may spend before they count as spent."""
        return DEFAULT_RETRY_BUDGET if self.max_retries is None else self.max_retries


class PlanStatus(StrEnum):
    """What became of the recovery plan a report named (`recoveryStrategyId`)."""

    none = "none"  # the report named no plan and the recovery has none
    applied = "applied"  # the named plan (or the recovery's pinned one) chose the route
    unknown = "unknown"  # the service's catalog has no plan of that id: the table chose
    pinned_elsewhere = "pinned_elsewhere"  # the recovery is pinned to another plan: kept
    retries_spent = "retries_spent"  # the plan retries, but the caller's retries are spent


@dataclass(frozen=True, slots=True)
class PlanResolution:
    """The plan a report is handled under, and what became of the id it named."""

    template: RecoveryTemplate | None
    status: PlanStatus
    requested: str | None


def resolve_plan(
    requested: str | None, pinned: str | None, plans: Mapping[str, RecoveryTemplate]
) -> PlanResolution:
    """The plan for a report naming ``requested`` in a recovery pinned to ``pinned``.

    The first report naming a plan of the service's catalog pins it for the rest of the
    recovery; a later report naming another id is recorded and answered `pinned_elsewhere`.
    An id the catalog does not know is answered `unknown` and the table chooses. A pinned
    plan the catalog has since dropped is `unknown` too.
    """
    if pinned is not None:
        template = plans.get(pinned)
        if template is None:
            return PlanResolution(None, PlanStatus.unknown, requested or pinned)
        if requested is not None and requested != pinned:
            return PlanResolution(template, PlanStatus.pinned_elsewhere, requested)
        return PlanResolution(template, PlanStatus.applied, pinned)
    if requested is None:
        return PlanResolution(None, PlanStatus.none, None)
    template = plans.get(requested)
    if template is None:
        return PlanResolution(None, PlanStatus.unknown, requested)
    return PlanResolution(template, PlanStatus.applied, requested)


def handled_severity(
    worst_so_far: Severity, reported: Severity, retry_attempts: int, budget: int
) -> Severity:
    """The severity a recovery handles a report with: the worst so far, and the report's own
    raised one step when the caller's retries are spent (they did not fix it)."""
    return worst_severity(worst_so_far, effective_severity(reported, retry_attempts, budget))


def choose_recovery(
    error_type: str,
    severity: Severity,
    revenue_at_risk: float,
    customer_impact: str,
    retries_spent: bool = False,
    template: RecoveryTemplate | None = None,
) -> RecoveryChoice:
    """The recovery strategy and action for an error report.

    A recovery plan pins its strategy and action (rule `plan:<id>`). Otherwise the first
    matching table row wins. Spent retries rule out `retry_with_backoff`, a plan's included:
    such an error fails over instead (rule `retries_spent`).
    """
    retry_plan = template is not None and template.action is RecoveryAction.retry_with_backoff
    if template is not None and not (retries_spent and retry_plan):
        return RecoveryChoice(
            template.strategy, template.action, PLAN_RULE_PREFIX + template.plan_id
        )
    choice = _table(error_type, severity, revenue_at_risk, customer_impact)
    if retries_spent and choice.action is RecoveryAction.retry_with_backoff:
        return RecoveryChoice(
            Strategy.AVAILABILITY_FOCUSED, RecoveryAction.failover_to_backup, "retries_spent"
        )
    return choice


def _table(
    error_type: str, severity: Severity, revenue_at_risk: float, customer_impact: str
) -> RecoveryChoice:
    """The recovery table; first matching row wins."""
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
    template: RecoveryTemplate | None = None,
    history_minutes: Sequence[float] = (),
    operation: str = "",
) -> RecoveryPlan:
    """The route a recovery applies for ``choice``; NoEligibleNode when none is left.

    ``template`` (the recovery's plan from the catalog) sets the timers it configures;
    ``history_minutes`` (how long the service's resolved recoveries under the same strategy
    took) gives the resolution estimate, the timers when it is empty. A redundancy plan's
    estimates count the hedge to its standby only for an ``operation`` the catalog marks
    idempotent, the only requests that carry one (routing/redundancy.py).
    """
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
    if standby is not None and idempotent(snapshot, service, operation):
        cost = round(cost + HEDGE_FRACTION * standby.cost_per_request, 6)
        # A hedged request may be answered by either node, so promise the slower one.
        latency = max(latency, node_figures(standby, snapshot.health)[2])

    stages = () if retry else RESTORE_STAGES
    monitoring = RETRY_MONITORING_SECONDS if retry else FAILOVER_MONITORING_SECONDS
    hold = STAGE_HOLD_SECONDS
    if template is not None:
        if template.restore_stages is not None and not retry:
            stages = template.restore_stages
        if template.monitoring_seconds is not None:
            monitoring = template.monitoring_seconds
        if template.stage_hold_seconds is not None:
            hold = template.stage_hold_seconds
    minutes, basis, samples = estimated_resolution(
        history_minutes, timer_minutes(monitoring, len(stages), hold)
    )
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
        stage_hold_seconds=hold,
        monitoring_seconds=monitoring,
        estimated_resolution_minutes=minutes,
        resolution_basis=basis,
        resolution_samples=samples,
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
