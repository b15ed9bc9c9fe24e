"""The straightforward `routing.decide`, kept as the oracle of the equivalence test.

This is the decision as it was before snapshots were screened and explanations left for
later: every call filters every node, picks the strategy, scores the eligible nodes and
builds the whole result. It composes the same rules (routing/eligibility.py,
routing/selection.py, routing/strategies.py, routing/outcome.py), so a change to a rule
changes both; what test_routing_equivalence.py checks is that the fast composition gives the
same answer as this one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from routing.budget import server_remaining, tighter
from routing.eligibility import constrain_request, filter_nodes, override_for
from routing.forecast import forecast_use, screen, weighed
from routing.outcome import business_outcome, confidence_score
from routing.redundancy import affordable, hedged_cost, plan_hedge
from routing.selection import pick_strategy
from routing.strategies import Figures, choose_index, effective_health
from routing.types import (
    EmergencyRequired,
    Exclusion,
    ExclusionReason,
    NoEligibleNode,
    ProviderNode,
    RoutingDecision,
    RoutingOverride,
    RoutingRequest,
    RoutingSnapshot,
)


def reference_decide(
    request: RoutingRequest,
    snapshot: RoutingSnapshot,
    now: datetime,
    *,
    rate_limited_eligible: bool = False,
    hold_yields: bool = True,
    clock: Callable[[], float] | None = None,
) -> RoutingDecision:
    """`routing.decide`, computed the straightforward way."""
    service = request.service
    constrained = constrain_request(request, snapshot)
    nodes = constrained.nodes
    if not nodes:
        raise NoEligibleNode(service, constrained.exclusions, constrained.emptied_by)
    health = snapshot.health
    emergency = snapshot.emergencies.get(service)
    emergency_active = emergency is not None and emergency.active_at(now)
    if request.require_emergency_override and not emergency_active:
        raise EmergencyRequired(service)
    budget = snapshot.budgets.get(service)
    remaining = tighter(
        request.remaining_budget, server_remaining(budget, emergency, emergency_active)
    )
    override = override_for(request, snapshot)

    def filtered(
        override: RoutingOverride | None, shares_apply: bool = True
    ) -> tuple[list[ProviderNode], list[Figures], list[Exclusion]]:
        return filter_nodes(
            request,
            nodes,
            health,
            override,
            emergency_active,
            remaining,
            rate_limited_eligible=rate_limited_eligible,
            shares_apply=shares_apply,
        )

    eligible, figures, exclusions = filtered(override)
    if not eligible and override is not None and hold_yields:
        held = exclusions
        override = None
        eligible, figures, exclusions = filtered(None)
        if not eligible:
            exclusions = held
    if not eligible and any(e.reason is ExclusionReason.RATE_LIMIT_SHARE for e in exclusions):
        shared = exclusions
        eligible, figures, exclusions = filtered(override, shares_apply=False)
        if not eligible:
            exclusions = shared
    if not eligible:
        raise NoEligibleNode(service, constrained.exclusions + tuple(exclusions))

    started = clock() if clock is not None else 0.0
    strategy, strategy_reason = pick_strategy(
        request,
        nodes,
        budget,
        emergency_active,
        override.strategy if override is not None else None,
    )
    weighted = service in snapshot.weighted
    node = eligible[choose_index(strategy, eligible, figures, emergency_active, request, weighted)]
    forecast = None
    if request.require_predictive_analytics:
        plain = node
        kept, kept_figures, screened = screen(eligible, figures)
        seen, seen_figures = weighed(kept, kept_figures)
        index = choose_index(strategy, seen, seen_figures, emergency_active, request, weighted)
        node = kept[index]
        forecast = forecast_use(node, plain, eligible, figures, health)
        exclusions = exclusions + screened
    optimization_seconds = clock() - started if clock is not None else 0.0
    live = effective_health(node, health)
    hedge = None
    if override is not None and override.standby is not None:
        ids = tuple(n.node_id for n in eligible)
        hedge = plan_hedge(request, snapshot, override, node, live, ids)
        hedge = affordable(hedge, node.cost_per_request, request, remaining)
    return RoutingDecision(
        node=node,
        health=live,
        strategy=strategy,
        strategy_reason=str(strategy_reason),
        reason=(
            f"Selected {node.provider_name} using {strategy} strategy, "
            f"health score: {live.health_score:g}"
        ),
        estimated_cost=node.cost_per_request
        if hedge is None
        else hedged_cost(node.cost_per_request, hedge),
        estimated_latency=live.latency_ms,
        estimated_success_rate=live.success_rate,
        outcome=business_outcome(request, node, live, nodes),
        confidence_score=confidence_score(live.health_score, live.failure_probability),
        emergency_applied=emergency_active,
        recovery_override_applied=override is not None,
        exclusions=constrained.exclusions + tuple(exclusions),
        effective_budget_remaining=remaining,
        failure_probability=live.failure_probability,
        optimization_seconds=optimization_seconds,
        forecast=forecast,
        hedge=hedge,
    )
